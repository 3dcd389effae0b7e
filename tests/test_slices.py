"""2-D decision-region slices (crc_core.slices): the grid, the certified disc, x_b on the zero contour, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint
from crc_core.data import load_dataset
from crc_core.errors import CRCError
from crc_core.slices import (
    SECOND_DIRECTIONS,
    DecisionSlice,
    decision_slice,
    plane_basis,
    second_direction,
    slice_from_certificate,
)

MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "crt-2x256.pt"
N_IMAGES = 6
GRID = 121  # odd: x0 is the centre point and the row b = 0 runs through x_b


@pytest.fixture(scope="module")
def setup():
    model, _ = load_checkpoint(MODEL)
    ds = load_dataset("embedded", "test", limit=N_IMAGES)
    cert = certify(model, ds.images, ds.labels)
    return model, ds.images, cert


def _other_target(cert, i: int) -> int | None:
    """The target other than the certificate's own whose boundary point is the closest one found (None: the
    certifier found none, as for targets that provably cannot be the image's minimum)."""
    row = cert.target_by_row[i].tolist()
    up = cert.upper_by_row[i].clone()
    up[row.index(int(cert.target[i]))] = float("inf")
    return row[int(up.argmin())] if bool(torch.isfinite(up).any()) else None


def _other_class_inside(s: DecisionSlice, radius: float) -> int:
    return int((s.classes[s.inside(radius)] != s.y).sum())


def test_grid_shape_axes_and_positions(setup):
    model, x, cert = setup
    s = slice_from_certificate(model, x[0], cert, index=0, second="random", grid=GRID)
    assert s.classes.shape == s.margin.shape == (GRID, GRID)
    assert s.a.shape == s.b.shape == (GRID,)
    assert s.classes.dtype == torch.int64 and s.margin.dtype == torch.float64
    assert s.a[GRID // 2] == 0 and s.b[GRID // 2] == 0  # x0 is a grid point
    assert s.x0_ab == (0.0, 0.0)
    d = float((cert.x_boundary[0].double() - x[0].double()).norm())
    assert s.xb_ab[0] == pytest.approx(d) and s.xb_ab[1] == 0.0
    assert s.radius == pytest.approx(float(cert.radius[0])) and s.rho is None
    assert float(s.u @ s.v) == pytest.approx(0.0, abs=1e-12)
    assert float(s.u.norm()) == pytest.approx(1.0) and float(s.v.norm()) == pytest.approx(1.0)
    assert int(s.classes[GRID // 2, GRID // 2]) == int(cert.pred[0]) == s.y
    assert float(s.margin[GRID // 2, GRID // 2]) > 0


def test_grid_matches_a_direct_forward_pass(setup):
    """The first-layer shortcut agrees with the model run on the actual points x0 + a·u + b·v."""
    model, x, cert = setup
    s = slice_from_certificate(model, x[1], cert, index=1, second="random", grid=41, seed=3)
    ii, jj = torch.meshgrid(torch.arange(0, 41, 5), torch.arange(0, 41, 5), indexing="ij")
    pts = x[1].double() + s.a[jj.reshape(-1), None] * s.u + s.b[ii.reshape(-1), None] * s.v
    m64 = load_checkpoint(MODEL)[0].double()
    with torch.no_grad():
        z = m64(pts)
    assert torch.equal(z.argmax(1), s.classes[ii.reshape(-1), jj.reshape(-1)])
    others = z.clone()
    others[:, s.y] = float("-inf")
    torch.testing.assert_close(z[:, s.y] - others.amax(1), s.margin[ii.reshape(-1), jj.reshape(-1)],
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("second", ["hessian-top", "hessian-bottom", "random", "pgd", "target"])
def test_certified_disc_holds_no_other_class(setup, second):
    """In every slice through x0, the grid points closer than r are all of the predicted class."""
    model, x, cert = setup
    checked = 0
    for i in range(N_IMAGES):
        if not bool(cert.correct[i]):
            continue
        other = _other_target(cert, i)
        if second == "target" and other is None:
            continue
        s = slice_from_certificate(model, x[i], cert, index=i, second=second, rho=0.5, other_target=other,
                                   grid=GRID)
        assert s.inside(s.radius).sum() > 100  # the disc is well sampled
        assert _other_class_inside(s, s.radius) == 0
        assert (s.margin[s.inside(s.radius)] > 0).all()
        checked += 1
    assert checked >= (3 if second == "target" else 4)


def test_an_inflated_radius_is_caught(setup):
    """The check above can fail: a disc 10% larger than the distance to x_b holds another class (u points at it)."""
    model, x, cert = setup
    i = int(torch.nonzero(cert.exact)[0])
    s = slice_from_certificate(model, x[i], cert, index=i, second="random", grid=GRID)
    assert _other_class_inside(s, 1.1 * s.xb_ab[0]) > 0


def test_x_b_lies_on_the_zero_contour(setup):
    """For exact certificates the margin along the ray x0 -> x_b changes sign within one grid step of x_b."""
    model, x, cert = setup
    exact = torch.nonzero(cert.exact)[:, 0].tolist()
    assert len(exact) >= 3
    for i in exact:
        s = slice_from_certificate(model, x[i], cert, index=i, second="random", grid=GRID)
        row = s.margin[GRID // 2]  # b = 0: the line through x0 and x_b
        step = float(s.a[1] - s.a[0])
        ahead = s.a >= 0
        first_neg = float(s.a[ahead][row[ahead] <= 0][0])
        assert s.xb_ab[0] - 1e-9 <= first_neg <= s.xb_ab[0] + step
        m64 = load_checkpoint(MODEL)[0].double()
        with torch.no_grad():
            z = m64(cert.x_boundary[i].double()[None])[0]
        others = z.clone()
        others[s.y] = float("-inf")
        assert abs(float(z[s.y] - others.max())) < 1e-4  # margin at x_b itself: zero up to the certifier's tolerance
        assert s.xb_margin == pytest.approx(float(z[s.y] - others.max()), abs=1e-9)


def test_degenerate_directions_are_refused(setup):
    _, x, cert = setup
    x0, xb = x[0], cert.x_boundary[0]
    e = (xb - x0).double()
    with pytest.raises(CRCError, match="parallel"):
        plane_basis(x0, xb, 3.0 * e)
    with pytest.raises(CRCError, match="parallel"):
        plane_basis(x0, xb, -e + 1e-9 * torch.randn(e.shape, generator=torch.Generator().manual_seed(0),
                                                    dtype=torch.float64))
    with pytest.raises(CRCError, match="zero"):
        plane_basis(x0, xb, torch.zeros_like(e))
    with pytest.raises(CRCError, match="coincides"):
        plane_basis(x0, x0.clone(), e)
    u, v = plane_basis(x0, xb, e + 0.01 * e.norm() * torch.eye(e.numel(), dtype=torch.float64)[5])
    assert abs(float(u @ v)) < 1e-12  # nearly parallel but above the threshold: still orthonormal


def test_bad_input_is_refused(setup):
    model, x, cert = setup
    x0, xb, d = x[0], cert.x_boundary[0], torch.randn(784, dtype=torch.float64)
    bad = x0.clone()
    bad[3] = float("nan")
    with pytest.raises(CRCError, match="NaN"):
        decision_slice(model, bad, xb, d, radius=1.0)
    for grid in (2, 1002, True, 10.5):
        with pytest.raises(CRCError, match="grid"):
            decision_slice(model, x0, xb, d, radius=1.0, grid=grid)
    for r in (-1.0, float("nan"), float("inf"), "abc"):
        with pytest.raises(CRCError, match="radius"):
            decision_slice(model, x0, xb, d, radius=r)
    with pytest.raises(CRCError, match="same length"):
        decision_slice(model, x0, xb, d[:100], radius=1.0)
    with pytest.raises(CRCError, match="expects"):
        decision_slice(model, x0[:100], xb[:100], d[:100], radius=1.0)
    with pytest.raises(CRCError, match="one flat image"):
        decision_slice(model, x0.reshape(28, 28), xb, d, radius=1.0)
    with pytest.raises(CRCError, match="Unknown slice direction"):
        second_direction(model, x0, "sideways", y=0)
    with pytest.raises(CRCError, match="target class"):
        second_direction(model, x0, "hessian-top", y=int(cert.pred[0]))
    with pytest.raises(CRCError, match="budget"):
        second_direction(model, x0, "pgd", y=int(cert.pred[0]))
    with pytest.raises(CRCError, match="boundary point"):
        second_direction(model, x0, "target", y=int(cert.pred[0]))
    with pytest.raises(CRCError, match="not image 0"):
        slice_from_certificate(model, x[1], cert, index=0)
    with pytest.raises(CRCError, match="out of range"):
        slice_from_certificate(model, x0, cert, index=N_IMAGES)
    with pytest.raises(CRCError, match="another certified target"):
        slice_from_certificate(model, x0, cert, index=0, second="target", other_target=int(cert.target[0]))
    other = next(c for c in cert.target_by_row[0].tolist() if c != int(cert.target[0]))  # made boundary-less:
    upper = cert.upper_by_row.clone()
    upper[0, cert.target_by_row[0].tolist().index(other)] = float("inf")
    with pytest.raises(CRCError, match="no boundary point"):
        slice_from_certificate(model, x0, dataclasses.replace(cert, upper_by_row=upper), index=0, second="target",
                               other_target=other)
    with pytest.raises(CRCError, match="coincides"):
        second_direction(model, x0, "target", y=int(cert.pred[0]), other_boundary=x0.clone())
    assert set(SECOND_DIRECTIONS) == {"hessian-top", "hessian-bottom", "pgd", "target", "random"}


def test_misclassified_image_has_no_slice(setup):
    model, x, _ = setup
    pred = int(model(x[:1]).argmax())
    wrong = certify(model, x[:1], torch.tensor([(pred + 1) % 10]))
    with pytest.raises(CRCError, match="misclassified"):
        slice_from_certificate(model, x[0], wrong, index=0)
