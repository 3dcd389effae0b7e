"""A sweep's output folder in the app (app_lib.sweep_view): the Curvature page's comparison and the Compare page's
Table 5b view read it; bad folders get one sentence (AppTest, no browser, no Ray: the folder is written with the
sweep's own trial and folder functions)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

import app_helpers as H
from streamlit.testing.v1 import AppTest

from app_lib import registry, sweep_view
from crc_core.sweep import SweepFolder, execute_trial, parse_sweep_config, read_results
from crc_core.sweep.results import model_label, write_results

DOC = {
    "name": "app-tiny",
    "train": {"dataset": "embedded", "widths": "2x16", "activation": "softplus", "epochs": 1, "batch_size": 64,
              "train_limit": 300, "test_limit": 100, "gamma": 0.02},
    "grid": {"kind": ["standard", "gamma"]},
    "evaluate": {"rho": [0.1], "targets": ["runner-up"], "methods": ["crc", "lipschitz"], "images": 20,
                 "curvature": True, "curvature_min_images": 1},
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A finished two-trial sweep folder (2x[16] softplus, standard and γ-regularized, 1 epoch on 300 images)."""
    root = tmp_path_factory.mktemp("runs") / "sweeps" / "app-tiny"
    config = parse_sweep_config(DOC, name="app-tiny")
    folder = SweepFolder(root, config)
    folder.claim()
    for trial in config.trials:
        out = execute_trial(trial, config.evaluate, threads=1)
        folder.save_trial(trial, out.model, out.row, out.record)
    write_results(root, folder.rows())
    return root


@pytest.fixture
def app_env(monkeypatch, tmp_path, sweep_dir) -> Path:
    monkeypatch.setenv(registry.MODELS_ENV, str(H.model_dir()))
    monkeypatch.setenv(registry.RUNS_ENV, str(sweep_dir.parent.parent))
    return tmp_path


def _labels(root: Path) -> list[str]:
    return [model_label(r) for r in read_results(root).to_dict("records")]


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


def test_the_sweep_folder_is_found_and_resolved(monkeypatch, sweep_dir):
    df = read_results(sweep_dir)
    assert len(df) == 2 and {"K_lb", "K_ub", "mean_radius_crc_runner-up", "checkpoint"} <= set(df.columns)
    runs = sweep_dir.parent.parent
    monkeypatch.setenv(registry.RUNS_ENV, str(runs))
    assert sweep_dir.resolve() in sweep_view.found_sweeps()
    for text in ("app-tiny", "sweeps/app-tiny", str(sweep_dir), f" {sweep_dir} "):
        assert sweep_view.resolve(text).resolve() == sweep_dir.resolve(), text
    assert sweep_view.problem(sweep_dir) is None
    assert "is not a sweep folder" in sweep_view.problem(runs)


def test_curvature_page_adds_the_sweeps_models(app_env, sweep_dir):
    at = H.open_page("pages/3_Curvature.py")
    assert any("sweeps found" in c.value.lower() and "app-tiny" in c.value for c in at.caption)
    at.text_input(key="crc_sweep_dir").set_value("app-tiny").run()  # relative to $CRC_RUNS_DIR/sweeps
    H.assert_clean(at)
    labels = _labels(sweep_dir)
    assert any(all(lab in m.value for lab in labels) for m in at.markdown)  # the results table, paper style
    table = at.dataframe[-1].value
    swept = table[table["model"].str.endswith("(sweep)")]
    assert sorted(swept["model"]) == sorted(f"{lab} (sweep)" for lab in labels)
    assert len(table) > len(swept)  # beside the catalogue's models
    df = read_results(sweep_dir)
    assert sorted(swept["K_lb"]) == pytest.approx(sorted(df["K_lb"]))  # from the table's K columns
    assert (swept["K_ub Thm 3"] >= swept["K_lb"] * (1 - 1e-6)).all()


def test_curvature_page_measures_when_the_table_has_no_k_columns(app_env, sweep_dir, tmp_path):
    copy = registry.runs_dir() / f"no-k-{tmp_path.name}"
    _copy_sweep(sweep_dir, copy, drop=["K_lb", "K_ub", "K_ub_thm4"])
    at = H.open_page("pages/3_Curvature.py")
    at.text_input(key="crc_sweep_dir").set_value(str(copy)).run()
    H.assert_clean(at)
    table = at.dataframe[-1].value
    swept = table[table["model"].str.endswith("(sweep)")]
    assert len(swept) == 2 and swept["K_lb"].notna().all()
    assert (swept["K_ub Thm 3"] >= swept["K_lb"] * (1 - 1e-6)).all()  # a bound is never below a measurement


def test_compare_page_table_5b_reads_the_mean_certificates(app_env, sweep_dir):
    at = H.open_page("pages/5_Compare.py")
    at.text_input(key="cmp_sweep_dir").set_value(str(sweep_dir)).run()
    H.assert_clean(at)
    table = at.dataframe[-1].value
    df = read_results(sweep_dir)
    assert list(table["model"]) == [f"{lab} (sweep)" for lab in _labels(sweep_dir)]
    assert list(table["CRC (curvature)"]) == pytest.approx(list(df["mean_radius_crc_runner-up"]))
    assert list(table["first-order (Lipschitz)"]) == pytest.approx(list(df["mean_radius_lipschitz_runner-up"]))
    assert "CROWN" not in table  # not measured by this sweep: no invented column


def test_compare_page_certifies_when_the_table_has_no_mean_certificates(app_env, sweep_dir, tmp_path):
    copy = registry.runs_dir() / f"no-means-{tmp_path.name}"
    _copy_sweep(sweep_dir, copy, drop=[c for c in read_results(sweep_dir).columns if c.startswith("mean_radius_")])
    at = H.open_page("pages/5_Compare.py")
    at.number_input(key="cmp_n5").set_value(8).run()
    at.text_input(key="cmp_sweep_dir").set_value(str(copy)).run()
    H.assert_clean(at)
    table = at.dataframe[-1].value
    assert len(table) == 2 and {"CRC (curvature)", "CROWN", "first-order (Lipschitz)"} <= set(table.columns)
    assert (table["CRC (curvature)"] >= 0).all() and (table["CROWN"] >= 0).all()


def _copy_sweep(src: Path, dst: Path, *, drop: list[str] | None = None, keep_rows: int | None = None) -> None:
    import shutil

    shutil.copytree(src, dst)
    df = read_results(dst)
    df = df.drop(columns=[c for c in drop or [] if c in df.columns])
    if keep_rows is not None:
        df = df.iloc[:keep_rows]
    (dst / "results.parquet").unlink(missing_ok=True)
    df.to_csv(dst / "results.csv", index=False)


@pytest.mark.parametrize("make, expected", [
    (lambda runs, tmp: runs / "nowhere", "does not exist"),
    (lambda runs, tmp: _touch(runs / "a-file.txt"), "is a file, not a folder"),
    (lambda runs, tmp: _mkdir(runs / "models"), "is not a sweep folder"),
    (lambda runs, tmp: Path("/etc/passwd"), "Only sweep folders under the runs folder"),  # issue 24
    (lambda runs, tmp: _mkdir(tmp / "elsewhere"), "Only sweep folders under the runs folder"),
    (lambda runs, tmp: runs / ".." / "..", "Only sweep folders under the runs folder"),
])
def test_bad_folders_get_one_sentence(app_env, tmp_path, make, expected):
    at = H.open_page("pages/3_Curvature.py")
    at.text_input(key="crc_sweep_dir").set_value(str(make(registry.runs_dir(), tmp_path))).run()
    H.assert_clean(at)
    assert any(expected in w for w in _warnings(at)), _warnings(at)
    assert at.dataframe  # the rest of the page is still there


def test_a_table_missing_columns_and_an_unfinished_sweep(app_env, sweep_dir, tmp_path):
    bad = registry.runs_dir() / f"bad-columns-{tmp_path.name}"  # sweep folders are read under the runs folder
    _copy_sweep(sweep_dir, bad, drop=["checkpoint"])
    at = H.open_page("pages/5_Compare.py")
    at.text_input(key="cmp_sweep_dir").set_value(str(bad)).run()
    assert not at.exception
    assert any("lacks the column checkpoint" in e.value for e in at.error)

    running = registry.runs_dir() / f"running-{tmp_path.name}"
    _copy_sweep(sweep_dir, running)
    trial = sorted((running / "trials").iterdir())[1]
    (trial / "result.json").unlink()
    (trial / "status.json").write_text('{"state": "running"}')
    pd.DataFrame(read_results(running).iloc[:1]).to_csv(running / "results.csv", index=False)
    at.text_input(key="cmp_sweep_dir").set_value(str(running)).run()
    H.assert_clean(at)
    assert any("1 finished" in i.value and "1 running" in i.value for i in at.info), [i.value for i in at.info]
    assert len(at.dataframe[-1].value) == 1  # the finished trial's row


def _touch(path: Path) -> Path:
    path.write_text("not a sweep")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
