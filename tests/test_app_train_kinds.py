"""The Train page's PGD / TRADES kinds and ReLU activation, and the pages with a ReLU model picked (AppTest).

Models: the small test checkpoints (tests/app_helpers.py) plus the shipped relu-2x256 (PGD-trained 2-layer ReLU) and
trades-3x256 (TRADES, 3-layer softplus) from assets/models; trained models go to a temporary folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from app_lib import heavy_jobs, plots, registry
from app_lib import train_view as tv

TIMEOUT = 120
RELU, TRADES = "shipped:relu-2x256.pt", "shipped:trades-3x256.pt"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for f in H.model_dir().glob("*.pt"):
        shutil.copy(f, folder / f.name)
    for name in ("relu-2x256.pt", "trades-3x256.pt"):
        src = H.SHIPPED / name
        if not src.exists():
            pytest.skip(f"{src} is not in this checkout")
        shutil.copy(src, folder / name)
    return folder


@pytest.fixture
def app_env(monkeypatch, tmp_path, models_dir) -> Path:
    runs = tmp_path / "runs"
    monkeypatch.setenv(registry.MODELS_ENV, str(models_dir))
    monkeypatch.setenv(registry.RUNS_ENV, str(runs))
    return runs


def _page(path: str, model: str | None = None) -> AppTest:
    return H.open_app(path, model, timeout=TIMEOUT)


_ok = H.assert_no_exception


def _errors(at: AppTest) -> str:
    return " ".join(H.error_texts(at))


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _set_tiny(at: AppTest, kind: str, activation: str = "softplus") -> None:
    """One epoch on 256 images, width 16, 2 PGD steps, 10 test images evaluated: a few seconds."""
    at.radio(key="tr_kind").set_value(kind).run()
    at.selectbox(key="tr_activation").set_value(activation).run()
    _ok(at)
    at.number_input(key="tr_epochs").set_value(1)
    at.selectbox(key="tr_width").set_value(16)
    at.number_input(key="tr_limit").set_value(256)
    at.number_input(key="tr_eval_samples").set_value(10)
    at.number_input(key="tr_adv_steps").set_value(2)


def _train(at: AppTest):
    at.form_submit_button[0].click().run()
    _ok(at)
    assert not _errors(at), _errors(at)
    job = at.session_state[tv.JOB_KEY]
    assert job.wait(90), "training did not end in time"
    at.run()
    _ok(at)
    assert job.status == "done", job.error
    return job


# ------------------------------------------------------------------------------------------------ train form
def test_kind_fields_follow_the_kind(app_env):
    at = _page("pages/1_Train.py")
    shown = {n.key for n in at.number_input} | {c.key for c in at.checkbox}
    assert {"tr_gamma", "tr_eps"} <= shown and "tr_adv_eps" not in shown  # the default kind: CRT
    at.radio(key="tr_kind").set_value("pgd").run()
    shown = {n.key for n in at.number_input} | {c.key for c in at.checkbox}
    assert {"tr_adv_eps", "tr_adv_steps", "tr_adv_step", "tr_adv_random"} <= shown
    assert not shown & {"tr_gamma", "tr_eps", "tr_beta"}
    assert any("Madry" in c.value for c in at.caption)
    at.radio(key="tr_kind").set_value("trades").run()
    shown = {n.key for n in at.number_input} | {c.key for c in at.checkbox}
    assert {"tr_adv_eps", "tr_beta"} <= shown and not shown & {"tr_gamma", "tr_adv_random"}
    assert any("TRADES" in c.value and "β" in c.value for c in at.caption)
    at.radio(key="tr_kind").set_value("gamma").run()
    shown = {n.key for n in at.number_input}
    assert "tr_gamma" in shown and not shown & {"tr_eps", "tr_adv_eps", "tr_beta"}
    assert "relu" in at.selectbox(key="tr_activation").options
    at.radio(key="tr_kind").set_value("trades").run()
    at.number_input(key="tr_beta").set_value(3.0)
    at.number_input(key="tr_epochs").set_value(0)  # submitted, not started
    at.form_submit_button[0].click().run()
    assert "Not started" in _errors(at) and tv.JOB_KEY not in at.session_state
    at.radio(key="tr_kind").set_value("pgd").run()
    at.radio(key="tr_kind").set_value("trades").run()
    _ok(at)
    assert at.number_input(key="tr_beta").value == 3.0  # kept while hidden


def test_relu_with_crt_is_refused_with_the_reason(app_env):
    at = _page("pages/1_Train.py")
    at.radio(key="tr_kind").set_value("crt").run()
    at.selectbox(key="tr_activation").set_value("relu").run()
    _ok(at)
    warn = " ".join(w.value for w in at.warning)
    assert "smooth activation" in warn and "zero almost everywhere" in warn
    at.form_submit_button[0].click().run()
    _ok(at)
    assert "Not started" in _errors(at) and "smooth activation" in _errors(at)
    assert tv.JOB_KEY not in at.session_state
    at.radio(key="tr_kind").set_value("gamma").run()
    assert "smooth activation" in " ".join(w.value for w in at.warning)
    at.radio(key="tr_kind").set_value("trades").run()
    assert not at.warning


def test_invalid_attack_fields_say_why(app_env):
    at = _page("pages/1_Train.py")
    at.radio(key="tr_kind").set_value("trades").run()
    at.number_input(key="tr_adv_eps").set_value(-0.5)
    at.number_input(key="tr_adv_steps").set_value(0)
    at.number_input(key="tr_beta").set_value(-1.0)
    at.form_submit_button[0].click().run()
    _ok(at)
    errs = _errors(at)
    assert "Not started" in errs and "Attack ε must be from 0.01 to 5" in errs
    assert "PGD steps must be a whole number from 1 to 100" in errs and "TRADES β must be from 0 to 100" in errs
    assert tv.JOB_KEY not in at.session_state
    assert at.number_input(key="tr_adv_eps").value == 0.5 and at.number_input(key="tr_beta").value == 6.0


def test_make_config_step_size_zero_means_default():
    state: dict = {}
    tv.check_fields(state)
    state.update(tr_dataset="embedded", tr_width=16, tr_activation="relu", tr_kind="pgd", tr_lr=1e-3, tr_batch=64)
    cfg = tv.make_config(state, "cpu")
    assert cfg.adv_step_size is None and cfg.adv_random_start and cfg.describe() == "2x[16] relu, PGD ε=0.5"
    state.update(tr_adv_step=0.2, tr_adv_random=False)
    cfg = tv.make_config(state, "cpu")
    assert cfg.adv_step_size == 0.2 and not cfg.adv_random_start
    state["tr_kind"] = "crt"
    with pytest.raises(ValueError, match="smooth activation"):
        tv.make_config(state, "cpu")


# ------------------------------------------------------------------------------------------------ train runs
def test_pgd_relu_run_trains_and_is_picked(app_env):
    at = _page("pages/1_Train.py")
    _set_tiny(at, "pgd", "relu")
    job = _train(at)
    assert job.path is not None and job.path.parent == app_env
    picker = at.sidebar.selectbox(key="_w_crc_model_id")
    assert picker.value == f"trained:{job.path.name}"
    label = picker.format_func(picker.value)
    assert label.startswith("PGD ε=0.5") and "relu" in label, label
    m = {x.label: x.value for x in at.metric}
    assert m["PGD-robust"].endswith("%") and m["mean K_ub"] == "—"
    spec = _specs(at)[0]
    names = {t.get("name") for t in spec["data"]}
    assert "robust to PGD at ρ (empirical, an upper bound)" in names
    assert not any("K penalised" in (n or "") for n in names)
    assert any("no curvature bound" in a["text"] for a in spec["layout"]["annotations"])
    assert any("ReLU network: no curvature curves" in c.value for c in at.caption)


def test_trades_run_trains_and_is_picked(app_env):
    at = _page("pages/1_Train.py")
    _set_tiny(at, "trades")
    at.number_input(key="tr_beta").set_value(3.0)
    job = _train(at)
    assert job.config.kind == "trades" and job.config.trades_beta == 3.0 and job.config.adv_steps == 2
    picker = at.sidebar.selectbox(key="_w_crc_model_id")
    assert picker.format_func(picker.value).startswith("TRADES β=3 ε=0.5")
    spec = _specs(at)[0]
    names = {t.get("name") for t in spec["data"]}
    assert "robust to PGD at ρ (empirical, an upper bound)" in names
    assert any("K penalised" in (n or "") for n in names)  # softplus: the curvature bound is still logged
    assert not any("ReLU network" in c.value for c in at.caption)


# ------------------------------------------------------------------------------------------------ relu model picked
@pytest.mark.parametrize("page", ["pages/3_Curvature.py", "pages/4_Hessian.py"])
def test_curvature_and_hessian_explain_relu(app_env, page):
    at = _page(page, RELU)
    assert not _errors(at), _errors(at)
    info = " ".join(" ".join(i.value for i in at.info).split())
    assert "does not apply to ReLU" in info and "zero almost everywhere" in info and "App. G" in info
    assert not at.get("plotly_chart")


def test_every_page_with_relu_and_trades_models(app_env):
    lock = heavy_jobs.heavy_lock()  # the Curvature page waits for the machine: no survey of a 3x[256] net here
    assert lock.acquire(timeout=60)
    try:
        for model in (RELU, TRADES):
            at = _page("app.py", model)
            assert not _errors(at), (model, _errors(at))
            for page in ("pages/1_Train.py", "pages/3_Curvature.py", "pages/4_Hessian.py", "pages/0_Home.py"):
                at.switch_page(page).run()
                _ok(at)
                assert not _errors(at), (model, page, _errors(at))
            at.switch_page("pages/1_Train.py").run()
            spec = _specs(at)[0]  # how the picked model was trained
            assert "robust to PGD" in " ".join(t.get("name") or "" for t in spec["data"])
    finally:
        lock.release()


def test_curvature_comparison_skips_relu_models(app_env):
    lock = heavy_jobs.heavy_lock()
    assert lock.acquire(timeout=60)
    try:
        at = _page("pages/3_Curvature.py", "shipped:small-crt.pt")
        options = at.multiselect(key="crc_cmp_models").options
        assert not any("relu" in o for o in options)
        assert any("Not offered: 1 ReLU model (relu-2x256)" in c.value for c in at.caption)
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------------ helpers
def test_kind_labels_of_adversarial_runs():
    pgd = {"kind": "pgd", "kind_settings": {"eps": 0.5, "steps": 10, "step_size": None, "random_start": True}}
    trades = {"kind": "trades", "kind_settings": {"eps": 0.25, "steps": 10, "step_size": None, "beta": 6.0}}
    assert registry.training_kind(pgd) == "pgd" and registry.kind_text(pgd) == "PGD ε=0.5"
    assert registry.kind_text(trades) == "TRADES β=6 ε=0.25"
    assert registry.kind_text({"kind": "trades"}) == "TRADES"


def test_training_curves_without_curvature_or_certificates():
    steps = [{"kind": "step", "epoch": 1, "step": s, "steps_per_epoch": 10, "epoch_step": s, "loss": 1.0,
              "ce": 1.0, "accuracy": 0.5} for s in (5, 10)]
    epoch = {"kind": "epoch", "epoch": 1, "step": 10, "test_accuracy": 0.8, "pgd_robust_accuracy": 0.6,
             "certified_accuracy": None, "certified_accuracy_all": None, "mean_K_ub": None}
    fig = plots.training_curves([*steps, epoch], no_curvature="none here")
    names = {t.name for t in fig.data}
    assert "robust to PGD at ρ (empirical, an upper bound)" in names and "test accuracy" in names
    assert not any("certified" in n or "K" in n for n in names)
    note = next(a for a in fig.layout.annotations if a.text == "none here")
    assert note.xref == "paper" and fig.layout.xaxis2.domain[0] < note.x < fig.layout.xaxis2.domain[1]
    with_k = plots.training_curves([{**s, "mean_K": 2.0} for s in steps] + [epoch], no_curvature="none here")
    assert "none here" not in [a.text for a in with_k.layout.annotations]
