"""The Certify page with a ReLU model (issue 12): a 2-layer ReLU net gets App. G's certificate (the radius shown is
crc_core.baselines.certify_relu's on that image) and the other methods; a 3-layer one gets CRC's refusal with the
reason and the other methods' radii. Every page runs with either model picked (AppTest, no browser)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from app_lib import navigation, registry, state
from crc_core.baselines.relu_quadratic import certify_relu
from crc_core.checkpoints import load_checkpoint, save_checkpoint
from crc_core.data import load_dataset
from crc_core.train import TrainConfig, train

TIMEOUT = 180
CERTIFY = "pages/2_Certify.py"
TWO, THREE = "shipped:relu-two.pt", "shipped:relu-three.pt"


@functools.cache
def _models() -> Path:
    """Two small ReLU checkpoints, trained one epoch on 3000 embedded images (a few seconds)."""
    folder = Path(tempfile.mkdtemp(prefix="crc-app-relu-"))
    with torch.random.fork_rng():
        for name, widths in (("relu-two", (32,)), ("relu-three", (24, 24))):
            cfg = TrainConfig(widths=widths, kind="standard", activation="relu", epochs=1, train_limit=3000,
                              eval_samples=0, seed=0, device="cpu")
            res = train(cfg)
            save_checkpoint(folder / f"{name}.pt", res.model, {"dataset": "embedded", "kind": "standard",
                                                               "epochs": 1, "train_config": cfg.to_dict()})
    return folder


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv(registry.MODELS_ENV, str(_models()))
    monkeypatch.setenv(registry.RUNS_ENV, str(tmp_path / "runs"))
    return tmp_path


_ok = H.assert_clean


def _page(path: str, model: str, image: int | None = None) -> AppTest:
    at = AppTest.from_file(str(H.REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.sidebar.selectbox(key="_w_crc_model_id").set_value(model).run()
    _ok(at)
    if image is not None:
        at.session_state[state.IMAGE_KEY] = image
    at.switch_page(path).run()
    _ok(at)
    return at


def _correct_image(name: str) -> int:
    """The first embedded test image the model classifies correctly."""
    model, _ = load_checkpoint(_models() / name)
    ds = load_dataset("embedded", "test")
    with torch.no_grad():
        pred = model(ds.images[:50].reshape(50, -1)).argmax(1)
    return int((pred == ds.labels[:50]).nonzero()[0])


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_two_layer_relu_gets_app_g_radius(app_env):
    i = _correct_image("relu-two.pt")
    at = _page(CERTIFY, TWO, i)
    model, _ = load_checkpoint(_models() / "relu-two.pt")
    ds = load_dataset("embedded", "test")
    ref = certify_relu(model, ds.images[i:i + 1].reshape(1, -1), ds.labels[i:i + 1])
    assert bool(ref.correct[0])
    assert _metric(at, "certified radius (App. G)") == f"{float(ref.radius[0]):.4f}"
    assert _metric(at, "certified at ρ = 0.5?") in ("yes", "no")
    text = " ".join(i.value for i in at.info)
    assert "App. G" in text and "zero almost everywhere" in text
    assert "closest point the attack found" in text or "found no point" in text
    assert len(at.get("plotly_chart")) == 2  # the margins and every method beside the attack
    assert "does not apply" in " ".join(c.value for c in at.caption)  # CRC's reason under the methods chart


def test_app_g_runs_once_per_image_on_the_certify_page(app_env, monkeypatch):
    """The main certificate and the methods chart share one App. G run (~6 s per image on a 2×[1024] ReLU net)."""
    import app_lib.compare_view as compare_view
    import crc_core.baselines.relu_quadratic as relu_quadratic
    import crc_core.compare as compare

    calls = []

    def counting(*args, **kwargs):
        calls.append(args[1].shape[0])
        return certify_relu(*args, **kwargs)

    for module in (relu_quadratic, compare, compare_view):  # wherever the name is bound
        monkeypatch.setattr(module, "certify_relu", counting, raising=False)
    i = _correct_image("relu-two.pt") + 1  # an image no other test of this file opens (nothing cached)
    at = _page(CERTIFY, TWO, i)
    assert _metric(at, "certified radius (App. G)")
    assert calls == [1]


def test_three_layer_relu_refuses_crc_and_shows_the_others(app_env):
    i = _correct_image("relu-three.pt")
    at = _page(CERTIFY, THREE, i)
    assert _metric(at, "CRC radius") == "refused"
    assert "Only the other certificates" in " ".join(i.value for i in at.info)
    captions = " ".join(c.value for c in at.caption)
    assert "CRC (curvature) does not apply" in captions and "ReLU" in captions
    methods = at.get("plotly_chart")[-1].proto.spec
    assert "CROWN" in methods and "Lipschitz" in methods


@pytest.mark.parametrize("model", [TWO, THREE])
def test_every_page_runs_with_a_relu_model(app_env, model):
    for page in navigation.PAGES:
        at = _page(page.path, model)
        assert not at.exception, (page.path, [e.value for e in at.exception])
