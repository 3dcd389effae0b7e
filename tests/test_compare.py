"""compare_certificates: one result shape, the bracket [best sound radius, attack distance], errors up front."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import small_data, small_model

from crc_core.certify import certify
from crc_core.compare import (
    DEFAULT_METHODS,
    METHODS,
    RELU_METHOD,
    applicable_methods,
    compare_certificates,
    default_methods,
    refusal,
)
from crc_core.errors import CRCError, UnsupportedActivationError
from crc_core.models import MLP

FAST_SMOOTHING = {"n0": 20, "n": 200, "alpha": 0.01, "sigma": 0.25}


def _data(n: int = 8):
    x, y = small_data("test", 200)
    return x[:n], y[:n]


def test_every_method_one_shape_and_the_bracket_holds():
    model = small_model(2, "softplus", trained=True)
    x, y = _data()
    res = compare_certificates(model, x, y, smoothing_options=FAST_SMOOTHING)
    assert tuple(res.methods) == DEFAULT_METHODS
    deterministic = ("crc", "crown", "lipschitz")
    B = x.shape[0]
    for name, m in res.methods.items():
        assert m.radius.shape == (B,) and m.radius.dtype == torch.float64 and m.seconds >= 0
        assert (m.radius[~res.correct] == 0).all()
        assert m.deterministic == (name in deterministic) == METHODS[name].deterministic
    assert "smoothed classifier" in res.methods["smoothing"].guarantee
    assert not res.violation.any()
    ok = res.correct
    assert (res.best_sound[ok] <= res.attack_upper[ok]).all()
    assert torch.isfinite(res.attack_upper[ok]).all()
    assert torch.equal(res.best_sound, torch.stack([res.radius(m) for m in deterministic]).max(0).values)
    # CRC's column is certify()'s radius
    assert torch.allclose(res.radius("crc"), certify(model, x, y).radius.double())
    df = res.to_frame()
    assert len(df) == B
    for col in ("radius_crc", "radius_crown", "radius_lipschitz", "radius_smoothing", "time_crown",
                "crc_exact", "smoothing_abstain", "attack_upper", "best_sound"):
        assert col in df.columns
    assert res.mean_certificate("crc") == pytest.approx(float(res.radius("crc")[ok].mean()))
    assert 0 <= res.certified_accuracy("crown", 0.1) <= ok.double().mean()


def test_all_targets_never_exceed_the_runner_up():
    model = small_model(3, "sigmoid", trained=True)
    x, y = _data(6)
    a = compare_certificates(model, x, y, methods=("crown", "lipschitz"), attack=False)
    r = compare_certificates(model, x, y, methods=("crown", "lipschitz"), targets="runner-up", attack=False)
    for name in ("crown", "lipschitz"):
        assert (a.radius(name) <= r.radius(name) + 1e-12).all()
    assert torch.isinf(a.attack_upper[a.correct]).all()  # no attack asked
    # runner-up radii are bracketed by a targeted attack (an untargeted flip to a third class may come closer)
    r = compare_certificates(model, x, y, methods=("crc", "crown"), targets="runner-up")
    assert not r.violation.any()
    assert torch.isfinite(r.attack_upper[r.correct]).all()


def test_relu_models_run_the_methods_that_apply_and_refuse_crc_before_any_work():
    model = small_model(2, "relu", trained=True)
    x, y = _data(6)
    res = compare_certificates(model, x, y, methods=("crown", "lipschitz", "smoothing"),
                               smoothing_options=FAST_SMOOTHING)
    assert (res.radius("crown")[res.correct] > 0).all()
    assert not res.violation.any()
    with pytest.raises(UnsupportedActivationError, match="ReLU"):
        compare_certificates(model, x, y)


def test_bad_input_is_refused_up_front():
    model = small_model(2, "tanh", trained=False)
    x, y = _data(2)
    with pytest.raises(CRCError, match="Unknown method"):
        compare_certificates(model, x, y, methods=("crc", "ibp"))
    with pytest.raises(CRCError, match="at least one"):
        compare_certificates(model, x, y, methods=())
    with pytest.raises(CRCError, match="target mode"):
        compare_certificates(model, x, y, targets="least")
    with pytest.raises(CRCError, match="σ"):
        compare_certificates(model, x, y, smoothing_options={"sigma": 0})
    with pytest.raises(CRCError, match="at least"):
        compare_certificates(model, x, y, smoothing_options={"n0": 100, "n": 10})
    with pytest.raises(CRCError, match="α"):
        compare_certificates(model, x, y, smoothing_options={"alpha": 1.0})
    with pytest.raises(CRCError, match="label"):
        compare_certificates(model, x, torch.tensor([0, 11]))
    with pytest.raises(CRCError, match="gelu"):
        compare_certificates(MLP(100, [4], 10, "gelu"), x, y, methods=("crown",))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_follows_the_models_device_and_agrees_with_the_cpu():
    model = small_model(3, "tanh", trained=True)
    x, y = _data(6)
    cpu = compare_certificates(model, x, y, methods=("crc", "crown", "lipschitz"), attack=False)
    model.to("cuda")  # the cached model is shared: moved back below
    try:
        gpu = compare_certificates(model, x, y, methods=DEFAULT_METHODS, smoothing_options=FAST_SMOOTHING)
    finally:
        model.to("cpu")
    for name in ("crown", "lipschitz"):
        assert torch.allclose(cpu.radius(name), gpu.radius(name), rtol=1e-6)
    assert torch.allclose(cpu.radius("crc"), gpu.radius("crc"), rtol=1e-3)
    assert not gpu.violation.any()


def test_two_layer_relu_gets_the_app_g_certificate_and_crc_is_refused_with_the_reason():
    model = small_model(2, "relu", trained=True)
    x, y = _data(4)
    assert default_methods(model) == (RELU_METHOD,) and default_methods(small_model(2, "tanh", False)) == ("crc",)
    assert "App. G" in refusal(model, "crc") or RELU_METHOD in refusal(model, "crc")
    res = compare_certificates(model, x, y, methods=("crc", RELU_METHOD, "crown"), skip_unsupported=True)
    assert tuple(res.methods) == (RELU_METHOD, "crown") and "ReLU" in res.refused["crc"]
    assert res.methods[RELU_METHOD].deterministic and METHODS[RELU_METHOD].deterministic
    assert not res.violation.any() and (res.best_sound <= res.attack_upper).all()
    assert "radius_relu-quadratic" in res.to_frame().columns
    with pytest.raises(CRCError, match="smooth activation"):
        compare_certificates(model, x, y, methods=("crc", "crown"))


def test_deeper_relu_refuses_crc_and_app_g_but_runs_the_rest():
    model = small_model(3, "relu", trained=True)
    x, y = _data(3)
    assert refusal(model, RELU_METHOD) is not None and "crown" in refusal(model, "crc")
    assert applicable_methods(model) == ("crown", "lipschitz", "smoothing")
    res = compare_certificates(model, x, y, methods=("crc", RELU_METHOD, "lipschitz"), skip_unsupported=True,
                               attack=False)
    assert tuple(res.methods) == ("lipschitz",) and set(res.refused) == {"crc", RELU_METHOD}
    with pytest.raises(CRCError, match="No chosen method"):
        compare_certificates(model, x, y, methods=("crc",), skip_unsupported=True)
    with pytest.raises(CRCError, match="2-layer"):
        compare_certificates(model, x, y, methods=(RELU_METHOD,))


def test_time_each_image_times_every_image_alone_and_keeps_the_certificates():
    """time_each_image: one timing per image (named per image in the frame), the same certificates as one batched
    call (a float64 model: the kernels' rounding is ~1e-16, so any change of the algorithm would show)."""
    x, y = _data(5)
    # deepcopy: small_model is cached and .double() converts in place (later tests need the float32 one)
    for model, methods in ((copy.deepcopy(small_model(2, "softplus", trained=True)).double(),
                            ("crc", "crown", "lipschitz", "smoothing")),
                           (copy.deepcopy(small_model(2, "relu", trained=True)).double(), (RELU_METHOD,))):
        kw = {"methods": methods, "smoothing_options": FAST_SMOOTHING, "attack": False}
        batched = compare_certificates(model, x, y, **kw)
        alone = compare_certificates(model, x, y, time_each_image=True, **kw)
        assert alone.timed_each_image and not batched.timed_each_image
        for m in methods:
            secs = alone.methods[m].image_seconds
            assert secs is not None and secs.shape == (5,) and (secs > 0).all()
            assert alone.methods[m].seconds == pytest.approx(float(secs.sum()))
            assert alone.to_frame()[f"time_{m}"].tolist() == secs.tolist()  # row i: image i's own time
            assert batched.methods[m].image_seconds is None
            assert batched.to_frame()[f"time_{m}"].nunique() == 1  # batched: the batch's mean on every row
            assert alone.methods[m].flags.keys() == batched.methods[m].flags.keys()
            if m != "smoothing":
                torch.testing.assert_close(alone.radius(m), batched.radius(m), rtol=1e-12, atol=1e-14)
        if "crc" in methods:
            assert torch.equal(alone.methods["crc"].flags["exact"], batched.methods["crc"].flags["exact"])
            # smoothing draws its own noise per call: image 2 timed alone is image 2 certified by itself
            one = compare_certificates(model, x[2:3], y[2:3], methods=("smoothing",),
                                       smoothing_options=FAST_SMOOTHING, attack=False)
            assert alone.radius("smoothing")[2] == one.radius("smoothing")[0]
        else:
            assert torch.equal(alone.methods[RELU_METHOD].flags["target"], batched.methods[RELU_METHOD].flags["target"])
