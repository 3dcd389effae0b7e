"""Issue 24, Majors 2 and 3 on the Certify page: x_b is a point on the decision boundary only and the upper end of
the distance is one number everywhere it appears (section 2, the slice, section 5's chart); "attack provably
worst case" says which targets it is about."""

from __future__ import annotations

import json
import re
from pathlib import Path

import app_helpers as H
import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_lib import catalogue
from app_lib.certify_view import Attack

TIMEOUT = 120
PAGE = "pages/2_Certify.py"


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    return H.use_small_models(monkeypatch, tmp_path)


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_one_upper_end_and_x_b_only_on_the_boundary(app_env):
    at = AppTest.from_file(str(H.REPO / PAGE), default_timeout=TIMEOUT)
    at.run()
    H.assert_clean(at)
    checked = 0
    for i in (1, 2, 4, 5, 7):  # correctly classified by small-crt
        at.button(key=f"pick_{i}").click().run()
        H.assert_clean(at)
        radius = float(next(m.value for m in at.metric if m.label == "certified radius"))
        specs = _specs(at)
        methods = next(s for s in specs if "Every certificate" in str(s["layout"].get("title", "")))
        drawn = [a["text"] for a in methods["layout"].get("annotations", []) if "closest found" in a["text"]]
        slice_ = next(s for s in specs if any("certified ball" in str(t.get("name", "")) for t in s["data"]))
        marks = [t for t in slice_["data"] if t.get("mode") == "markers" and "x0" not in str(t.get("name", ""))]
        assert len(marks) == 1
        interval = [x.value for x in at.info if "lies in" in x.value]
        if not interval:  # no point where another class wins: nothing is called x_b, and no upper end is drawn
            assert "x_b" not in marks[0]["name"] and not drawn
            continue
        upper = float(re.search(r"\[([\d.]+), ([\d.]+)\]", interval[0])[2])
        point = next(m.value for m in at.markdown if "The closest boundary point found" in m.value)
        assert float(re.search(r"distance ([\d.]+)", point)[1]) == upper
        assert drawn == [f"closest found: {upper:.3f}"]  # section 5 shows the same number
        assert "closest boundary point x_b" in marks[0]["name"]
        xb = float(np.asarray(marks[0]["x"], float)[0])
        assert abs(xb - upper) <= 5e-4 and xb >= radius - 5e-5  # never inside the certified disc
        checked += 1
    assert checked >= 3


def _attack(proved: list[bool], strongest: int) -> Attack:
    table = pd.DataFrame({"target": ["a", "b", "c"][:len(proved)], "provably worst case": proved})
    return Attack(table, strongest, False, proved[0], 1.0, torch.zeros(3))


def test_provably_worst_case_names_the_targets_it_is_about():
    names = ["zero", "one", "two", "three"]
    assert _attack([True, True, True], 1).worst_case_words(names) == ("yes", "for every target")
    assert _attack([False, False], 1).worst_case_words(names) == ("no", "for no target")
    value, note = _attack([True, False, True], 2).worst_case_words(names)
    assert value == "not for all" and "strongest target, two" in note
    value, note = _attack([False, True, True], 2).worst_case_words(names)
    assert value == "not for all" and "2 of 3" in note


def test_curvature_bounds_show_progress_once_per_model(monkeypatch):
    """Issue 24 Major 4: the all-pair curvature bounds (~20 s for a 2×[1024] net on a small CPU) are computed one
    class at a time under a progress bar that says how far it is, equal to one all-pair call, and only once."""
    from crc_core.bounds import curvature_bounds
    from crc_core.checkpoints import load_checkpoint

    shown: list[tuple[float, str]] = []

    class Bar:
        def progress(self, value: float, text: str = "") -> None:
            shown.append((value, text))

        def empty(self) -> None:
            shown.append((-1.0, "emptied"))

    monkeypatch.setattr(catalogue.st, "progress", lambda value, text="": (shown.append((value, text)), Bar())[1])
    model, _ = load_checkpoint(H.model_dir() / "small-deep.pt")
    key = "test-progress-small-deep"
    catalogue._bounds_store().pop((key, "auto", "cpu"), None)
    got = catalogue.bounds_table(key, "auto", "cpu", model)
    ref = curvature_bounds(model, method="auto")
    assert torch.equal(got.y, ref.y) and torch.equal(got.t, ref.t)
    for f in ("m", "M", "K"):
        assert torch.allclose(getattr(got, f), getattr(ref, f), rtol=1e-12, atol=0)
    values = [v for v, _ in shown if v >= 0]
    assert values == sorted(values) and values[-1] == 1.0 and len(values) == model.n_classes + 1
    assert "class pairs 90 of 90" in shown[-2][1] and shown[-1][1] == "emptied"
    shown.clear()
    assert catalogue.bounds_table(key, "auto", "cpu", model) is got and not shown
