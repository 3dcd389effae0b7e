"""`pip install .` works from anywhere: the installed crc_core finds its embedded dataset (package data through
importlib.resources, not the repository) and certifies an image, from an unrelated working directory. Offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from pathlib import Path
import torch
import crc_core
from crc_core import data
from crc_core.certify import certify
from crc_core.checkpoints import save_checkpoint
from crc_core.cli import main
import crc_core.baselines.relu_quadratic, crc_core.solvers, crc_core.sweep  # subpackages are installed
from crc_core.models import MLP

target = Path(sys.argv[1]).resolve()
assert Path(crc_core.__file__).resolve().is_relative_to(target), crc_core.__file__
assert data.EMBEDDED_DIR.resolve().is_relative_to(target / "crc_core" / "assets"), data.EMBEDDED_DIR
ds = data.load_dataset("embedded", "test", limit=1)
torch.manual_seed(0)
model = MLP(784, [16], 10, "softplus")
cert = certify(model, ds.images, ds.labels)
save_checkpoint("m.pt", model, {"dataset": "embedded"})
code = main(["certify", "--checkpoint", "m.pt", "--limit", "1", "--no-attacks", "--threads", "1"])
print(json.dumps({"n": len(ds), "radius": float(cert.radius[0]), "cli": code}))
"""


@pytest.mark.timeout(120)
def test_pip_install_then_certify_from_elsewhere(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building without isolation needs setuptools in this environment")
    src = tmp_path / "src"  # a copy, so the build writes nothing into the repository
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "crc_core", src / "crc_core", ignore=ignore)
    shutil.copytree(REPO / "assets" / "data", src / "assets" / "data", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    target = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "PIP_FIND_LINKS")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "crc_core" / "assets" / "data" / "fashion-mnist-subset" / "t10k-images-idx3-ubyte.gz").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(target)], cwd=elsewhere, capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(target), "CRC_TORCH_THREADS": "1"}, timeout=100)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["n"] == 1 and result["radius"] >= 0 and result["cli"] == 0
    assert "clean accuracy" in run.stdout  # the CLI's summary


def test_every_package_is_listed_in_pyproject() -> None:
    """A new folder of modules under crc_core/ must be in [tool.setuptools] packages, or `pip install .` drops it."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {p.parent.relative_to(REPO).as_posix().replace("/", ".") for p in (REPO / "crc_core").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert folders <= listed, f"add to pyproject.toml packages: {sorted(folders - listed)}"
