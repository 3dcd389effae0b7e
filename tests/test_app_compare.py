"""Certificates compared in the app: the Certify page's per-image chart, the Compare page (test-set job with
progress, stop and CSV; the Table 5b view), and the view models and figures behind them (AppTest, no browser)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from app_lib import catalogue, heavy_jobs, registry, state
from app_lib import compare_figures as cf
from app_lib import compare_view as cv
from crc_core.data import load_dataset
from crc_core.models import MLP

TIMEOUT = H.APPTEST_TIMEOUT
PAGE = "pages/5_Compare.py"


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv(registry.MODELS_ENV, str(H.model_dir()))
    monkeypatch.setenv(registry.RUNS_ENV, str(tmp_path / "runs"))
    return tmp_path


def _job(at: AppTest) -> cv.TestSetJob:
    return at.session_state[cv.JOB_KEY][1]


def test_compare_page_runs_the_test_set_with_progress_and_csv(app_env):
    at = H.open_page(PAGE)
    assert any("Start" in i.value for i in at.info)
    assert set(at.multiselect(key="cmp_methods").value) == {"crc", "crown", "lipschitz", "smoothing"}
    at.number_input(key="cmp_n").set_value(16)
    at.multiselect(key="cmp_methods").set_value(["crc", "crown", "lipschitz", "smoothing"])
    at.button(key="cmp_start").click().run()
    H.assert_clean(at)
    job = _job(at)
    assert job.wait(TIMEOUT) and job.status == "done" and job.n_done == 16
    at.run()
    H.assert_clean(at)
    assert any("Finished: 16 of 16" in c.value for c in at.caption)
    assert any("smoothed classifier" in c.value for c in at.caption)  # smoothing is labelled
    frame = job.frame()
    for m in ("crc", "crown", "lipschitz", "smoothing"):
        assert f"radius_{m}" in frame
    ok = frame["correct"].to_numpy(bool)
    for m in ("crc", "crown", "lipschitz"):  # the sound radii stay below the attack
        assert (frame.loc[ok, f"radius_{m}"] <= frame.loc[ok, "attack_upper"] + 1e-9).all()
    assert len(at.get("download_button")) == 1
    assert len(at.get("plotly_chart")) >= 1


def _run_job(at: AppTest, each: bool) -> tuple[cv.TestSetJob, pd.DataFrame]:
    """Start the test-set job with the "Time each image on its own" toggle at ``each``; the job and the per-image
    table the page shows (the CSV's columns) once it is done."""
    at.toggle(key="cmp_each").set_value(each)
    at.button(key="cmp_start").click().run()
    job = _job(at)
    assert job.wait(TIMEOUT) and job.status == "done", job.error
    at.run()
    H.assert_clean(at)
    return job, next(d.value for d in at.dataframe if "index" in d.value.columns)


def test_compare_page_times_each_image_on_its_own_with_the_same_radii(app_env):
    """Issue 24: "Time each image on its own" certifies every image alone: one timing per image, named per image
    (time_<m>_s_this_image), and the same radii as the chunked run, whose time columns keep the chunk-mean name."""
    at = H.open_page(PAGE)
    at.number_input(key="cmp_n").set_value(8)
    at.multiselect(key="cmp_methods").set_value(["crc", "lipschitz"])
    job, alone = _run_job(at, True)
    assert job.each_image and job.n_done == 8
    for m in ("crc", "lipschitz"):
        assert f"time_{m}_s_this_image" in alone and not any("mean_of_chunk" in c for c in alone.columns)
        assert len(alone[f"time_{m}_s_this_image"]) == 8 and (alone[f"time_{m}_s_this_image"] > 0).all()
    job2, chunked = _run_job(at, False)  # the other timing: nothing reused, every image certified again
    assert not job2.each_image and job2 is not job and job2.frames[0] is not job.frames[0]
    for m in ("crc", "lipschitz"):
        assert f"time_{m}_s_per_image_mean_of_chunk" in chunked and f"time_{m}_s_this_image" not in chunked
        np.testing.assert_allclose(alone[f"radius_{m}"], chunked[f"radius_{m}"], rtol=1e-6, atol=0)
    assert (alone["correct"] == chunked["correct"]).all() and (alone["pred_name"] == chunked["pred_name"]).all()


def test_compare_page_stop_keeps_what_is_done(app_env):
    at = H.open_page(PAGE)
    at.number_input(key="cmp_n").set_value(2000)
    at.multiselect(key="cmp_methods").set_value(["crown"])
    lock = heavy_jobs.heavy_lock()
    with lock:  # the machine is busy: the job waits for it, and a stop while waiting ends it
        at.button(key="cmp_start").click().run()
        H.assert_clean(at)
        job = _job(at)
        assert job.status == "waiting"
        assert any("waiting for the machine" in (p.proto.text or "") for p in at.get("progress"))
        at.button(key="cmp_stop").click().run()
    assert job.wait(30) and job.status == "stopped" and job.n_done == 0
    at.button(key="cmp_start").click().run()  # again, stopped while running: the chunks done so far stay
    job = _job(at)
    while job.n_done == 0 and not job.done:
        job.wait(0.2)
    job.stop()
    assert job.wait(60) and job.status == "stopped" and 0 < job.n_done < 2000
    at.run()
    H.assert_clean(at)
    assert any(f"Stopped: {job.n_done} of 2000" in c.value for c in at.caption)


def test_compare_page_table_5b_view(app_env):
    at = H.open_page(PAGE)
    at.multiselect(key="cmp_models").set_value(["shipped:small-standard.pt", "shipped:small-deep.pt"])
    at.number_input(key="cmp_n5").set_value(8)
    at.button(key="cmp_table").click().run()
    H.assert_clean(at)
    tables = [d.value for d in at.dataframe]
    mine = next(t for t in tables if "model" in t.columns)
    assert len(mine) == 2 and {"CRC (curvature)", "CROWN", "first-order (Lipschitz)", "CRC / CROWN"} <= set(mine)
    assert (mine["CRC (curvature)"].astype(float) > 0).all() and (mine["CROWN"].astype(float) > 0).all()
    assert "None" not in mine.to_string() and "nan" not in mine.to_string().lower()
    paper = next(t for t in tables if "network" in t.columns)
    assert paper.loc[(paper["training"] == "CRT, 0.01"), "CRC"].iloc[0] == pytest.approx(1.54673)


def test_table_5b_steps_report_progress_and_a_larger_n_reuses_what_is_done(app_env, monkeypatch):
    """Issue 24 Major 4: Table 5b reports progress step by step (what runs, how far); going from N = 8 to 12
    certifies only the 4 new images (done steps are kept, so a stopped run goes on from there)."""
    import crc_core.compare as compare

    calls: list[int] = []
    real = compare.compare_certificates

    def counting(model, x, *a, **k):
        calls.append(x.shape[0])
        return real(model, x, *a, **k)

    monkeypatch.setattr(cv, "compare_certificates", counting)
    cv._table_chunk.clear()  # any test order: nothing certified before
    seen: list[tuple[int, int, str]] = []
    labels = catalogue.catalogue_labels()
    mid = "shipped:small-standard.pt"
    cv.models_table([mid], labels, "embedded", 8, torch.device("cpu"), progress=lambda *p: seen.append(p))
    assert [p[:2] for p in seen] == [(1, 2), (2, 2)] and "model 1 of 1" in seen[-1][2]
    assert "8 of 8 images" in seen[-1][2]
    assert sum(calls) == 8
    calls.clear()
    cv.models_table([mid], labels, "embedded", 12, torch.device("cpu"))
    assert calls == [4]  # only the new images


def test_certify_page_shows_every_method_against_the_attack(app_env):
    at = H.open_page("pages/2_Certify.py")
    assert any("Every certificate for this image" in s.value for s in at.subheader)
    for i in range(8):  # the first correctly classified gallery image
        at.button(key=f"pick_{i}").click().run()
        H.assert_clean(at)
        if not any("Misclassified: every" in x.value for x in at.info):
            break
    else:
        pytest.fail("no correctly classified image among the first 8")
    text = " ".join(c.value for c in at.caption)
    assert "smoothed classifier" in text and "the upper end" in text and "1 − α" in text


# ------------------------------------------------------------------------------------------------ view models
def _relu(widths: list[int]) -> MLP:
    torch.manual_seed(0)
    return MLP(784, widths, 10, "relu")


def test_relu_routing_notes_and_methods():
    assert cv.main_certificate_note(MLP(784, [8], 10, "softplus")) is None
    two, three = _relu([16]), _relu([16, 16])
    assert "App. G" in cv.main_certificate_note(two) and "ReLU" in cv.main_certificate_note(two)
    assert "Only the other certificates" in cv.main_certificate_note(three)
    assert cv.applicable_methods(two) == ("crown", "lipschitz", "smoothing", "relu-quadratic")
    assert cv.applicable_methods(three) == ("crown", "lipschitz", "smoothing")


def test_test_set_job_on_a_relu_model_and_its_curves():
    ds = load_dataset("embedded", "test", limit=10)
    job = cv.TestSetJob(_relu([16]), ds.images.reshape(-1, 784), ds.labels, ("relu-quadratic", "lipschitz"),
                        threading.Lock()).start()
    assert job.wait(120) and job.status == "done" and job.n_done == 10, job.error
    frame = job.frame()
    assert (frame["radius_relu-quadratic"] <= frame["attack_upper"] + 1e-9).all()
    rhos = np.linspace(0, 1, 11)
    curves = cv.accuracy_curves(frame, job.methods, rhos)
    assert curves["lipschitz"][0] == pytest.approx(frame["correct"].mean())
    assert all((np.diff(c) <= 0).all() for c in curves.values())  # certified accuracy falls with ρ


def test_figures_keep_smoothing_apart_and_labelled():
    fig = cf.methods_vs_attack({"crc": 0.5, "crown": 0.4}, cv.LABELS, attack_upper=0.6, smoothing=0.45, rho=0.5)
    titles = [a.text for a in fig.layout.annotations]
    assert any("smoothed" in t and "1 − α" in t for t in titles)
    assert [tr.yaxis for tr in fig.data] == ["y", "y2"]  # smoothing in its own panel
    fig = cf.methods_vs_attack({"crown": 0.4}, cv.LABELS, attack_upper=float("inf"))
    assert len(fig.data) == 1
    fig = cf.certified_accuracy_curves([0, 1], {"crc": [0.8, 0.1], "smoothing": [0.7, 0.2]}, cv.LABELS, n_images=5)
    smooth = next(t for t in fig.data if "smoothed" in t.name)
    assert smooth.line.dash == "dash" and max(fig.data[0].y) == pytest.approx(80)
    fig = cf.mean_certificate_bars(["a", "b"], {"crc": [1.0, 0.5], "crown": [0.4, float("nan")]}, cv.LABELS)
    assert [t.name for t in fig.data] == ["CRC (curvature)", "CROWN"]


def test_relu_main_certificate_hook_matches_certify_relu():
    from crc_core.baselines.relu_quadratic import certify_relu

    ds = load_dataset("embedded", "test", limit=3)
    x = ds.images.reshape(-1, 784)[2]
    picked = state.Picked(x, int(ds.labels[2]), "test image #2", "img-2", 2)
    for widths, expect in (([16], True), ([16, 16], False)):
        model = _relu(widths)
        ref = registry.ModelRef(f"t:{len(widths)}", "shipped", None, f"relu{len(widths)}")
        ctx = catalogue.Ctx(ref, model, {}, "relu", torch.device("cpu"), "embedded")
        main = cv.relu_certificate(ctx, picked)
        assert (main is not None) == expect
        if main is not None:
            ref = certify_relu(model, x[None], ds.labels[2:3])
            assert main.radius == pytest.approx(float(ref.radius[0])) and main.correct == bool(ref.correct[0])


def test_test_set_job_ends_when_its_session_is_gone():
    ds = load_dataset("embedded", "test", limit=40)
    job = cv.TestSetJob(MLP(784, [8], 10, "softplus"), ds.images.reshape(-1, 784), ds.labels, ("lipschitz",),
                        threading.Lock(), alive=lambda: False, orphan_after=0.0).start()
    assert job.wait(60) and job.status == "stopped" and job.n_done < 40
    assert not job.lock.locked()  # the machine is free again


def test_compare_page_link_restores_the_model_and_offers_a_share_link(app_env):
    at = AppTest.from_file(str(H.REPO / PAGE), default_timeout=TIMEOUT)
    at.query_params.update({"model": "shipped:small-standard.pt", "bogus": "1"})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[state.MODEL_KEY] == "shipped:small-standard.pt"
    assert at.query_params["model"] == "shipped:small-standard.pt"
    assert any("'bogus' is not something this page can restore" in w.value.replace("\\", "") for w in at.warning)
    assert any("?model=shipped" in c.value for c in at.code)  # the 'Share this view' popover's link
