"""Shared by the app tests (AppTest and browser): small real models saved as checkpoints in a folder.

The app reads its models from ``$CRC_MODELS_DIR`` and saves trained ones to ``$CRC_RUNS_DIR``; tests point both at
temporary folders so they never depend on (or write to) the repository's assets/ and runs/.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from crc_core.checkpoints import save_checkpoint
from crc_core.models import MLP
from crc_core.train import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "assets" / "models"


def _train_small(widths: tuple[int, ...], kind: str, seed: int = 0) -> tuple[MLP, dict]:
    cfg = TrainConfig(widths=widths, kind=kind, gamma=0.02, epochs=1, train_limit=3000, eval_samples=0,
                      seed=seed, device="cpu")
    res = train(cfg)
    meta = {"dataset": "embedded", "kind": kind, "gamma": cfg.gamma_used, "crt_eps": None, "epochs": 1,
            "metrics": res.metrics, "train_config": cfg.to_dict(), "command": "tests/app_helpers.py"}
    return res.model, meta


@functools.cache
def model_dir() -> Path:
    """A folder with three small checkpoints (built once per test session, ~2 s on a CPU):

    ``small-crt.pt`` 2x[32] softplus γ-regularized (the picker's default: its name contains "crt"),
    ``small-standard.pt`` 2x[32] softplus standard, ``small-deep.pt`` 3x[24,24] softplus standard.
    """
    folder = Path(tempfile.mkdtemp(prefix="crc-app-models-"))
    with torch.random.fork_rng():
        for name, widths, kind in (("small-crt", (32,), "gamma"), ("small-standard", (32,), "standard"),
                                   ("small-deep", (24, 24), "standard")):
            model, meta = _train_small(widths, kind)
            save_checkpoint(folder / f"{name}.pt", model, meta)
    return folder


def checkpoint_bytes(model: MLP, meta: dict | None = None) -> bytes:
    """A valid checkpoint file's bytes (written through save_checkpoint)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "m.pt", model, meta or {"dataset": "embedded"})
        return path.read_bytes()


def relu_checkpoint_bytes() -> bytes:
    """A 3-layer ReLU checkpoint: CRC refuses it (no curvature bound) and, unlike a 2-layer one, App. G does too."""
    torch.manual_seed(0)
    return checkpoint_bytes(MLP(784, [16, 16], 10, "relu"))


def state_dict_bytes() -> bytes:
    """A plain torch.save(state_dict): a real PyTorch file, but not one of ours."""
    buf = io.BytesIO()
    torch.save(MLP(784, [16], 10).state_dict(), buf)
    return buf.getvalue()


def malicious_pickle_bytes(marker: Path) -> bytes:
    """A pickle that would create ``marker`` if it were ever unpickled with code execution."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return pickle.dumps({"format": "crc-explorer-checkpoint", "payload": Evil()})


def png_bytes(img: np.ndarray) -> bytes:
    """(H, W) floats in [0, 1] -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def streamlit_server(models: Path, runs: Path, log_path: Path, *, start_timeout: float = 90.0
                     ) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run app.py` on a free local port with ``models`` / ``runs`` folders and 1 torch thread; yields
    (url, process) once the health endpoint answers, and stops the server afterwards. Fails the test when the
    server exits or does not answer within ``start_timeout`` seconds (its output is in ``log_path``)."""
    import pytest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, CRC_MODELS_DIR=str(models), CRC_RUNS_DIR=str(runs), CRC_TORCH_THREADS="1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + start_timeout
            while not healthy(url):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"streamlit did not start (exit code {proc.poll()}); see {log_path}")
                time.sleep(0.3)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def healthy(url: str) -> bool:
    """True when the Streamlit server at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False


APPTEST_TIMEOUT = 180  # s per script run in AppTest: torch imports and certificates on a busy 2-core CI box


def assert_no_exception(at) -> None:
    """No uncaught exception in an AppTest run (error boxes allowed: some tests expect them)."""
    assert not at.exception, [e.value for e in at.exception]


def assert_clean(at) -> None:
    """No exception and no error box in an AppTest run."""
    assert_no_exception(at)
    assert not at.error, [e.value for e in at.error]


def error_texts(at) -> list[str]:
    """The texts of the error boxes of an AppTest run."""
    return [e.value for e in at.error]


def open_app(path: str = "app.py", model: str | None = None, *, timeout: float = APPTEST_TIMEOUT):
    """An AppTest opened at the entry point (as a browser does), with ``model`` picked in the sidebar when given,
    then switched to ``path``; no run raised (error boxes are the caller's to check)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout)
    at.run()
    assert_no_exception(at)
    if model is not None:
        at.sidebar.selectbox(key="_w_crc_model_id").set_value(model).run()
        assert_no_exception(at)
    if path != "app.py":
        at.switch_page(path).run()
        assert_no_exception(at)
    return at


def open_page(path: str, *, timeout: float = APPTEST_TIMEOUT):
    """An AppTest that ran Home, then switched to ``path`` (e.g. "pages/5_Compare.py"); both runs clean."""
    at = open_app(path, timeout=timeout)
    assert_clean(at)
    return at


def use_small_models(monkeypatch, tmp_path: Path) -> Path:
    """Point the app at the small test checkpoints ($CRC_MODELS_DIR) and a fresh runs folder under ``tmp_path``
    ($CRC_RUNS_DIR); -> tmp_path. The body of the ``app_env`` fixture of the AppTest modules."""
    from app_lib import registry

    monkeypatch.setenv(registry.MODELS_ENV, str(model_dir()))
    monkeypatch.setenv(registry.RUNS_ENV, str(tmp_path / "runs"))
    return tmp_path


@contextlib.contextmanager
def shipped_app(tmp_path_factory) -> Iterator[str]:
    """A running app (the shipped models when present, else the small test ones; runs in a temporary folder) ->
    its URL, for a module's browser tests."""
    models = SHIPPED if any(SHIPPED.glob("*.pt")) else model_dir()
    runs = tmp_path_factory.mktemp("runs")
    with streamlit_server(models, runs, tmp_path_factory.mktemp("log") / "streamlit.log") as (url, _proc):
        yield url
