"""README.md's library quick start runs as written (from the repository root) and gives what its comments say."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

import crc_core

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Library quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_public_face_is_the_functions():
    for name in ("certify", "load_checkpoint", "load_dataset", "train", "compare_certificates", "curvature_bounds",
                 "import_checkpoint"):
        assert callable(getattr(crc_core, name)) and not isinstance(getattr(crc_core, name), type(os)), name
    assert isinstance(crc_core.MLP, type)


def test_readme_quick_start_runs(monkeypatch, capsys):
    code = _quick_start()
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # our own README
    cert, res = scope["cert"], scope["res"]
    assert cert.radius.shape == (20,) and bool((cert.radius[~cert.correct] == 0).all())
    assert cert.correct.float().mean() > 0.5 and bool((cert.radius[cert.correct] > 0).all())
    assert not res.violation.any()  # radii of a batch of 4 vs 20 agree within the float32 band (docs/certificates.md)
    assert torch.allclose(res.radius("crc"), cert.radius[:4].double(), rtol=0, atol=1e-5)
    assert scope["K"].shape == (90,) and bool((scope["K"] > 0).all())
    assert scope["run"].metrics["certified_accuracy"] is not None
    assert "radius_crc" in capsys.readouterr().out
