"""Bring your own model in the app (issue 13): the Home page's upload imports foreign files, the picker labels them,
the dataset picker offers MNIST and follows the model, and every page works with an imported MNIST model.

AppTest (no browser). Models: the small test checkpoints ($CRC_MODELS_DIR) plus synthetic foreign files written
here (the official key layout fc1/fc2, an nn.Sequential, a wrapped DataParallel dict). Data: a tiny synthetic MNIST
folder under $CRC_DATA_DIR (always), and the real MNIST test set in ../shared/data/mnist where it is present.
"""

from __future__ import annotations

import io
import itertools
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")

import app_helpers as H
from streamlit.testing.v1 import AppTest
from test_importers import write_forged_zip

from app_lib import catalogue, registry
from crc_core.data import MNIST_CLASSES, load_dataset, shared_mnist_dir, write_idx
from crc_core.errors import CheckpointError

TIMEOUT = 120
OFFICIAL = "mnist_2_softplus_L2_1.58_EIGEN_0.005"  # the paper's naming: dataset, depth, activation, CRT ε, γ
IMPORTED_ID = f"imported:{OFFICIAL}.pt"
PROMPT = "Import a network"  # the import prompt's title


# ------------------------------------------------------------------------------------------------ files
def _save(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def linear_chain(dims: tuple[int, ...], names: list[str], seed: int = 0, prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict of Linear layers ``dims[i] -> dims[i+1]`` under module names ``names`` (small random weights)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (a, b) in zip(names, itertools.pairwise(dims), strict=True):
        sd[f"{prefix}{name}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        sd[f"{prefix}{name}.bias"] = torch.randn(b, generator=g) * 0.1
    return sd


def official_bytes() -> bytes:
    """``torch.save(model.state_dict())`` of a 2-layer net in the official key layout (fc1, fc2)."""
    return _save(linear_chain((784, 32, 10), ["fc1", "fc2"]))


def refused_files(marker: Path, tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, words the one-sentence refusal must contain)."""

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    cnn = linear_chain((784, 64, 10), ["fc1", "fc2"])
    cnn["conv1.weight"], cnn["conv1.bias"] = torch.zeros(8, 1, 3, 3), torch.zeros(8)
    no_chain = linear_chain((784, 32, 10), ["fc1", "fc2"])
    no_chain["fc2.weight"] = torch.zeros(10, 16)
    no_bias = linear_chain((784, 32, 10), ["fc1", "fc2"])
    del no_bias["fc2.bias"]
    huge = tmp_path / "huge.pt"
    write_forged_zip(huge, 50_000 * 50_000, (50_000, 50_000), (50_000, 1), record=64)  # claims 10 GB
    return {
        "cnn.pt": (_save(cnn), "CNN"),
        "nochain.pt": (_save(no_chain), "do not chain"),
        "nobias.pt": (_save(no_bias), "no bias"),
        "cifar.pt": (_save(linear_chain((3072, 32, 10), ["fc1", "fc2"])), "784 pixels"),
        "evil.pt": (_save({"fc1.weight": Evil()}), "could carry code"),
        "huge.pt": (huge.read_bytes(), "10,000,000,000 bytes"),
        "image.png": (H.png_bytes(np.zeros((28, 28))), "is a picture, not a model checkpoint"),  # issue 24: to Certify
        "notes.pt": (b"just some notes\n", "not a readable PyTorch file"),
    }


def write_mnist_folder(root: Path, n: int = 40) -> Path:
    """A tiny MNIST-like test split in ``<root>/mnist`` (the named folder the app's data search looks into)."""
    ds = load_dataset("embedded", "test", limit=n)
    folder = root / "mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", (ds.images.reshape(-1, 28, 28) * 255).round().byte().numpy())
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", ds.labels.numpy().astype(np.uint8))
    return folder


# ------------------------------------------------------------------------------------------------ app helpers
@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    """Shipped models: the small test checkpoints; user models: a fresh folder (returned); data: a fresh folder
    ($CRC_DATA_DIR, empty); the app's dataset caches are cleared before and after."""
    runs = tmp_path / "runs"
    monkeypatch.setenv(registry.MODELS_ENV, str(H.model_dir()))
    monkeypatch.setenv(registry.RUNS_ENV, str(runs))
    monkeypatch.setenv("CRC_DATA_DIR", str(tmp_path / "data"))
    _clear_data_caches()
    yield runs
    _clear_data_caches()


def _clear_data_caches() -> None:
    catalogue.dataset_infos.clear()
    catalogue.cached_test_set.clear()


def _home() -> AppTest:
    return H.open_app(timeout=TIMEOUT)


_ok, _errors = H.assert_no_exception, H.error_texts


def _upload(at: AppTest, name: str, data: bytes) -> None:
    at.file_uploader(key="crc_upload_ckpt").set_value((name, data, "application/octet-stream"))
    at.run()
    _ok(at)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _prompt_text(at: AppTest) -> str:
    table = " ".join(" ".join(map(str, df.value.to_numpy().ravel())) for df in [*at.dataframe, *at.table])
    return " ".join([*(m.value for m in at.markdown), *(c.value for c in at.caption), table])


def _import_official(at: AppTest) -> None:
    _upload(at, OFFICIAL, official_bytes())
    _button(at, "Import").click().run()
    _ok(at)
    assert not _errors(at), _errors(at)


# ------------------------------------------------------------------------------------------------ tests
def test_official_file_prompt_import_and_every_page(app_env, tmp_path):
    """Upload an official-layout file: the prompt shows what was found, pre-filled from the name; Import makes it
    the picked model with its label, the dataset picker follows it to MNIST, and Certify, Curvature and Hessian work."""
    write_mnist_folder(tmp_path / "data")
    at = _home()
    before = at.session_state["crc_model_id"]
    _upload(at, OFFICIAL, official_bytes())
    assert not _errors(at)
    text = _prompt_text(at)
    assert PROMPT in text and f"`{OFFICIAL}`" in text and "784-32-10 (2 Linear layers: fc1, fc2)" in text
    assert "`fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`" in text and "CRT training, γ=0.005, ε=1.58" in text
    assert at.selectbox(key="crc_import_activation").value == "softplus"  # pre-filled from the file name
    assert at.selectbox(key="crc_import_dataset").value == "mnist"
    assert at.text_input(key="crc_import_name").value == OFFICIAL
    assert at.session_state["crc_model_id"] == before  # nothing changes until the user confirms

    _button(at, "Import").click().run()
    _ok(at)
    assert not _errors(at)
    done = " ".join(s.value for s in [*at.success, *at.warning])  # random weights: a low accuracy is a warning
    assert f"Imported {OFFICIAL}: it is now the picked model" in done
    assert "Accuracy on all 40 mnist test images" in done  # checked on every image of the dataset at import
    saved = app_env / "imported" / f"{OFFICIAL}.pt"
    model, meta = registry.load(registry.file_ref(saved, "imported"))
    acc = registry.accuracy_on(model, load_dataset("mnist", "test", root=tmp_path / "data" / "mnist"))
    assert meta["metrics"]["test_accuracy"] == pytest.approx(acc, abs=1e-6) and f"{acc:.1%}" in done
    assert meta["kind"] == "imported" and meta["source"]["file"] == OFFICIAL
    assert at.session_state["crc_model_id"] == IMPORTED_ID
    picker = at.sidebar.selectbox(key="_w_crc_model_id")
    label = picker.format_func(IMPORTED_ID)
    assert label == (f"{OFFICIAL} · 2x[32] softplus · imported · CRT γ=0.005 ε=1.58 (from file name) · mnist"
                     f" · acc {acc:.0%}")
    assert at.sidebar.selectbox(key="_w_crc_dataset").value == "mnist"  # the dataset picker followed the model
    assert not at.sidebar.warning  # trained on mnist, tested on mnist: no note

    for page in ("pages/2_Certify.py", "pages/4_Hessian.py", "pages/3_Curvature.py"):
        at.switch_page(page).run()
        _ok(at)
        assert not _errors(at), (page, _errors(at))
        assert at.session_state["crc_model_id"] == IMPORTED_ID
    at.switch_page("pages/2_Certify.py").run()
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["certified radius"]) >= 0  # the Certify page certified a (synthetic MNIST) test image

    at.switch_page("pages/1_Train.py").run()  # MNIST has only a test split here: Train says it cannot use it
    _ok(at)
    assert "mnist" not in at.selectbox(key="tr_dataset").options
    assert any(c.value.startswith("Not offered: mnist (only its test split") for c in at.caption)


def test_other_layouts_are_recognised_and_the_prompt_can_be_cancelled(app_env):
    at = _home()
    seq = _save(linear_chain((784, 24, 16, 10), ["0", "2", "4"]))  # nn.Sequential: activations sit at 1, 3
    _upload(at, "my_seq.pth", seq)
    text = _prompt_text(at)
    assert "784-24-16-10 (3 Linear layers: 0, 2, 4)" in text and "not an official file name" in text
    assert at.selectbox(key="crc_import_dataset").value == "fashion-mnist"  # the images in use (embedded)
    assert at.text_input(key="crc_import_name").value == "my_seq"
    _button(at, "Cancel").click().run()
    _ok(at)
    assert PROMPT not in _prompt_text(at)

    wrapped = _save({"epoch": 3, "state_dict": linear_chain((784, 20, 10), ["layers.0", "layers.1"],
                                                            prefix="module.")})
    _upload(at, "ckpt.pt", wrapped)
    assert "under 'state_dict'" in _prompt_text(at) and "784-20-10" in _prompt_text(at)
    at.selectbox(key="crc_import_activation").set_value("tanh")
    at.text_input(key="crc_import_name").set_value("my tanh net")
    _button(at, "Import").click().run()
    _ok(at)
    assert at.session_state["crc_model_id"] == "imported:my-tanh-net.pt"
    label = at.sidebar.selectbox(key="_w_crc_model_id").format_func("imported:my-tanh-net.pt")
    assert label.startswith("my-tanh-net · 2x[20] tanh · imported · training unknown · fashion-mnist · acc ")
    ds_picker = at.sidebar.selectbox(key="_w_crc_dataset")  # Fashion-MNIST images (full set, else the subset)
    assert ds_picker.value == ("fashion-mnist" if "fashion-mnist" in catalogue.dataset_names() else "embedded")


def test_refusals_are_one_sentence_and_keep_the_picked_model(app_env, tmp_path):
    at = _home()
    _import_official(at)  # an imported model is picked; nothing below may change that
    marker = tmp_path / "pwned"
    for name, (data, words) in refused_files(marker, tmp_path).items():
        _upload(at, name, data)
        errs = _errors(at)
        assert len(errs) == 1 and words in errs[0], (name, errs)
        msg = errs[0].removeprefix("Upload refused: ")
        assert msg.startswith(f"'{name}'") and msg.count(". ") == 0 and "Traceback" not in msg, (name, msg)
        assert "/tmp" not in msg and "crc-upload-" not in msg, msg  # never the temporary path
        assert PROMPT not in _prompt_text(at)  # no prompt for a refused file
        assert at.session_state["crc_model_id"] == IMPORTED_ID
    assert not marker.exists()  # nothing in the malicious file ran
    assert [p.name for p in (app_env / "imported").glob("*.pt")] == [f"{OFFICIAL}.pt"]  # nothing else written


def test_same_file_twice_is_not_imported_twice_and_own_checkpoints_still_load(app_env):
    at = _home()
    _import_official(at)
    at.sidebar.selectbox(key="_w_crc_model_id").set_value("shipped:small-crt.pt").run()
    _upload(at, OFFICIAL + ".pt", official_bytes())  # the same bytes under another name
    _button(at, "Import").click().run()
    _ok(at)
    assert any("imported before" in s.value for s in at.success)
    assert at.session_state["crc_model_id"] == IMPORTED_ID
    assert len(list((app_env / "imported").glob("*.pt"))) == 1

    torch.manual_seed(3)
    ours = H.checkpoint_bytes(registry.MLP(784, [8], 10), {"dataset": "embedded", "gamma": 0.0})
    _upload(at, "mine.pt", ours)
    assert any("mine.pt" in s.value for s in at.success) and PROMPT not in _prompt_text(at)
    assert at.session_state["crc_model_id"].startswith("uploaded:mine-")


def test_model_on_other_images_gets_a_note(app_env):
    """An MNIST model with no MNIST on the machine, or shown Fashion-MNIST on purpose: the sidebar says so."""
    at = _home()
    _import_official(at)  # no MNIST data in this test's $CRC_DATA_DIR
    assert at.sidebar.selectbox(key="_w_crc_dataset").value in ("embedded", "fashion-mnist")
    notes = " ".join(w.value for w in at.sidebar.warning)
    assert "trained on mnist, which is not found on this machine" in notes and "$CRC_DATA_DIR/mnist" in notes
    assert any("not found on this machine" in s.value for s in at.success)
    at.switch_page("pages/2_Certify.py").run()
    _ok(at)
    assert not _errors(at)  # it still works (10 classes), with the note beside it


def test_real_mnist_test_set_in_the_pickers(app_env, monkeypatch):
    """$CRC_DATA_DIR pointing at the real MNIST test set: the dataset picker offers MNIST (test split only), Train
    says it cannot train on it, and an imported MNIST model certifies real digits."""
    root = shared_mnist_dir()
    if root is None:
        pytest.skip("the real MNIST test set (../shared/data/mnist) is not on this machine")
    monkeypatch.setenv("CRC_DATA_DIR", str(root))
    _clear_data_caches()
    at = _home()
    ds_picker = at.sidebar.selectbox(key="_w_crc_dataset")
    assert "mnist (MNIST, digits; test split only)" in ds_picker.options  # the picker's labels
    assert ds_picker.format_func("mnist") == "mnist (MNIST, digits; test split only)"
    _import_official(at)
    assert at.sidebar.selectbox(key="_w_crc_dataset").value == "mnist"
    at.switch_page("pages/2_Certify.py").run()
    _ok(at)
    assert not _errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["true label"] in MNIST_CLASSES and float(metrics["certified radius"]) >= 0

    at.switch_page("pages/1_Train.py").run()
    _ok(at)
    assert "mnist" not in at.selectbox(key="tr_dataset").options
    assert any(c.value.startswith("Not offered: mnist") for c in at.caption)


# ------------------------------------------------------------------------------------------------ units
def test_registry_labels_and_dataset_rules():
    meta = {"kind": "imported", "trained_kind": "crt", "gamma": 0.005, "crt_eps": 1.58, "dataset": "mnist",
            "architecture": {"widths": [1024], "activation": "softplus"}}
    assert registry.training_kind(meta) == "imported"
    assert registry.kind_text(meta) == "imported · CRT γ=0.005 ε=1.58 (from file name)"
    assert registry.kind_text({**meta, "trained_kind": None}) == "imported · training unknown"
    gamma_only = {**meta, "trained_kind": "gamma", "crt_eps": None}
    assert registry.kind_text(gamma_only) == "imported · γ=0.005 (from file name)"
    ref = registry.ModelRef(IMPORTED_ID, "imported", Path(f"{OFFICIAL}.pt"), "k")
    assert registry.describe(ref, meta).endswith("imported · CRT γ=0.005 ε=1.58 (from file name) · mnist")

    assert catalogue.home_dataset("mnist", ["embedded", "mnist"]) == "mnist"
    assert catalogue.home_dataset("fashion-mnist", ["embedded", "mnist"]) == "embedded"  # the same images, a subset
    assert catalogue.home_dataset("mnist", ["embedded"]) is None
    assert catalogue.dataset_note("embedded", "fashion-mnist", "embedded") is None
    assert "pick mnist above" in catalogue.dataset_note("mnist", "embedded", "mnist")


def test_registry_upload_refusals_name_the_file():
    with pytest.raises(CheckpointError, match=re.escape("'x.pt' holds a network with 100 inputs")):
        registry.open_upload(_save(linear_chain((100, 8, 10), ["fc1", "fc2"])), "x.pt")
    with pytest.raises(CheckpointError, match=re.escape("is a Python pickle but not one written by torch.save")):
        registry.open_upload(pickle.dumps({"a": 1}), "p.pt")


# ------------------------------------------------------------------------------------------------ issue 24
def _trained_official() -> tuple[str, bytes]:
    """A softplus net really trained on Fashion-MNIST (the small test checkpoint) saved in the official layout under
    an official name that says softplus."""
    from crc_core.checkpoints import load_checkpoint

    model, _ = load_checkpoint(H.model_dir() / "small-standard.pt")
    sd = {f"fc{i + 1}.{p}": getattr(layer, p).detach().clone() for i, layer in enumerate(model.layers)
          for p in ("weight", "bias")}
    return "fashion-mnist_2_softplus_L2_1.58_EIGEN_0.005", _save(sd)


def test_an_activation_against_the_file_name_asks_to_confirm(app_env):
    """Issue 24 Major 5: choosing tanh for a file named softplus is not imported at the first press but explained
    (name contradicted; accuracy far below softplus's, measured on all test images) and asks to confirm; the
    import that follows is a warning, not a green success. The name field is no form: changing it imports nothing."""
    name, data = _trained_official()
    at = _home()
    _upload(at, name, data)
    at.text_input(key="crc_import_name").set_value("renamed").run()  # Enter in the field: only the name is taken
    _ok(at)
    assert not at.success and PROMPT in _prompt_text(at)
    at.selectbox(key="crc_import_activation").set_value("tanh").run()
    _button(at, "Import").click().run()
    _ok(at)
    assert not at.success and not list((app_env / "imported").glob("*.pt")) if (app_env / "imported").exists() \
        else not at.success
    doubt = " ".join(w.value for w in at.warning)
    assert "The file name says **softplus**, you chose **tanh**." in doubt
    ts = catalogue.import_test_set("fashion-mnist")  # Fashion-MNIST where found here, else the embedded subset
    n = len(ts)
    accs = registry.accuracy_by_activation(at.session_state["crc_import_pending"], "fashion-mnist", ts)
    if accs["softplus"] - accs["tanh"] >= 0.10:
        assert f"On all {n:,} {ts.name} test images, **tanh** gives {accs['tanh']:.1%}" in doubt
    _button(at, "Import anyway").click().run()
    _ok(at)
    assert not at.success
    done = " ".join(w.value for w in at.warning)
    assert "Imported" in done and "Imported although" in done and f"on all {n:,} {ts.name} test images" in done


def test_a_choice_that_agrees_with_the_name_imports_at_once(app_env):
    name, data = _trained_official()
    at = _home()
    _upload(at, name, data)
    _button(at, "Import").click().run()
    _ok(at)
    done = " ".join(s.value for s in at.success)
    assert "Imported" in done and "Accuracy on all" in done and not [w for w in at.warning if "Check" in w.value]


def test_a_safetensors_upload_is_offered_for_import():
    """The app's upload takes safetensors files (the format model hubs use) as foreign networks, through the same
    loading gate; the name loses its extension."""
    from safetensors.torch import save

    data = save(linear_chain((784, 16, 10), ["fc1", "fc2"]))
    upload = registry.open_upload(data, "mnist_2_softplus_L2_1.58_EIGEN_0.005.safetensors")
    assert isinstance(upload, registry.ForeignUpload)
    assert (upload.foreign.in_dim, upload.foreign.n_classes) == (784, 10)
    assert registry.upload_stem(upload.filename) == "mnist_2_softplus_L2_1.58_EIGEN_0.005"
