"""crc_core.train: one loop for standard / γ / CRT, callbacks, clean stop, seeds, validation (tiny and fast)."""

from __future__ import annotations

import functools
import importlib

import pytest
import torch

import crc_core.training_kinds as kinds_mod
from crc_core.bounds import curvature_bounds
from crc_core.data import Dataset, load_dataset
from crc_core.errors import CRCError
from crc_core.metrics import epoch_metrics
from crc_core.models import MLP
from crc_core.targets import runner_up
from crc_core.train import TrainConfig, TrainResult, train
from crc_core.train_config import parse_widths

train_mod = importlib.import_module("crc_core.train")  # the module (crc_core.train is the function)

STEP_KEYS = {"kind", "step", "epoch", "epoch_step", "steps_per_epoch", "total_steps", "seconds", "loss", "ce",
             "mean_K", "accuracy"}
EPOCH_KEYS = {"kind", "epoch", "step", "seconds", "train_loss", "train_accuracy", "test_accuracy",
              "certified_accuracy", "certified_accuracy_all", "mean_K_ub", "eval_rho", "eval_samples"}


@functools.cache
def tiny_data(n_train: int = 256, n_test: int = 64) -> tuple[Dataset, Dataset]:
    return load_dataset("embedded", "train", limit=n_train), load_dataset("embedded", "test", limit=n_test)


def tiny(**kw) -> TrainConfig:
    base = dict(widths=(16,), epochs=1, batch_size=64, eval_samples=4, log_every=2, device="cpu",
                attack_outer=3, attack_inner=3, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def weights(model: MLP) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["standard", "gamma", "crt"])
def test_all_kinds_run_and_emit_events(kind: str) -> None:
    events: list[dict] = []
    res = train(tiny(kind=kind), callback=events.append, data=tiny_data())
    assert isinstance(res, TrainResult) and not res.stopped
    assert res.history == events
    steps = [e for e in events if e["kind"] == "step"]
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert [e["kind"] for e in events][-1] == "done"
    assert steps and all(e.keys() >= STEP_KEYS for e in steps)
    assert ("attack_accuracy" in steps[0]) == (kind == "crt")
    assert len(epochs) == 1 and epochs[0].keys() >= EPOCH_KEYS
    assert res.steps == 4 and steps[-1]["step"] == 4 and steps[-1]["total_steps"] == 4
    for e in steps:
        assert all(torch.isfinite(torch.tensor(e[k])) for k in ("loss", "ce", "mean_K", "accuracy"))
    m = res.metrics
    assert 0 <= m["test_accuracy"] <= 1 and m["eval_samples"] == 4 and m["mean_K_ub"] > 0
    assert 0 <= m["certified_accuracy_all"] <= m["certified_accuracy"] <= 1  # all-class radius ≤ runner-up radius
    if kind == "standard":
        assert all(abs(e["loss"] - e["ce"]) < 1e-6 for e in steps)
    else:
        assert all(e["loss"] > e["ce"] for e in steps)  # + γ K
    assert not res.model.training


def test_should_stop_between_steps_returns_usable_model() -> None:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2  # allow exactly two steps

    res = train(tiny(kind="crt", epochs=3), should_stop=should_stop, data=tiny_data())
    assert res.stopped and res.steps == 2
    assert res.metrics == {}  # stopped before the first epoch's evaluation
    assert res.history[-1] == {**res.history[-1], "kind": "done", "stopped": True, "step": 2}
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    out = epoch_metrics(res.model, tiny_data()[1], eval_samples=2)
    assert 0 <= out["test_accuracy"] <= 1


def test_seed_gives_identical_weights_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = train(tiny(kind="crt", eval_samples=0), data=tiny_data())
    after = torch.rand(3)
    b = train(tiny(kind="crt", eval_samples=0), data=tiny_data())
    c = train(tiny(kind="crt", eval_samples=0, seed=1), data=tiny_data())
    assert torch.equal(before, after)  # the caller's random stream is untouched
    assert all(torch.equal(p, q) for p, q in zip(weights(a.model), weights(b.model)))
    assert not all(torch.equal(p, q) for p, q in zip(weights(a.model), weights(c.model)))


def test_gamma_regularization_reduces_curvature() -> None:
    data = tiny_data(512, 64)
    kw = dict(widths=(32,), epochs=8, batch_size=64, eval_samples=0, lr=3e-3)
    std = train(tiny(kind="standard", **kw), data=data).model
    reg = train(tiny(kind="gamma", gamma=1.0, **kw), data=data).model
    k_std = float(curvature_bounds(std).K.mean())
    k_reg = float(curvature_bounds(reg).K.mean())
    assert k_reg < 0.5 * k_std, (k_reg, k_std)


def test_crt_trains_on_attacked_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real_attack = kinds_mod.curvature_attack
    real_forward = MLP.forward
    seen_inputs: list[torch.Tensor] = []

    def spy_attack(model, x, y, t, rho, **kw):
        res = real_attack(model, x, y, t, rho, **kw)
        calls.append({"x0": x.clone(), "x": res.x.clone(), "y": y.clone(), "t": t.clone(), "rho": rho, **kw})
        return res

    def spy_forward(self, x):
        if torch.is_grad_enabled():
            seen_inputs.append(x.detach().clone())
        return real_forward(self, x)

    monkeypatch.setattr(kinds_mod, "curvature_attack", spy_attack)
    monkeypatch.setattr(MLP, "forward", spy_forward)
    train(tiny(kind="crt", crt_eps=0.7, eval_samples=0, attack_outer=4, attack_inner=2), data=tiny_data())
    assert len(calls) == 4
    c = calls[0]
    assert c["rho"] == 0.7 and c["n_outer"] == 4 and c["n_inner"] == 2
    assert torch.equal(c["m"], -c["K"]) and (c["K"] > 0).all() and not c["K"].requires_grad
    assert (c["t"] != c["y"]).all()
    d = (c["x"] - c["x0"]).norm(dim=1)
    assert (d > 0).all() and (d <= 0.7 * (1 + 1e-4)).all()
    # the gradient-carrying forward pass of each step saw the attacked batch, not the clean one
    grad_inputs = [x for x in seen_inputs if x.shape == c["x"].shape]
    assert any(torch.equal(x, calls[0]["x"]) for x in grad_inputs)
    assert not any(torch.equal(x, calls[0]["x0"]) for x in grad_inputs)


def test_gamma_and_standard_do_not_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("attack called")

    monkeypatch.setattr(kinds_mod, "curvature_attack", boom)
    train(tiny(kind="gamma", eval_samples=0, epochs=1), data=tiny_data())
    train(tiny(kind="standard", eval_samples=0, epochs=1), data=tiny_data())


def test_init_model_is_copied_and_must_match() -> None:
    torch.manual_seed(0)
    base = MLP(784, [16], 10, "softplus")
    before = weights(base)
    res = train(tiny(kind="gamma", eval_samples=0), init_model=base, data=tiny_data())
    assert all(torch.equal(p, q) for p, q in zip(before, weights(base)))
    assert not all(torch.equal(p, q) for p, q in zip(before, weights(res.model)))
    with pytest.raises(CRCError, match="init_model"):
        train(tiny(widths=(32,)), init_model=base, data=tiny_data())


def test_max_steps_and_limits() -> None:
    res = train(tiny(kind="standard", epochs=5, max_steps=3, eval_samples=0, train_limit=200), data=tiny_data())
    assert res.steps == 3 and not res.stopped
    assert [e["kind"] for e in res.history].count("epoch") == 1  # epoch 1 (4 steps of 64) cut at step 3


@pytest.mark.parametrize("bad, match", [
    (dict(gamma=-0.1), "gamma"),
    (dict(crt_eps=0.0), "radius"),
    (dict(crt_eps=float("nan")), "finite"),
    (dict(lr=0), "learning rate"),
    (dict(widths=()), "widths"),
    (dict(widths=(0,)), "widths"),
    (dict(epochs=0), "epochs"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(kind="adversarial"), "kind"),
    (dict(activation="relu"), "curvature"),
    (dict(dataset="cifar10"), "dataset"),
    (dict(eval_rho=-1), "ρ"),
    (dict(eval_samples=-1), "eval_samples"),
    (dict(attack_outer=0), "attack_outer"),
    (dict(train_limit=0), "train_limit"),
    (dict(eval_mode="slow"), "eval_mode"),
])
def test_config_validation(bad: dict, match: str) -> None:
    with pytest.raises(CRCError, match=match):
        TrainConfig(**bad)


def test_config_round_trip_and_labels() -> None:
    cfg = TrainConfig(widths=[1024, 1024], kind="gamma", gamma=0.05)
    assert cfg.widths == (1024, 1024)
    assert TrainConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    assert cfg.describe() == "3x[1024,1024] softplus, γ=0.05"
    assert TrainConfig(kind="standard", gamma=0.3).gamma_used == 0.0
    assert "CRT γ=0.01 ε=0.5" in TrainConfig().describe()


def test_parse_widths() -> None:
    assert parse_widths("256") == (256,)
    assert parse_widths("1024,1024") == (1024, 1024)
    assert parse_widths("2x1024") == (1024,)
    assert parse_widths("4x[1024]") == (1024, 1024, 1024)
    assert parse_widths([64, 32]) == (64, 32)
    for bad in ("abc", "1x10"):
        with pytest.raises(CRCError):
            parse_widths(bad)
    with pytest.raises(CRCError, match="must be ≥ 2"):  # the specific message, not the generic one
        parse_widths("1x64")


def test_runner_up_is_strongest_other_class() -> None:
    logits = torch.tensor([[0.0, 5.0, 3.0], [4.0, 1.0, 2.0], [1.0, 1.5, 9.0]])
    y = torch.tensor([1, 1, 0])
    assert runner_up(logits, y).tolist() == [2, 0, 2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_gpu_matches_device() -> None:
    events: list[dict] = []
    res = train(tiny(kind="crt", device="cuda"), callback=events.append, data=tiny_data())
    assert res.model.layers[0].weight.is_cuda
    assert res.metrics["certified_accuracy"] is not None
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_divergence_is_reported_not_saved() -> None:
    with pytest.raises(CRCError, match="diverged"):
        train(tiny(kind="gamma", gamma=1e30, lr=1e30, epochs=3, eval_samples=0), data=tiny_data())


def test_eval_every_skips_epochs_but_always_evaluates_the_last() -> None:
    res = train(tiny(kind="standard", epochs=3, eval_every=2, train_limit=64), data=tiny_data())
    epochs = [e for e in res.history if e["kind"] == "epoch"]
    assert [e["test_accuracy"] is not None for e in epochs] == [False, True, True]
    assert epochs[0].keys() >= EPOCH_KEYS and epochs[0]["train_loss"] > 0
    assert res.metrics["epoch"] == 3


def test_final_metrics_describe_the_weights_as_saved() -> None:
    """Completed run: its last evaluation. Stopped run: the weights evaluated now, epoch None (as the CLI and the
    Train page save them)."""
    from crc_core.train import final_metrics

    cfg = tiny(kind="standard")
    done = train(cfg, data=tiny_data())
    assert final_metrics(cfg, done) == done.metrics
    calls = iter([False, True])
    stopped = train(tiny(kind="standard", epochs=2), should_stop=lambda: next(calls, True), data=tiny_data())
    assert stopped.stopped and stopped.metrics == {}
    m = final_metrics(cfg, stopped, tiny_data()[1])
    assert m["epoch"] is None and m["step"] == 1 and 0 <= m["test_accuracy"] <= 1
    assert not hasattr(train_mod, "evaluate")  # one name for the per-epoch metrics: epoch_metrics


def test_run_epoch_and_event_log_are_the_loop() -> None:
    """train() is run_epoch() per epoch plus EventLog: one epoch by hand gives the same events and weights."""
    cfg = tiny(kind="gamma")
    res = train(cfg, data=tiny_data())
    log = train_mod.EventLog(None)
    log.steps_per_epoch = log.total_steps = 4
    with torch.random.fork_rng():
        run = train_mod._start(cfg, tiny_data()[0], None, torch.device("cpu"))
        stats = train_mod.run_epoch(run, 1, log, None)
    assert stats.n == 4 and run.step == 4 and not run.stopped
    steps = [e for e in res.history if e["kind"] == "step"]
    assert [e["step"] for e in log.history] == [e["step"] for e in steps]
    for a, b in zip(log.history, steps):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for p, q in zip(run.model.parameters(), res.model.parameters()):
        assert torch.allclose(p, q)


# ------------------------------------------------------------------------------------------------------------
# PGD / TRADES (Table 14 baselines) and ReLU networks
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pgd", "trades"])
def test_adversarial_kinds_train_end_to_end(kind: str) -> None:
    events: list[dict] = []
    res = train(tiny(kind=kind, adv_steps=3), callback=events.append, data=tiny_data())
    steps = [e for e in events if e["kind"] == "step"]
    assert res.steps == 4 and not res.stopped and events[-1]["kind"] == "done"
    assert steps and all(e.keys() >= STEP_KEYS | {"attack_accuracy"} for e in steps)
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in steps)
    if kind == "pgd":
        assert all(e["loss"] == e["ce"] for e in steps)  # CE at the PGD point, no γ term
    else:
        assert all(e["loss"] >= e["ce"] and e["robust_kl"] >= 0 for e in steps)  # + β KL
    m = res.metrics
    assert m.keys() >= EPOCH_KEYS - {"kind", "seconds", "train_loss", "train_accuracy"}
    assert 0 <= m["pgd_robust_accuracy"] <= m["test_accuracy"] + 0.5  # on the sample, vs the whole test set
    assert m["certified_accuracy"] is not None and m["mean_K_ub"] > 0  # softplus: CRC as for the other kinds
    assert res.history[0]["steps_per_epoch"] == 4


@pytest.mark.parametrize("kind, loss_name", [("pgd", "pgd_training_loss"), ("trades", "trades_loss")])
def test_adversarial_kinds_call_their_loss_with_the_config(monkeypatch: pytest.MonkeyPatch, kind: str,
                                                          loss_name: str) -> None:
    calls: list[dict] = []
    real = getattr(kinds_mod, loss_name)

    def spy(model, x, y, **kw):
        calls.append(kw)
        return real(model, x, y, **kw)

    monkeypatch.setattr(kinds_mod, loss_name, spy)
    monkeypatch.setattr(kinds_mod, "curvature_attack", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    cfg = tiny(kind=kind, adv_eps=0.3, adv_steps=2, adv_step_size=0.2, trades_beta=2.0, adv_random_start=False,
               eval_samples=0)
    train(cfg, data=tiny_data())
    assert len(calls) == 4
    assert calls[0]["eps"] == 0.3 and calls[0]["steps"] == 2 and calls[0]["step_size"] == 0.2
    assert calls[0].get("beta", 2.0) == 2.0 and calls[0].get("random_start", False) is False


def test_adversarial_training_is_seeded() -> None:
    a = train(tiny(kind="pgd", adv_steps=2, eval_samples=0), data=tiny_data())
    b = train(tiny(kind="pgd", adv_steps=2, eval_samples=0), data=tiny_data())
    assert all(torch.equal(p, q) for p, q in zip(weights(a.model), weights(b.model)))


def test_pgd_training_raises_pgd_accuracy_over_standard() -> None:
    """The point of the baseline: at the same budget, PGD training is harder to attack at ε than standard."""
    data = tiny_data(512, 64)
    kw = dict(widths=(32,), epochs=6, batch_size=64, lr=3e-3, eval_samples=64, eval_rho=1.0, eval_all_targets=False)
    std = train(tiny(kind="standard", **kw), data=data).metrics
    adv = train(tiny(kind="pgd", adv_eps=1.0, adv_steps=5, **kw), data=data).metrics
    assert adv["pgd_robust_accuracy"] > std["pgd_robust_accuracy"], (adv, std)


@pytest.mark.parametrize("kind", ["standard", "pgd", "trades"])
def test_relu_trains_and_is_certified_by_app_g(kind: str) -> None:
    res = train(tiny(kind=kind, activation="relu", adv_steps=2, eval_samples=6), data=tiny_data())
    steps = [e for e in res.history if e["kind"] == "step"]
    assert steps and all("mean_K" not in e for e in steps)  # no curvature for ReLU
    assert res.model.activation_name == "relu"
    m = res.metrics
    assert m["mean_K_ub"] is None and m["eval_samples"] == 6
    assert 0 <= m["certified_accuracy_all"] <= m["certified_accuracy"] <= m["pgd_robust_accuracy"] <= 1


def small_relu(widths: list[int], n: int = 40, d: int = 20) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    """A random ReLU net on d-dimensional inputs in [0, 1] (small d: the App. G proofs are cheap), labels = its
    predictions (all correct: the certificate decides)."""
    torch.manual_seed(0)
    net = MLP(d, widths, 4, "relu")
    x = torch.rand(n, d)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def test_relu_epoch_metrics_match_certify_relu_and_skip_deeper_nets() -> None:
    from crc_core.baselines.relu_quadratic import certify_relu

    net, x, y = small_relu([12])
    m = epoch_metrics(net, (x, y), rho=0.05, eval_samples=40)
    cert = certify_relu(net, x, y, targets="all")
    bisected = float(cert.certified(0.05).float().mean())
    assert m["certified_accuracy_all"] >= bisected > 0  # the proof at ρ is at least as strong as the bisection's
    assert m["certified_accuracy_all"] <= m["certified_accuracy"] <= m["pgd_robust_accuracy"]
    deep, x, y = small_relu([12, 12])
    d = epoch_metrics(deep, (x, y), rho=0.05, eval_samples=10)
    assert d["certified_accuracy"] is None and d["certified_accuracy_all"] is None and d["mean_K_ub"] is None
    assert d["pgd_robust_accuracy"] is not None and d["eval_samples"] == 10


def test_inflated_relu_certificate_is_caught_by_pgd() -> None:
    """The PGD check can fail: at a radius where PGD breaks images, an "all certified" claim is refuted, and the
    real certificate stays below PGD's empirical accuracy."""
    net, x, y = small_relu([12])
    m = epoch_metrics(net, (x, y), rho=1.0, eval_samples=40)
    assert m["pgd_robust_accuracy"] < 1.0  # PGD breaks some images at ρ = 1: claiming 100% would be caught
    assert m["certified_accuracy_all"] <= m["certified_accuracy"] <= m["pgd_robust_accuracy"]


@pytest.mark.parametrize("bad, match", [
    (dict(activation="relu", kind="gamma"), "smooth activation"),
    (dict(activation="relu", kind="crt"), "Hessian is zero almost everywhere"),
    (dict(activation="gelu", kind="standard"), "relu only for standard, pgd, trades"),
    (dict(kind="pgd", adv_eps=0.0), "radius ε"),
    (dict(kind="trades", adv_eps=-1.0), "radius ε"),
    (dict(kind="trades", trades_beta=-0.5), "β"),
    (dict(kind="pgd", adv_steps=0), "steps"),
    (dict(kind="pgd", adv_step_size=0.0), "step size"),
    (dict(kind="pgd", adv_random_start="yes"), "adv_random_start"),
])
def test_adversarial_and_relu_config_errors(bad: dict, match: str) -> None:
    with pytest.raises(CRCError, match=match) as err:
        TrainConfig(**bad)
    assert "\n" not in str(err.value)


def test_adversarial_labels_settings_and_run_record() -> None:
    from crc_core.checkpoints import run_record

    pgd = TrainConfig(kind="pgd", adv_eps=0.5, activation="relu")
    trades = TrainConfig(widths=(256, 256), kind="trades", trades_beta=6, adv_eps=0.5)
    assert pgd.describe() == "2x[256] relu, PGD ε=0.5" and pgd.gamma_used == 0.0
    assert trades.describe() == "3x[256,256] softplus, TRADES β=6 ε=0.5" and trades.gamma_used == 0.0
    assert pgd.kind_settings() == {"eps": 0.5, "steps": 10, "step_size": None, "random_start": True}
    assert trades.kind_settings() == {"eps": 0.5, "steps": 10, "step_size": None, "beta": 6.0}
    assert TrainConfig.from_dict(trades.to_dict()) == trades
    cfg = tiny(kind="trades", adv_steps=2, trades_beta=3.0, eval_samples=0)
    res = train(cfg, data=tiny_data())
    rec = run_record(cfg, res, source="test")
    assert rec["kind"] == "trades" and rec["gamma"] == 0.0 and rec["crt_eps"] is None
    assert rec["kind_settings"] == {"eps": 0.5, "steps": 2, "step_size": None, "beta": 3.0}
    assert rec["config"]["trades_beta"] == 3.0 and rec["config"]["adv_steps"] == 2
    assert "attack_accuracy" in rec["history"]["steps"][0]


def test_crt_attack_with_theorem3_bounds_reaches_farther_than_with_the_regularizer_k() -> None:
    """attack_bounds = "regularizer" gives the CRT attack m = -K (K the penalty's Theorem 4 estimate), so its
    η ≥ K keeps the point well inside ε; "theorem3" (Theorem 3's m, M, the authors' choice) lets it reach
    ε. Measured on crt-2x256, ε = 1.58, 64 test images, 8 x 5 steps: mean distance 0.91 vs 1.36."""
    from pathlib import Path

    from crc_core import load_checkpoint
    from crc_core.attack import curvature_attack
    from crc_core.bounds import CurvatureRegularizer
    from crc_core.train import _attack_bounds

    model, _ = load_checkpoint(Path(__file__).resolve().parents[1] / "assets" / "models" / "crt-2x256.pt")
    test = load_dataset("embedded", "test", limit=64)
    x, y = test.images.reshape(64, -1), test.labels
    with torch.no_grad():
        t = runner_up(model(x), y)
    reach = {}
    for rule in ("regularizer", "theorem3"):
        reg = CurvatureRegularizer()
        with torch.no_grad():
            K = reg(model, y, t)
        m, KK = _attack_bounds(model, reg, y, t, K, TrainConfig(widths=(256,), kind="crt", crt_eps=1.58,
                                                                attack_bounds=rule))
        r = curvature_attack(model, x, y, t, 1.58, m=m, K=KK, n_outer=8, n_inner=5)
        reach[rule] = (float(r.distance.mean()), float(r.margin.mean()))
    assert reach["theorem3"][0] > 1.25 * reach["regularizer"][0]
    assert reach["theorem3"][1] < reach["regularizer"][1] - 0.3


def test_attack_bounds_setting_is_checked() -> None:
    with pytest.raises(CRCError, match="attack_bounds must be"):
        TrainConfig(kind="crt", attack_bounds="theorem4")
    with pytest.raises(CRCError, match="2-layer"):
        TrainConfig(widths=(16, 16), kind="crt", attack_bounds="theorem3")
    assert TrainConfig(widths=(16, 16), kind="standard", attack_bounds="theorem3").attack_bounds == "theorem3"
    assert kinds_mod.KINDS["crt"].settings(TrainConfig(kind="crt", attack_bounds="theorem3"))["attack_bounds"] \
        == "theorem3"
