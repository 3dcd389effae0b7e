"""`python -m crc_core sweep`: bad input exits 2 before anything runs; a real two-trial sweep on a local 2-CPU Ray
reports progress, goes on past a failing trial (exit 1), resumes a killed trial from its last epoch with the
weights of a straight run, and leaves no Ray processes behind."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
import ray_helpers
import torch

from crc_core.cli import COMMANDS, main
from crc_core.cli.sweep import SweepView
from crc_core.sweep import SweepFolder, SweepProgress, load_sweep_config

ray = pytest.importorskip("ray")


TINY = """\
name = "cli-tiny"
[train]
dataset = "embedded"
widths = "2x16"
kind = "standard"
epochs = 2
batch_size = 64
train_limit = 192
test_limit = 60
seed = 0
{grid}
[evaluate]
rho = [0.1]
images = 20
"""


def write_config(folder: Path, grid: str = "[grid]\nseed = [0]\n", name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(TINY.format(grid=grid))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one error line, exit 2, nothing written, no Ray
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, extra, match", [
    (TINY.format(grid="[grid]\nseed = [0]\ncolour = ['red']\n"), [], "Unknown key 'colour' in [grid]"),
    (TINY.format(grid="[grid]\nseed = []\n"), [], "grid empty"),
    (TINY.format(grid="[grid]\nwidths = [0]\n"), [], "width ≥ 1"),
    (TINY.format(grid="[grid]\nkind = ['crt']\ngamma = [-1.0]\n"), [], "must be ≥ 0"),
    ("[grid\n", [], "not valid TOML"),
    (TINY.format(grid="[grid]\nseed = [0]\n"), ["--num-cpus", "0"], "--num-cpus must be at least 1"),
    (TINY.format(grid="[grid]\nseed = [0]\n"), ["--address", "nowhere"], "must look like HOST:PORT"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, text, extra, match):
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), *extra]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and match in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


def test_missing_file_and_unreachable_address(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "Sweep config not found" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_config(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--address", f"ray://127.0.0.1:{port}"]) == 2
    assert "Cannot reach the Ray cluster" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not ray.is_initialized()


def test_registry_and_plain_progress_lines():
    assert "sweep" in [c.name for c in COMMANDS]
    stream = io.StringIO()  # not a terminal: plain lines, no carriage returns
    view = SweepView(stream)
    view(SweepProgress("start", 1, 0, 0, 2, 3, 1, 0.0))
    view(SweepProgress("trial_failed", 1, 1, 1, 0, 3, 1, 75.0, eta_seconds=130.0, trial_id="t2", error="boom"))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[00:00] sweep: 3 trials, 1 already finished (1/3 done, 0 running, 0 failed, ETA ?)"
    assert lines[1] == "[01:15] FAILED   t2: boom (1/3 done, 1 running, 1 failed, ETA 02:10)"
    assert "\r" not in stream.getvalue()


def test_epoch_reports_give_an_eta_before_any_trial_ends(monkeypatch):
    from crc_core.sweep import runner

    clock = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])
    seen: list[SweepProgress] = []
    tr = runner.ProgressTracker(total=3, skipped=0, callback=seen.append)
    tr.slots = 2
    tr.start("a", resumed_epochs=2, total_epochs=10)  # resumed after epoch 2 of 10
    tr.start("b", total_epochs=5)
    assert seen[-1].eta_seconds is None
    clock[0] = 30.0
    tr.epoch("a", 3)  # 30 s per epoch: a takes 300 s in all; b has not finished an epoch: no estimate yet
    assert (seen[-1].event, seen[-1].epoch, seen[-1].epochs, seen[-1].trial_id) == ("trial_epoch", 3, 10, "a")
    assert seen[-1].eta_seconds is None
    clock[0] = 40.0
    tr.epoch("b", 1)  # b: 40 s per epoch, 200 s in all, 160 s left; a: 210 s left at t = 30, so 200 s now
    assert seen[-1].eta_seconds == 1 / 2 * (300 + 200) / 2 + 200
    stream = io.StringIO()
    SweepView(stream)(seen[-1])
    assert stream.getvalue() == "[00:40] epoch 1/5 b (0/3 done, 2 running, 0 failed, ETA 05:25)\n"


# ----------------------------------------------------------------------------------------------------------------
# A real sweep through the CLI on a local 2-CPU Ray
# ----------------------------------------------------------------------------------------------------------------
local_ray = pytest.fixture(scope="module")(ray_helpers.local_ray)


def test_sweep_with_a_failing_trial_and_an_epoch_resume(local_ray, tmp_path, capsys):
    from crc_core.train import train

    empty = tmp_path / "no-data"  # the second trial's dataset folder is empty: it fails in its worker
    grid = f'[[grid]]\nseed = [0]\n[[grid]]\ndataset = "fashion-mnist"\ndata_root = "{empty}"\n'
    path = write_config(tmp_path, grid)
    cfg = load_sweep_config(path)
    ok, bad = cfg.trials
    out = tmp_path / "out"
    folder = SweepFolder(out, cfg)
    folder.claim()  # as a sweep killed during ok's second epoch leaves it: epoch 1 saved, no result
    ckpt = folder.epoch_checkpoint(ok)
    steps = {"n": 0}

    def stop_in_epoch_2() -> bool:
        steps["n"] += 1
        return steps["n"] > 3  # 192 images / batch 64 = 3 steps per epoch

    assert train(ok.config, epoch_checkpoint=ckpt, should_stop=stop_in_epoch_2).stopped and ckpt.is_file()

    code = main(["sweep", str(path), "--out", str(out), "--resume"])
    stdout, stderr = capsys.readouterr()
    assert code == 1  # a trial failed; the other one finished
    assert f"FAILED   {bad.trial_id}: DataError" in stderr and f"finished {ok.trial_id}" in stderr
    assert "1 trial(s) finished now, 0 earlier, 1 failed, of 2" in stdout
    assert f"results (Markdown table): {out / 'results.md'}" in stdout and "--resume" in stdout
    assert "2×[16] softplus, standard" in (out / "results.md").read_text()

    record = json.loads((out / "trials" / ok.trial_id / "record.json").read_text())
    assert record["resumed_after_epoch"] == 1 and [e["epoch"] for e in record["history"]["epochs"]] == [1, 2]
    assert not ckpt.exists()  # deleted once the trial finished
    from crc_core.checkpoints import load_checkpoint

    model, _ = load_checkpoint(out / "trials" / ok.trial_id / "model.pt")
    straight = train(ok.config).model  # the same trial without interruption: identical weights, bit for bit
    assert all(torch.equal(a, b.cpu()) for a, b in zip(model.state_dict().values(),
                                                        straight.state_dict().values()))

    from crc_core.sweep import is_sweep_folder, sweep_overview

    overview = sweep_overview(out, with_epochs=True)  # what the app reads
    assert is_sweep_folder(out) and not is_sweep_folder(tmp_path) and overview["name"] == "cli-tiny"
    assert [(t["trial_id"], t["state"]) for t in overview["trials"]] == [(ok.trial_id, "finished"),
                                                                         (bad.trial_id, "failed")]
    assert overview["trials"][0]["checkpoint"].is_file() and "DataError" in overview["trials"][1]["error"]
    assert overview["trials"][1]["epochs_done"] == 0

    assert main(["sweep", str(path), "--out", str(out)]) == 2  # the folder holds this sweep: needs --resume
    assert "already holds this sweep" in capsys.readouterr().err
