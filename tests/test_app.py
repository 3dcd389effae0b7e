"""The Streamlit app, page by page, through streamlit.testing.v1.AppTest (no browser; same process).

Every test asserts that no exception box appears. Models come from small checkpoints in a temporary folder
($CRC_MODELS_DIR), trained models go to another ($CRC_RUNS_DIR). The app helpers (registry, images, jobs) are
tested directly at the end, followed by one test per finding of the browser walkthrough (issue 10).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from app_lib import heavy_jobs, images, jobs, margin_maths, registry
from crc_core.data import load_dataset
from crc_core.errors import CheckpointError, CRCError, DataError, UnsupportedActivationError
from crc_core.train import TrainConfig

TIMEOUT = 120


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    """Shipped models: the small test checkpoints; trained models: a fresh folder (returned)."""
    runs = tmp_path / "runs"
    monkeypatch.setenv(registry.MODELS_ENV, str(H.model_dir()))
    monkeypatch.setenv(registry.RUNS_ENV, str(runs))
    return runs


def _page(path: str) -> AppTest:
    """Open the app at its entry point (as a browser does), then go to ``path``."""
    return H.open_app(path, timeout=TIMEOUT)


_ok, _errors = H.assert_no_exception, H.error_texts


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# ------------------------------------------------------------------------------------------------ home
def test_home_shows_picker_device_dataset(app_env):
    at = _page("app.py")
    picker = at.sidebar.selectbox(key="_w_crc_model_id")
    labels = " | ".join(picker.options)
    for name in ("small-crt · 2x[32] softplus", "small-standard", "small-deep · 3x[24,24] softplus"):
        assert name in labels
    assert picker.value == "shipped:small-crt.pt"  # the default prefers a shipped CRT-named model
    captions = " ".join(c.value for c in at.caption)
    assert "Device in use: cpu" in captions and "Dataset in use" in captions
    assert _charts(at) == 1 and not _errors(at)


def test_home_upload_valid_and_refused_checkpoints(app_env, tmp_path):
    at = _page("app.py")
    up = at.file_uploader(key="crc_upload_ckpt")

    torch.manual_seed(3)
    good = H.checkpoint_bytes(registry.MLP(784, [8], 10), {"dataset": "embedded", "gamma": 0.0})
    up.set_value(("mine.pt", good, "application/octet-stream"))
    at.run()
    _ok(at)
    assert any("mine.pt" in s.value for s in at.success)
    assert at.session_state["crc_model_id"].startswith("uploaded:mine-")

    marker = tmp_path / "pwned"
    cases = {
        "relu.pt": (H.relu_checkpoint_bytes(), "relu"),
        # a foreign MLP state dict is offered for import, not refused: tests/test_app_import.py
        "garbage.pt": (b"this is not a checkpoint", "not a readable PyTorch file"),
        "evil.pt": (H.malicious_pickle_bytes(marker), "Refused"),
        "empty.pt": (b"", "empty"),
    }
    for name, (data, expected) in cases.items():
        at.file_uploader(key="crc_upload_ckpt").set_value((name, data, "application/octet-stream"))
        at.run()
        _ok(at)
        errs = " ".join(_errors(at))
        assert expected.lower() in errs.lower(), (name, errs)
        assert "Traceback" not in errs
    assert not marker.exists()  # nothing in the malicious file ran
    # the app is still usable: the uploaded good model is still picked
    assert at.session_state["crc_model_id"].startswith("uploaded:mine-")


def test_upload_with_other_classes_is_explained_and_recoverable(app_env):
    at = _page("app.py")
    torch.manual_seed(1)
    five = H.checkpoint_bytes(registry.MLP(784, [8], 5), {"dataset": "embedded"})
    at.file_uploader(key="crc_upload_ckpt").set_value(("five.pt", five, "application/octet-stream"))
    at.run()
    _ok(at)
    assert any("5 output classes" in e for e in _errors(at))
    at.sidebar.selectbox(key="_w_crc_model_id").set_value("shipped:small-crt.pt").run()
    _ok(at)
    assert not _errors(at)


def test_pages_without_any_model(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "none"))
    monkeypatch.setenv(registry.RUNS_ENV, str(tmp_path / "runs"))
    for page in ("app.py", "pages/2_Certify.py", "pages/3_Curvature.py", "pages/4_Hessian.py"):
        at = _page(page)
        assert not _errors(at)
        assert any("train one" in i.value.lower() or "no model" in i.value.lower() for i in at.info), page


def test_cuda_choice_without_a_gpu_falls_back(app_env):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    at = _page("app.py")
    at.sidebar.selectbox(key="_w_crc_device").set_value("cuda").run()
    _ok(at)
    assert any("CUDA is not available" in w.value for w in at.sidebar.warning)
    assert any("Device in use: cpu" in c.value for c in at.caption)


# ------------------------------------------------------------------------------------------------ certify
def test_certify_pick_image_filter_and_move_rho(app_env):
    at = _page("pages/2_Certify.py")
    m = _metrics(at)
    assert float(m["certified radius"]) >= 0
    assert float(m["runner-up radius"]) >= float(m["certified radius"]) - 1e-9
    correct = m["prediction"] == m["true label"]
    assert _charts(at) >= (5 if correct else 2) and not _errors(at)  # + x_b images, path, attack when correct

    # pick another image from the gallery
    ds = load_dataset("embedded", "test", limit=10)
    at.button(key="pick_3").click().run()
    _ok(at)
    assert at.session_state["crc_image_index"] == 3
    assert any(s.value.endswith("test image #3") for s in at.subheader)
    assert _metrics(at)["true label"] == ds.class_names[int(ds.labels[3])]

    # move ρ: the verdict at ρ follows the radius
    for rho in (0.05, 3.0):
        at.slider(key="_w_crc_rho").set_value(rho).run()
        _ok(at)
        m = _metrics(at)
        if m["true label"] == m["prediction"]:
            r = float(m["certified radius"])
            assert m[f"certified at ρ = {rho:g}?"] == ("yes" if r >= rho else "no")
            if m[f"certified at ρ = {rho:g}?"] == "yes":
                assert m["attack changed the class?"] == "no"  # soundness, as the user sees it

    # filters: wrong predictions only -> fewer matches, and each listed image is misclassified
    def matches() -> int:
        return int(next(c.value for c in at.caption if "test images match" in c.value).split()[0])

    n_all = matches()
    at.selectbox(key="crc_f_outcome").set_value("wrong").run()
    _ok(at)
    assert 0 < matches() < n_all
    picks = [b.key for b in at.button if b.key and b.key.startswith("pick_")]
    at.button(key=picks[0]).click().run()
    _ok(at)
    m = _metrics(at)
    assert m["prediction"] != m["true label"] and float(m["certified radius"]) == 0


def _upload_shoe(at: AppTest) -> None:
    """Upload embedded test image #4 as shoe.png on the Certify page; the page certifies it."""
    img = load_dataset("embedded", "test", limit=5).images[4].reshape(28, 28).numpy()
    at.file_uploader(key="crc_upload_image").set_value(("shoe.png", H.png_bytes(img), "image/png"))
    at.run()
    _ok(at)
    assert any("uploaded image shoe.png" in s.value for s in at.subheader)


def test_certify_uploaded_image_and_bad_uploads(app_env):
    at = _page("pages/2_Certify.py")
    _upload_shoe(at)
    assert _metrics(at)["true label"] == "unknown"

    captions = " ".join(c.value for c in at.caption)
    assert "shoe.png (28×28 pixels): not inverted (its background is dark)." in captions
    assert "resized to 28×28" in captions  # the upload tab says what happens to other sizes
    previews = [c for im in at.get("image") for c in im.captions]  # the padded picture and what the model sees
    assert "what the model sees: 28×28" in previews and "your picture in grey, padded to a square" in previews

    # any size is accepted: a 40×32 dark drawing on white is padded, shrunk and (auto) inverted
    drawing = np.ones((32, 40))
    drawing[8:24, 12:28] = 0
    at.file_uploader(key="crc_upload_image").set_value(("big.png", H.png_bytes(drawing), "image/png"))
    at.run()
    _ok(at)
    assert not _errors(at)
    assert any("uploaded image big.png" in s.value for s in at.subheader)
    note = next(c.value for c in at.caption if c.value.startswith("big.png (40×32 pixels)"))
    assert "padded to a square" in note and "shrunk to 28×28" in note and "inverted because" in note
    at.radio(key="crc_invert_mode").set_value("keep").run()
    _ok(at)
    assert any(c.value.startswith("big.png (40×32 pixels)") and "inverted" not in c.value for c in at.caption)

    for name, data, expected in (("notes.png", b"hello", "not an image"),
                                 ("huge.png", _png_header(8000, 6000), "48 megapixels")):
        at.file_uploader(key="crc_upload_image").set_value((name, data, "image/png"))
        at.run()
        _ok(at)
        assert any(expected in e for e in _errors(at)), _errors(at)
        assert at.metric  # the rest of the page still works (on the previously picked image)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height RGB pixels, with (almost) no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b""))


def test_certify_reuses_cached_bounds(app_env, monkeypatch):
    """Picking another image never recomputes the all-pair curvature bounds (the expensive part of a model)."""
    from app_lib import catalogue

    at = _page("pages/2_Certify.py")  # computes (or finds) the picked model's bounds
    calls: list[str] = []

    def counting(model, method="auto"):
        calls.append(method)
        raise AssertionError("curvature bounds recomputed for an already analysed model")

    monkeypatch.setattr(catalogue, "curvature_bounds", counting)
    at.button(key="pick_7").click().run()
    _ok(at)
    assert "test image #7" in " ".join(m.value for m in at.subheader)
    assert calls == []


# ------------------------------------------------------------------------------------------------ curvature
def test_curvature_page_tables_and_comparison(app_env):
    at = _page("pages/3_Curvature.py")
    m = _metrics(at)
    assert "mean K_lb (measured)" in m
    assert float(m["mean K_ub (Thm 3)"]) >= float(m["mean K_lb (measured)"]) * (1 - 1e-6)
    assert _charts(at) >= 5 and not _errors(at)
    table = at.dataframe[0].value
    assert len(table) >= 3  # the default compares up to four models
    assert (table["K_ub/K_lb"].dropna() >= 1 - 1e-6).all()  # a bound is never below a measurement
    # issue 24: Theorem 3 holds for 2-layer nets only; the deeper net's cell stays numeric (NaN) and reads "—",
    # under a header that says so; no missing cell anywhere shows Streamlit's literal "None"
    proto = at.dataframe[0].proto
    deep = table["model"].str.contains("small-deep")
    assert deep.sum() == 1 and table["K_ub Thm 3"].dtype.kind == "f"
    assert table.loc[deep, "K_ub Thm 3"].isna().all() and table.loc[~deep, "K_ub Thm 3"].notna().all()
    assert proto.placeholder == "—"
    thm3 = json.loads(proto.columns)["K_ub Thm 3"]
    assert "2-layer" in thm3["label"] and "2-layer nets only" in thm3["help"]
    assert any("Theorem 3 holds for 2-layer nets only" in c.value for c in at.caption)

    at.selectbox(key="_w_crc_curv_method").set_value("thm4").run()
    _ok(at)


# ------------------------------------------------------------------------------------------------ hessian
def test_hessian_page_shallow_and_deep(app_env):
    at = _page("pages/4_Hessian.py")
    m = _metrics(at)
    lam_max, M = float(m["largest λ here"]), float(m["bound M (Theorem 3)"])
    lam_min, mm = float(m["smallest λ here"]), float(m["bound m (Theorem 3)"])
    assert mm <= lam_min <= lam_max <= M
    n_charts = _charts(at)
    assert n_charts == 3 and not _errors(at)  # histogram, sorted, eigenvectors

    first = at.selectbox(key="_w_crc_hess_target").value
    at.selectbox(key="_w_crc_hess_target").select_index(1).run()
    _ok(at)
    assert at.selectbox(key="_w_crc_hess_target").value != first

    at.sidebar.selectbox(key="_w_crc_model_id").set_value("shipped:small-deep.pt").run()
    _ok(at)
    assert _charts(at) == 4  # + Lemma 1 per-layer terms
    K = float(_metrics(at)["K (Thm 4)"])
    # the per-layer chart carries ± each layer's Theorem 4 bound, and they add up to K
    import base64
    import json

    def values(y) -> np.ndarray:  # plotly sends numeric arrays as {"dtype": "f8", "bdata": base64}
        return np.frombuffer(base64.b64decode(y["bdata"]), y["dtype"]) if isinstance(y, dict) else np.asarray(y)

    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    traces = {tr["name"]: values(tr["y"]).astype(float) for tr in spec["data"]}
    plus, minus = traces["± bound on the term (Thm 4)"], traces["−bound"]
    assert plus.shape == (2,) and (plus > 0).all() and np.allclose(minus, -plus)
    assert abs(plus.sum() - K) <= 1e-3 * K  # K is shown with 4 significant digits
    lo, hi = traces["smallest eigenvalue"], traces["largest eigenvalue"]
    assert (-plus <= lo).all() and (lo <= hi).all() and (hi <= plus).all()
    captions = " ".join(c.value for c in at.caption)
    assert "Theorem 4 bounds each term separately" in captions and "layer 2:" in captions


# ------------------------------------------------------------------------------------------------ train
def _set_tiny(at: AppTest, epochs: int = 1, limit: int = 800) -> None:
    at.number_input(key="tr_epochs").set_value(epochs)
    at.selectbox(key="tr_width").set_value(16)
    at.radio(key="tr_kind").set_value("standard")
    at.number_input(key="tr_limit").set_value(limit)
    at.number_input(key="tr_eval_samples").set_value(20)


def _wait_job(at: AppTest, timeout: float = 90) -> jobs.TrainJob:
    job = at.session_state["crc_train_job"]
    assert job.wait(timeout), "training did not end in time"
    at.run()
    _ok(at)
    return job


def test_train_one_tiny_epoch_then_pick_it(app_env):
    at = _page("pages/1_Train.py")
    _set_tiny(at)
    at.form_submit_button[0].click().run()
    _ok(at)
    job = _wait_job(at)
    assert job.status == "done", job.error
    assert job.path is not None and job.path.parent == app_env
    assert any("Finished" in s.value for s in at.success)
    assert at.session_state["crc_model_id"] == f"trained:{job.path.name}"
    assert "test accuracy" in _metrics(at) and _charts(at) == 1
    # the trained model is usable on another page
    at.switch_page("pages/4_Hessian.py").run()
    _ok(at)
    assert at.sidebar.selectbox(key="_w_crc_model_id").value == f"trained:{job.path.name}"


def test_train_stop_button_keeps_the_model(app_env):
    at = _page("pages/1_Train.py")
    _set_tiny(at, epochs=100, limit=2000)
    at.form_submit_button[0].click().run()
    _ok(at)
    job = at.session_state["crc_train_job"]
    deadline = time.time() + 60
    while not job.step_events() and time.time() < deadline:  # let it take a few steps
        time.sleep(0.1)
    at.run()
    _ok(at)
    if job.running:
        at.button(key="tr_stop").click().run()
        _ok(at)
    job = _wait_job(at)
    assert job.status == "stopped" and job.path is not None
    assert any("Stopped" in s.value for s in at.success)
    # the second run could start now (the heavy-job lock was released)
    assert not at.form_submit_button[0].disabled


def _infos(at: AppTest) -> list[str]:
    return [i.value for i in at.info]


def test_train_runs_wait_in_line_cancel_and_start_by_themselves(app_env):
    """Three sessions press Start while the first one trains: the second and third wait in line (their position
    shown, Start disabled: one job per session); cancelling the second takes it out and moves the third up; when
    the first run ends, the third starts by itself and saves its model. Nothing is refused."""
    first = _page("pages/1_Train.py")
    _set_tiny(first, epochs=100, limit=2000)
    first.form_submit_button[0].click().run()
    _ok(first)
    job = first.session_state["crc_train_job"]
    others: list[jobs.TrainJob] = []
    try:
        assert job.running, job.status
        second, third = _page("pages/1_Train.py"), _page("pages/1_Train.py")  # other users of the same process
        for at in (second, third):
            _set_tiny(at)
            at.form_submit_button[0].click().run()
            _ok(at)
            assert not _errors(at), _errors(at)
            others.append(at.session_state["crc_train_job"])
        j2, j3 = others
        assert j2.status == j3.status == "waiting"
        assert (j2.ahead(), j3.ahead()) == (1, 2)
        assert any("Waiting for 1 run ahead of yours; it starts automatically" in i for i in _infos(second))
        assert any("Waiting for 2 runs ahead of yours" in i for i in _infos(third))
        assert third.form_submit_button[0].disabled  # one job per session, waiting included
        assert third.button(key="tr_stop").label == "Cancel"

        second.button(key="tr_stop").click().run()  # Cancel: out of the line at once, nothing else happens
        _ok(second)
        assert j2.status == "cancelled" and j2.wait(5) and j2.path is None
        assert any("left the line" in i for i in _infos(second)), _infos(second)
        assert not second.form_submit_button[0].disabled
        third.run()
        _ok(third)
        assert j3.ahead() == 1 and any("Waiting for 1 run ahead of yours" in i for i in _infos(third))

        deadline = time.time() + 60
        while not job.step_events() and time.time() < deadline:  # a few steps, so the first run saves a model
            time.sleep(0.1)
        first.button(key="tr_stop").click().run()
        _ok(first)
        assert job.wait(60) and job.status == "stopped" and job.path is not None
        assert j3.wait(TIMEOUT) and j3.status == "done", (j3.status, j3.error)
        assert j3.started >= job.finished and j3.path is not None
        third.run()
        _ok(third)
        assert any("Finished" in s.value for s in third.success)
        assert sorted(p.name for p in app_env.glob("*.pt")) == sorted([job.path.name, j3.path.name])
    finally:
        for j in (job, *others):
            j.stop()
            assert j.wait(60)


# ------------------------------------------------------------------------------------------------ helpers
def test_registry_describe_and_kinds():
    meta = {"architecture": {"in_dim": 784, "widths": [256], "n_classes": 10, "activation": "softplus"},
            "gamma": 0.01, "crt_eps": 0.5, "metrics": {"test_accuracy": 0.8}}
    ref = registry.ModelRef("shipped:crt.pt", "shipped", Path("crt.pt"), "k")
    assert registry.describe(ref, meta) == "crt · 2x[256] softplus · CRT γ=0.01 ε=0.5 · acc 80% (shipped)"
    assert registry.training_kind({"gamma": 0.0}) == "standard"
    assert registry.training_kind({"gamma": 0.05}) == "gamma"
    assert registry.training_kind({"kind": "crt"}) == "crt"
    assert registry.training_kind({}) == "unknown"


def test_registry_upload_checks():
    with pytest.raises(UnsupportedActivationError, match="smooth"):
        registry.open_upload(H.relu_checkpoint_bytes(), "r.pt")
    with pytest.raises(CheckpointError, match=r"'x\.pt'"):
        registry.open_upload(b"junk", "x.pt")
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="784"):
        registry.open_upload(H.checkpoint_bytes(registry.MLP(100, [8], 10)), "small.pt")


def test_read_upload_keeps_a_28x28_picture():
    img = np.linspace(0, 1, 784).reshape(28, 28)
    x = images.read_upload(H.png_bytes(img), "a.png", invert=False).x
    assert x.shape == (784,) and x.dtype == torch.float32 and abs(float(x[-1]) - 1) < 1e-6
    xi = images.read_upload(H.png_bytes(img), "a.png", invert=True).x
    assert torch.allclose(xi, 1 - x)
    import io

    buf = io.BytesIO()
    np.save(buf, (img * 255).astype(np.uint8))
    assert torch.allclose(images.read_upload(buf.getvalue(), "a.npy", invert=False).x, x, atol=1 / 255)
    small = images.read_upload(H.png_bytes(np.zeros((10, 10))), "s.png", invert=False).x  # any size: resized
    assert small.shape == (784,) and float(small.abs().max()) == 0
    with pytest.raises(DataError, match="empty"):
        images.read_upload(b"", "e.png")


def test_margin_line_matches_the_model():
    torch.manual_seed(0)
    model = registry.MLP(784, [8], 10).eval()
    x0, d = torch.rand(784), torch.randn(784)
    line = margin_maths.margin_line(model, x0, d, 1, 2, s_max=2.0, n=5)
    z = model((x0 + 2.0 * d / d.norm())[None])[0]
    assert abs(line.f_target[-1] - float((z[1] - z[2]).detach())) < 1e-4
    assert line.s[0] == 0 and abs(line.s[-1] - 2.0) < 1e-6


TINY = TrainConfig(widths=(8,), kind="standard", epochs=1, train_limit=300, eval_samples=0, device="cpu")


class _Saver:
    """A save function for TrainJob that records what it saved (and can be held back with ``gate``)."""

    def __init__(self, folder: Path, name: str, gate=None) -> None:
        self.folder, self.name, self.gate, self.results = folder, name, gate, []

    def __call__(self, result):
        if self.gate is not None:
            assert self.gate.wait(60)
        self.results.append(result)
        path = self.folder / f"{self.name}.pt"
        path.write_bytes(b"model")
        return path


def _line(capacity: int = jobs.QUEUE_CAPACITY):
    return jobs.TrainQueue(threading.Lock(), capacity=capacity, poll=0.05)


def _until(cond, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        time.sleep(0.02)
    return cond()


def test_train_job_stop_and_lock_release(tmp_path):
    q = _line()
    cfg = TrainConfig(widths=(8,), kind="standard", epochs=50, train_limit=500, eval_samples=0, device="cpu")
    job = jobs.TrainJob(cfg, name="t")
    save = _Saver(tmp_path, "m")
    job.start(q, save)
    assert job.running and q.current is job
    with pytest.raises(CRCError, match="already started"):
        job.start(q, save)
    assert _until(lambda: bool(job.step_events()))
    job.stop()
    assert job.wait(30)
    assert job.status == "stopped" and save.results and save.results[0].stopped
    assert q.current is None and q.lock.acquire(blocking=False)  # released by the worker
    q.lock.release()


def test_two_jobs_back_to_back_the_second_waits_then_runs(tmp_path):
    q, gate = _line(), threading.Event()
    first, second = jobs.TrainJob(TINY, name="a"), jobs.TrainJob(TINY, name="b")
    s1, s2 = _Saver(tmp_path, "a", gate), _Saver(tmp_path, "b")
    first.start(q, s1)  # its save waits for the gate, so it holds the machine while we look
    second.start(q, s2)
    try:
        assert first.running and first.ahead() is None
        assert second.status == "waiting" and second.waiting and second.active and not second.running
        assert second.ahead() == 1 and q.waiting() == [second] and len(q) == 1
        time.sleep(0.3)  # several polls: it keeps waiting while the lock is held
        assert second.status == "waiting" and not second.step_events()
    finally:
        gate.set()
    assert first.wait(60) and first.status == "done", first.error
    assert second.wait(60) and second.status == "done", second.error
    assert second.started >= first.finished > 0
    assert len(s1.results) == len(s2.results) == 1
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["a.pt", "b.pt"]
    assert not q.waiting() and q.current is None and not q.lock.locked()


def test_cancel_a_waiting_job_and_the_next_moves_up(tmp_path):
    """Four runs wait while another heavy job holds the machine; the second is cancelled (out of the line at once,
    the ones behind move up); when the machine frees, the other three run one at a time in the order they came."""
    q = _line()
    assert q.lock.acquire()  # another heavy job (e.g. a curvature survey) holds the machine
    line = [jobs.TrainJob(TINY, name=n) for n in "abcd"]
    savers = [_Saver(tmp_path, n) for n in "abcd"]
    try:
        for j, s in zip(line, savers):
            j.start(q, s)
        a, b, c, d = line
        assert [j.status for j in line] == ["waiting"] * 4 and [j.ahead() for j in line] == [1, 2, 3, 4]
        b.stop()  # Cancel: out of the line at once
        assert b.status == "cancelled" and b.ahead() is None and not b.active
        assert q.waiting() == [a, c, d] and (c.ahead(), d.ahead()) == (2, 3)
        assert b.wait(5)  # its worker ends on its own
    finally:
        q.lock.release()
    for j in (a, c, d):
        assert j.wait(60) and j.status == "done", j.error
    assert a.finished <= c.started and c.finished <= d.started  # first come, first served, one at a time
    assert [len(s.results) for s in savers] == [1, 0, 1, 1]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["a.pt", "c.pt", "d.pt"]
    assert b.status == "cancelled" and not q.waiting() and not q.lock.locked()


def test_an_exception_in_a_run_releases_the_lock_for_the_next(tmp_path, monkeypatch):
    real, gate = jobs.train, threading.Event()

    def flaky(config, **kw):
        if config.seed == 13:
            assert gate.wait(60)
            raise RuntimeError("boom")
        return real(config, **kw)

    monkeypatch.setattr(jobs, "train", flaky)
    q = _line()
    first = jobs.TrainJob(dataclasses.replace(TINY, seed=13))
    second = jobs.TrainJob(TINY)
    s1, s2 = _Saver(tmp_path, "first"), _Saver(tmp_path, "second")
    first.start(q, s1)
    second.start(q, s2)
    assert second.status == "waiting"
    gate.set()
    assert first.wait(30) and first.status == "error" and "RuntimeError: boom" in first.error
    assert second.wait(60) and second.status == "done", second.error
    assert not s1.results and len(s2.results) == 1 and not q.lock.locked()


def test_the_line_is_capped_with_a_clear_message(tmp_path):
    q = _line(capacity=2)
    assert q.lock.acquire()
    line, extra = [jobs.TrainJob(TINY) for _ in range(2)], jobs.TrainJob(TINY)
    try:
        for j in line:
            j.start(q, _Saver(tmp_path, "x"))
        with pytest.raises(CRCError, match=r"line for training is full: 2 runs are already waiting .*at most 2"):
            extra.start(q, _Saver(tmp_path, "x"))
        assert extra.status == "created" and q.waiting() == line
        line[0].stop()  # a place frees up: the next one is accepted
        extra.start(q, _Saver(tmp_path, "x"))
        assert q.waiting() == [line[1], extra]
    finally:
        for j in (*line, extra):
            j.stop()
        q.lock.release()
    assert all(j.wait(10) and j.status == "cancelled" for j in (*line, extra))
    assert not list(tmp_path.glob("*.pt"))


def test_a_waiting_job_whose_session_is_gone_leaves_the_line(tmp_path):
    q = _line()
    assert q.lock.acquire()
    gone, kept = jobs.TrainJob(TINY), jobs.TrainJob(TINY)
    try:
        gone.start(q, _Saver(tmp_path, "gone"), session_alive=lambda: False, orphan_after=0.2)
        kept.start(q, _Saver(tmp_path, "kept"), session_alive=lambda: True, orphan_after=0.2)
        assert kept.ahead() == 2
        assert gone.wait(10) and gone.status == "cancelled" and "session" in gone.error
        assert q.waiting() == [kept] and kept.ahead() == 1
    finally:
        q.lock.release()
    assert kept.wait(60) and kept.status == "done", kept.error
    assert [p.name for p in tmp_path.glob("*.pt")] == ["kept.pt"]


# ------------------------------------------------------------------------------------------------ walkthrough
def _spec(at: AppTest, title: str) -> dict:
    """The Plotly spec of the chart whose title contains ``title``."""
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(s for s in specs if title in str(s["layout"].get("title", {}).get("text", "")))


def test_closest_boundary_point_is_the_closest_over_all_targets():
    """Finding 1 / issue 24 Major 2 (the maths): x_b is on the decision boundary (margin ≈ 0, another class ties),
    no farther than the certifier's closest boundary point over ALL targets nor the attack's closest prediction
    change, and never inside the certified ball."""
    from app_lib.closest_point import closest_boundary, margin64
    from crc_core.certify import certify
    from crc_core.checkpoints import load_checkpoint
    from crc_core.compare import attack_upper_bound

    model, _ = load_checkpoint(H.model_dir() / "small-crt.pt")
    ds = load_dataset("embedded", "test", limit=40)
    batch = certify(model, ds.images, ds.labels)
    names = [str(k) for k in range(10)]
    seen = 0
    for i in range(len(ds)):
        if not bool(batch.correct[i]) or seen >= 6:
            continue
        row = dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[i:i + 1] for f in dataclasses.fields(batch)
                                            if isinstance(getattr(batch, f.name), torch.Tensor)})
        pred = int(batch.pred[i])
        b = closest_boundary(model, ds.images[i], row, names)
        attack = float(attack_upper_bound(model, ds.images[i:i + 1], batch.pred[i:i + 1])[0])
        if b is None:
            assert not np.isfinite(float(batch.upper[i])) and not np.isfinite(attack)
            continue
        assert b.distance <= min(float(batch.upper[i]), attack) * (1 + 1e-6)  # the closest of every search
        assert b.distance >= float(batch.radius[i]) - 1e-6  # a boundary point is never inside the certified ball
        assert abs(float((b.x_b.double() - ds.images[i].double()).norm()) - b.distance) <= 1e-5 * (1 + b.distance)
        m = float(margin64(model, b.x_b[None], pred)[0])
        assert abs(m) <= 1e-4, m  # on the boundary
        z = model(b.x_b[None])[0].detach().double()
        assert b.cls != pred and float(z[b.cls]) >= float(z[pred]) - 1e-3 * (1 + float(z.abs().max()))
        seen += 1
    assert seen >= 5


def test_certify_tells_one_story(app_env):
    """Finding 1 (the page): the distance of x_b shown equals the interval's upper end, for every image tried."""
    import re

    at = _page("pages/2_Certify.py")
    checked = 0
    for i in range(8):
        at.button(key=f"pick_{i}").click().run()
        _ok(at)
        interval = [x.value for x in at.info if "lies in" in x.value]
        point = [m.value for m in at.markdown if "The closest boundary point found" in m.value]
        if not interval:
            continue
        upper = re.search(r"\[([\d.]+), ([\d.]+)\]", interval[0])[2]
        assert point and re.search(r"distance ([\d.]+)", point[0])[1] == upper, (i, interval, point)
        checked += 1
    assert checked >= 3


def test_refused_image_upload_clears_the_previous_result(app_env):
    """Finding 2: a non-image upload gets a plain sentence (no Python internals) and the previous upload's
    certificate does not stay on screen: the page goes back to the picked test image."""
    at = _page("pages/2_Certify.py")
    _upload_shoe(at)
    at.file_uploader(key="crc_upload_image").set_value(("notes.png", b"just some notes", "image/png"))
    at.run()
    _ok(at)
    errs = " ".join(_errors(at))
    assert "notes.png is not an image file this app can read" in errs
    assert "BytesIO" not in errs and "0x" not in errs and "cannot identify" not in errs
    assert not any("uploaded image" in s.value for s in at.subheader)
    assert any(s.value.endswith("test image #0") for s in at.subheader)
    assert not [t for t in at.toggle if t.label == "Analyse the uploaded image"]


def test_misclassified_image_radius_chart_names_no_certificate(app_env):
    """Finding 3: a misclassified image's radius chart says there is nothing to certify."""
    at = _page("pages/2_Certify.py")
    at.selectbox(key="crc_f_outcome").set_value("wrong").run()
    picks = [b.key for b in at.button if b.key and b.key.startswith("pick_")]
    at.button(key=picks[0]).click().run()
    _ok(at)
    spec = _spec(at, "Certified radius against each other class")
    text = str(spec["layout"].get("title")) + " ".join(a["text"] for a in spec["layout"].get("annotations", []))
    assert "smallest (the certificate)" not in text and "nothing to certify" in text


def test_train_with_invalid_fields_says_why_it_did_not_start(app_env):
    """Finding 6: out-of-range fields (epochs −2, γ 99) no longer make Start do nothing silently."""
    at = _page("pages/1_Train.py")
    at.number_input(key="tr_epochs").set_value(-2)
    at.number_input(key="tr_gamma").set_value(99.0)
    at.form_submit_button[0].click().run()
    _ok(at)
    errs = " ".join(_errors(at))
    assert "Not started" in errs and "Epochs must be a whole number from 1 to 100" in errs and "γ must be" in errs
    assert "crc_train_job" not in at.session_state
    assert at.number_input(key="tr_epochs").value == 3 and at.number_input(key="tr_gamma").value == 0.01


def test_curvature_page_waits_its_turn_during_a_heavy_job(app_env):
    """Finding 7: while a training run holds the machine, the page shows the bounds at once, says that the
    measurement waits its turn (no refusal, no error), and measures by itself once the machine is free."""

    lock = heavy_jobs.heavy_lock()
    assert lock.acquire(timeout=60)
    try:
        at = _page("pages/3_Curvature.py")
        at.select_slider(key="_w_crc_curv_n").set_value(100).run()  # a survey nobody has measured yet
        _ok(at)
        assert not _errors(at), _errors(at)
        assert any("waits its turn" in i.value for i in at.info)
        m = _metrics(at)
        assert float(m["mean K_ub (Thm 3)"]) > 0 and m["mean K_lb (measured)"] == "—"
    finally:
        lock.release()
    at.run()
    _ok(at)
    assert not any("waits its turn" in i.value for i in at.info)
    assert float(_metrics(at)["mean K_lb (measured)"]) > 0 and _charts(at) >= 5


def test_picker_labels_tell_trained_models_apart():
    """Finding 10: models trained in the app are labelled by what distinguishes them, not a cut-off file name."""
    meta = {"architecture": {"widths": [256], "activation": "softplus"}, "kind": "crt", "gamma": 0.01,
            "crt_eps": 0.5, "metrics": {"test_accuracy": 0.81}, "label": "2x[256] softplus, CRT"}
    ref = registry.ModelRef("trained:20261130-085243-2x-256-softplus-CRT.pt", "trained",
                            Path("20261130-085243-2x-256-softplus-CRT.pt"), "k")
    saved_on, next_day = datetime.date(2026, 11, 30), datetime.date(2026, 12, 1)  # the clock is injected: any date
    label = registry.describe(ref, meta, today=saved_on)  # saved today: the time alone
    assert label == "CRT γ=0.01 ε=0.5 · 08:52:43 · acc 81% · 2x[256] softplus (trained)"  # what tells runs apart first
    later = registry.describe(ref, meta, today=next_day)  # any other day: the date too
    assert later == "CRT γ=0.01 ε=0.5 · Nov 30 08:52 · acc 81% · 2x[256] softplus (trained)"
    assert registry.describe(ref, meta) == (label if datetime.date.today() == saved_on else later)  # the real clock
    named = registry.ModelRef("trained:20261130-085243-my-run.pt", "trained", Path("20261130-085243-my-run.pt"), "k")
    assert registry.describe(named, meta, today=saved_on).startswith("CRT γ=0.01 ε=0.5 · 08:52:43 · my-run · acc 81%")
    assert registry.describe(named, meta, today=next_day).startswith("CRT γ=0.01 ε=0.5 · Nov 30 08:52 · my-run · ")


def test_text_file_named_pt_gets_one_plain_sentence(app_env):
    """Finding 11: no doubled "refused … Refused to load", no "malicious" for a text file."""
    with pytest.raises(CheckpointError) as info:
        registry.open_upload(b"just a text file\n" * 3, "fake.pt")
    msg = str(info.value)
    assert "'fake.pt' is not a readable PyTorch file" in msg and "malicious" not in msg and "Refused" not in msg
    at = _page("app.py")
    at.file_uploader(key="crc_upload_ckpt").set_value(("fake.pt", b"fake checkpoint\n", "application/octet-stream"))
    at.run()
    _ok(at)
    errs = " ".join(_errors(at))
    assert errs.startswith("Upload refused: 'fake.pt' is not") and errs.lower().count("refused") == 1


def test_comparison_defaults_to_contrasting_training_kinds():
    """Finding 12: the default comparison contrasts standard with CRT/γ training (the paper's Figure 1), even when
    newer trained models come first in the picker."""
    from app_lib.curvature_view import contrasting_models

    arch = {"widths": [256], "activation": "softplus"}
    metas = {f"trained:{i}": {"kind": "crt", "architecture": arch} for i in range(5)}
    metas |= {"shipped:crt-2x256.pt": {"kind": "crt", "architecture": arch},
              "shipped:standard-2x256.pt": {"kind": "standard", "architecture": arch},
              "shipped:gamma-2x256.pt": {"kind": "gamma", "architecture": arch},
              "shipped:standard-3x256.pt": {"kind": "standard", "architecture": {"widths": [256, 256]}}}
    chosen = contrasting_models("trained:0", metas)
    assert chosen[:3] == ["trained:0", "shipped:standard-2x256.pt", "shipped:gamma-2x256.pt"] and len(chosen) == 4
    assert {registry.training_kind(metas[i]) for i in chosen} == {"crt", "standard", "gamma"}
