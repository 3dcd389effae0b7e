"""A model whose run record says dataset "fashion-mnist" (like the shipped Table 4 model): the sidebar's dataset
picker follows it to the full Fashion-MNIST test set when that is installed, and to the embedded subset (the same
test images, a subset of them) with a note when it is not; Certify and Compare run on the images picked (AppTest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")

import app_helpers as H
from streamlit.testing.v1 import AppTest

import crc_core.data as data_mod
from app_lib import catalogue, registry, state
from app_lib import compare_view as cv
from crc_core.checkpoints import save_checkpoint
from crc_core.data import load_dataset
from crc_core.train import TrainConfig, train

MODEL_ID = "shipped:fm-small.pt"
FULL_SET = data_mod.DEBIAN_FASHION_MNIST


@pytest.fixture
def fm_env(monkeypatch, tmp_path) -> Path:
    """$CRC_MODELS_DIR holding one small model recorded as trained on "fashion-mnist" (trained, for speed, on a
    few embedded images: the same kind of images)."""
    folder = tmp_path / "models"
    folder.mkdir()
    config = TrainConfig(widths=(16,), kind="standard", gamma=0.0, epochs=1, train_limit=600, eval_samples=0,
                         seed=1, device="cpu")
    with torch.random.fork_rng():
        result = train(config)
    save_checkpoint(folder / "fm-small.pt", result.model, {"dataset": "fashion-mnist", "kind": "standard",
                                                           "metrics": result.metrics, "command": "tests"})
    monkeypatch.setenv(registry.MODELS_ENV, str(folder))
    monkeypatch.setenv(registry.RUNS_ENV, str(tmp_path / "runs"))
    catalogue.dataset_infos.clear()
    yield tmp_path
    catalogue.dataset_infos.clear()  # later tests see this machine's datasets again


def _certify_and_compare(at: AppTest, dataset: str) -> None:
    """Certify's first gallery image and a 8-image Compare job run cleanly on ``dataset``'s test images."""
    ds = load_dataset(dataset, "test", limit=8)
    at.switch_page("pages/2_Certify.py").run()
    H.assert_clean(at)
    at.button(key="pick_1").click().run()
    H.assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["true label"] == ds.class_names[int(ds.labels[1])] and float(metrics["certified radius"]) >= 0
    at.switch_page("pages/5_Compare.py").run()
    H.assert_clean(at)
    at.number_input(key="cmp_n").set_value(8)
    at.multiselect(key="cmp_methods").set_value(["crc"])
    at.button(key="cmp_start").click().run()
    H.assert_clean(at)
    (_model_key, used), job = at.session_state[cv.JOB_KEY]
    assert used == dataset and torch.equal(job.images, ds.images.reshape(-1, 784))
    assert job.wait(H.APPTEST_TIMEOUT) and job.status == "done" and job.n_done == 8
    at.run()
    H.assert_clean(at)


def _sidebar_infos(at: AppTest) -> str:
    return " ".join(i.value for i in at.sidebar.info)


@pytest.mark.skipif(not any(FULL_SET.glob("t10k-images*")), reason=f"the full Fashion-MNIST is not in {FULL_SET}")
def test_a_fashion_mnist_model_uses_the_full_test_set_when_installed(fm_env) -> None:
    at = H.open_app(model=MODEL_ID)
    assert at.session_state[state.DATASET_KEY] == "fashion-mnist"
    assert len(catalogue.cached_test_set("fashion-mnist")) == 10_000
    assert "subset" not in _sidebar_infos(at)
    _certify_and_compare(at, "fashion-mnist")
    at.sidebar.selectbox(key=f"_w_{state.DATASET_KEY}").set_value("embedded").run()  # the subset, asked for
    H.assert_clean(at)
    assert "pick fashion-mnist above to use all of them" in _sidebar_infos(at)


def test_without_the_full_set_the_embedded_subset_is_used_with_a_note(fm_env, monkeypatch) -> None:
    empty = fm_env / "no-data"
    empty.mkdir()
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", empty)
    monkeypatch.setenv("CRC_DATA_DIR", str(empty))
    assert "fashion-mnist" not in [d.name for d in data_mod.available_datasets()]
    at = H.open_app(model=MODEL_ID)
    assert at.session_state[state.DATASET_KEY] == "embedded"
    note = _sidebar_infos(at)
    assert "trained on the full Fashion-MNIST, whose test split is not on this machine" in note
    assert f"{len(load_dataset('embedded', 'test')):,} of the same test images" in note
    assert not at.sidebar.warning  # the same images: no "other images" warning
    _certify_and_compare(at, "embedded")


def test_home_says_which_epoch_the_shipped_table4_model_holds(monkeypatch, tmp_path) -> None:
    """The shipped Table 4 file holds epoch 8 of a 30-epoch run, kept by our rule: Home says so, and says that its
    saved certified accuracy is on a 1,000-image sample (not the 10,000-image number of docs/reproduction.md)."""
    monkeypatch.setenv(registry.MODELS_ENV, str(H.REPO / "assets" / "models"))
    monkeypatch.setenv(registry.RUNS_ENV, str(tmp_path / "runs"))
    at = H.open_app("pages/0_Home.py", "shipped:table4-crt-2x1024-eps1.58.pt")
    H.assert_clean(at)
    table = at.table[0].value
    rows = dict(zip(table["property"], table["value"]))
    assert rows["Epochs"] == "30"
    assert rows["Weights kept"].startswith("best certified accuracy on training images (epoch 8 of 30, 54.12%")
    assert rows["Certified accuracy at ρ=1.58 (saved, 1000 test images)"].endswith("%")
