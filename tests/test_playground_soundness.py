"""In two dimensions the truth is computable: every deterministic certificate (CRC, App. G, CROWN, first-order)
is checked against the true distance to the decision boundary found by dense polar search
(:func:`crc_core.plane.true_distance`), on toy models of every activation, depth 2-3, standard and CRT."""

from __future__ import annotations

import math

import pytest
import torch

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.compare import RELU_METHOD, compare_certificates
from crc_core.data import load_dataset
from crc_core.hessian import as_dtype
from crc_core.models import MLP
from crc_core.plane import curvature_grid, linear_pieces, plane_grid, true_distance
from crc_core.train import TrainConfig, train

MODELS = [  # (dataset, widths, activation, kind)
    ("moons", (16,), "softplus", "standard"),
    ("circles", (16, 16), "sigmoid", "standard"),
    ("moons", (24,), "tanh", "crt"),
    ("xor", (16, 16), "tanh", "standard"),
    ("blobs", (16, 16), "softplus", "crt"),
    ("spirals", (24,), "relu", "standard"),
    ("blobs", (16, 16), "relu", "standard"),
]
ROUNDOFF = 1e-9  # relative: the search's points are evaluated in float64, like the certificates' guarantee
ANGLES, RADII = 360, 60


def _train(dataset: str, widths: tuple[int, ...], act: str, kind: str) -> tuple[MLP, torch.Tensor]:
    cfg = TrainConfig(dataset=dataset, widths=widths, activation=act, kind=kind, epochs=12, lr=0.02, batch_size=100,
                      gamma=0.02, crt_eps=0.3, attack_outer=4, attack_inner=3, eval_samples=0, device="cpu",
                      seed=1, log_every=50)
    data = (load_dataset(dataset, "train", size=200), load_dataset(dataset, "test", size=60))
    model = train(cfg, data=data).model
    g = torch.Generator().manual_seed(7)
    lo, hi = data[1].images.min(0).values, data[1].images.max(0).values
    random = lo + (hi - lo) * torch.rand(8, 2, generator=g)
    return model, torch.cat([data[1].images[:16], random])


@pytest.fixture(scope="module")
def models() -> list[tuple[str, MLP, torch.Tensor]]:
    with torch.random.fork_rng():
        return [(f"{d}-{act}-{len(w) + 1}-{k}", *_train(d, w, act, k)) for d, w, act, k in MODELS]


def _methods(model: MLP) -> list[str]:
    if model.activation_name != "relu":
        return ["crc", "crown", "lipschitz"]
    return [RELU_METHOD, "crown", "lipschitz"] if model.depth == 2 else ["crown", "lipschitz"]


def test_no_other_class_inside_any_certified_disc(models) -> None:
    checked, ratios = 0, []
    for name, model, pts in models:
        truth = true_distance(model, pts, r_max=6.0, n_angles=ANGLES, n_radii=RADII)
        found = ~torch.isnan(truth.point[:, 0])
        with torch.no_grad():  # the search's points really are another class's
            m64 = as_dtype(model)
            assert (m64(truth.point[found]).argmax(1) != m64(pts.double()[found]).argmax(1)).all(), name
        res = compare_certificates(model, pts, methods=_methods(model), attack=False)
        for method, out in res.methods.items():
            r, d = out.radius, truth.distance
            bad = r > d * (1 + ROUNDOFF)
            assert not bad.any(), (f"{name} {method}: radius {r[bad].tolist()} > true distance "
                                   f"{d[bad].tolist()} at {pts[bad].tolist()}")
            checked += int(torch.isfinite(d).sum())
            if method in ("crc", RELU_METHOD):
                ok = torch.isfinite(d) & (d > 0)
                ratios.append(float((r[ok] / d[ok]).mean()))
    assert checked > 200
    assert min(ratios) > 0.3, ratios  # not vacuous: the certificates are close to the truth


def test_exact_crc_equals_the_true_distance(models) -> None:
    """Where CRC proves its boundary point closest (primal = dual), its radius is the true distance (to the
    search's resolution), and x_boundary is on the boundary."""
    n_exact = 0
    for name, model, pts in models:
        if model.activation_name == "relu":
            continue
        cert = certify(model, pts)
        truth = true_distance(model, pts, r_max=6.0, n_angles=ANGLES, n_radii=RADII)
        exact = cert.exact & torch.isfinite(truth.distance)
        n_exact += int(exact.sum())
        rel = (truth.distance[exact] - cert.radius[exact].double()) / truth.distance[exact]
        assert (rel >= -ROUNDOFF).all() and (rel < 1e-2).all(), (name, rel.tolist())
    assert n_exact >= 10


def test_true_distance_agrees_with_a_cartesian_grid(models) -> None:
    """The polar search against the plainest brute force: the closest other-class point of a fine square grid."""
    _, model, pts = models[0]
    x0 = pts[:4].double()
    grid = plane_grid(model, (-3.0, -3.0), (3.0, 3.0), 601)
    h = 6.0 / 600
    truth = true_distance(model, x0, r_max=6.0)
    with torch.no_grad():
        pred = as_dtype(model)(x0).argmax(1)
    P, C = grid.points, grid.classes.reshape(-1)
    for i in range(x0.shape[0]):
        other = P[pred[i] != C]
        g = float((other - x0[i]).norm(dim=1).min())
        assert abs(g - float(truth.distance[i])) <= h, (g, float(truth.distance[i]))


def test_measured_curvature_never_exceeds_k_ub(models) -> None:
    for name, model, _ in models:
        if model.activation_name == "relu":
            assert linear_pieces(model, plane_grid(model, (-2, -2), (2, 2), 41)).max() > 0
            continue
        grid = plane_grid(model, (-3, -3), (3, 3), 41)
        K = float(curvature_bounds(model, torch.tensor([0]), torch.tensor([1])).K[0])
        measured = float(curvature_grid(model, grid, 0, 1).max())
        assert 0 < measured <= K * (1 + ROUNDOFF), (name, measured, K)


def test_true_distance_is_infinite_without_another_class() -> None:
    torch.manual_seed(0)
    model = MLP(2, [4], 2, "tanh")
    with torch.no_grad():
        model.layers[-1].weight.zero_()
        model.layers[-1].bias.copy_(torch.tensor([1.0, 0.0]))  # class 0 everywhere
    res = true_distance(model, torch.zeros(1, 2), r_max=2.0, n_angles=16, n_radii=4)
    assert math.isinf(float(res.distance[0])) and torch.isnan(res.point).all()
