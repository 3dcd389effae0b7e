"""`python -m crc_core train|info`: dry run writes a loadable checkpoint with its command; errors are readable."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crc_core.checkpoints import load_checkpoint
from crc_core.cli import COMMANDS, TrainProgress, main

train_mod = importlib.import_module("crc_core.train")  # the module (crc_core.train is the function)

REPO = Path(__file__).resolve().parent.parent


def test_dry_run_writes_loadable_checkpoint_with_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "dry.pt"
    argv = ["train", "--dry-run", "--kind", "crt", "--widths", "16", "--out", str(out), "--device", "cpu",
            "--seed", "3"]
    assert main(argv) == 0
    model, meta = load_checkpoint(out)
    assert model.config() == {"in_dim": 784, "widths": [16], "n_classes": 10, "activation": "softplus"}
    assert meta["command"] == "python -m crc_core " + " ".join(argv)
    assert meta["kind"] == "crt" and meta["gamma"] == 0.01 and meta["crt_eps"] == 0.5 and meta["dry_run"]
    assert meta["config"]["seed"] == 3 and meta["config"]["max_steps"] <= 3
    assert meta["epochs"] == 1 and not meta["stopped"]
    assert 0 <= meta["metrics"]["test_accuracy"] <= 1
    assert meta["history"]["steps"] and meta["history"]["epochs"]
    assert (tmp_path / "dry.pt.json").is_file()
    stdout, stderr = capsys.readouterr()
    assert "saved" in stdout and "epoch 1:" in stderr  # progress goes to stderr

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "2x[16] softplus" in info and meta["command"] in info and "certified acc" in info
    assert re.search(r"^kept +last$", info, re.M)  # the weights of the last epoch (TrainConfig.keep)
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["command"] == meta["command"]


def test_standard_kind_records_gamma_zero(tmp_path: Path) -> None:
    out = tmp_path / "std.pt"
    assert main(["train", "--dry-run", "--kind", "standard", "--widths", "8", "--out", str(out), "--quiet",
                 "--device", "cpu", "--eval-samples", "0"]) == 0
    _, meta = load_checkpoint(out)
    assert meta["gamma"] == 0.0 and meta["crt_eps"] is None and meta["metrics"]["certified_accuracy"] is None


@pytest.mark.parametrize("argv, match", [
    (["--kind", "standard", "--gamma", "0.1"], "Standard training has no curvature penalty"),
    (["--eps", "-1"], "radius ε must be > 0"),
    (["--widths", "abc"], "Cannot read widths"),
    (["--activation", "tanh", "--gamma", "-1"], "must be ≥ 0"),
])
def test_bad_settings_exit_2_with_message(argv: list[str], match: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--dry-run", "--quiet", "--out", str(tmp_path / "x.pt"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
    assert not (tmp_path / "x.pt").exists()


def test_info_on_missing_or_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(tmp_path / "nope.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    assert main(["info", str(bad)]) == 2
    assert "not a CRC Explorer checkpoint" in capsys.readouterr().err


def test_ctrl_c_stops_after_the_step_and_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    real_train = train_mod.train

    def train_with_sigint(config, *, callback=None, should_stop=None, **kw):
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during training
        assert should_stop is not None and should_stop()
        return real_train(config, callback=callback, should_stop=should_stop, **kw)

    monkeypatch.setattr(train_mod, "train", train_with_sigint)
    # CI may start us with SIGINT ignored (no terminal): install the normal handler for this test, restore after
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "stopped.pt"
    code = main(["train", "--dry-run", "--widths", "8", "--out", str(out), "--device", "cpu"])
    assert code == 130
    _, meta = load_checkpoint(out)
    assert meta["stopped"] and meta["epochs"] == 0
    assert meta["metrics"]["test_accuracy"] is not None  # evaluated after stopping
    assert "stopping after this step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    signal.signal(signal.SIGINT, previous)


def test_progress_bar_plain_lines_when_not_a_terminal() -> None:
    """In a log (not a terminal) every event is one plain line in tqdm's format, without carriage returns."""
    buf = io.StringIO()
    bar = TrainProgress(buf)
    bar({"kind": "step", "step": 5, "total_steps": 10, "epoch": 1, "loss": 1.0, "ce": 0.9, "mean_K": 2.0,
         "accuracy": 0.5, "attack_accuracy": 0.25, "seconds": 4.0})
    bar({"kind": "epoch", "epoch": 1, "test_accuracy": 0.8, "certified_accuracy": 0.5,
         "certified_accuracy_all": None, "eval_samples": 10, "eval_rho": 0.5, "mean_K_ub": 1.5, "seconds": 9.0})
    bar({"kind": "done"})
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in buf.getvalue()
    assert "50%|##############              | 5/10 [00:04<00:04]" in lines[0] and "adv-acc 0.250" in lines[0]
    assert "80.00%" in lines[1] and "n/a" in lines[1]


def test_registry_has_train_and_info() -> None:
    assert [name for name, _, _ in COMMANDS][:2] == ["train", "info"]


def test_module_entry_point_help() -> None:
    res = subprocess.run([sys.executable, "-m", "crc_core", "train", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0
    assert "--dry-run" in res.stdout and "--eps" in res.stdout and "Ctrl-C" in res.stdout


def test_train_from_a_worker_thread(tmp_path: Path) -> None:
    import threading

    codes: list[int] = []
    out = tmp_path / "t.pt"
    th = threading.Thread(target=lambda: codes.append(main(
        ["train", "--dry-run", "--quiet", "--widths", "8", "--eval-samples", "0", "--out", str(out)])))
    th.start()
    th.join(60)
    assert codes == [0] and out.is_file()


@pytest.mark.parametrize("kind, flags, settings", [
    ("pgd", ["--eps", "0.3", "--adv-steps", "2", "--no-random-start"],
     {"eps": 0.3, "steps": 2, "step_size": None, "random_start": False}),
    ("trades", ["--eps", "0.4", "--adv-steps", "2", "--beta", "3", "--adv-step-size", "0.25"],
     {"eps": 0.4, "steps": 2, "step_size": 0.25, "beta": 3.0}),
])
def test_adversarial_kinds_dry_run_record_their_settings(kind: str, flags: list[str], settings: dict,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / f"{kind}.pt"
    argv = ["train", "--dry-run", "--kind", kind, *flags, "--widths", "8", "--out", str(out), "--device", "cpu",
            "--eval-samples", "2"]
    assert main(argv) == 0
    _, meta = load_checkpoint(out)
    assert meta["kind"] == kind and meta["gamma"] == 0.0 and meta["crt_eps"] is None
    assert meta["kind_settings"] == settings and meta["command"] == "python -m crc_core " + " ".join(argv)
    assert meta["config"]["adv_eps"] == settings["eps"] and meta["config"]["adv_steps"] == 2
    assert meta["metrics"]["pgd_robust_accuracy"] is not None
    assert meta["label"].startswith("2x[8] softplus, " + {"pgd": "PGD", "trades": "TRADES"}[kind])
    err = capsys.readouterr().err
    assert "adv-acc" in err and "PGD acc" in err


def test_relu_standard_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "relu.pt"
    assert main(["train", "--dry-run", "--quiet", "--kind", "standard", "--activation", "relu", "--widths", "8",
                 "--out", str(out), "--device", "cpu", "--eval-samples", "2"]) == 0
    model, meta = load_checkpoint(out)
    assert model.config()["activation"] == "relu" and meta["kind"] == "standard"
    assert meta["metrics"]["mean_K_ub"] is None and meta["metrics"]["certified_accuracy"] is not None  # App. G


@pytest.mark.parametrize("argv, match", [
    (["--activation", "relu", "--kind", "crt"], "needs a smooth activation"),
    (["--activation", "relu", "--kind", "gamma"], "ReLU's Hessian is zero almost everywhere"),
    (["--kind", "pgd", "--eps", "0"], "radius ε must be a positive"),
    (["--kind", "trades", "--beta", "-1"], "β must be a finite number ≥ 0"),
    (["--kind", "pgd", "--adv-steps", "0"], "attack steps must be an integer ≥ 1"),
    (["--kind", "pgd", "--gamma", "0.1"], "PGD training has no curvature penalty"),
    (["--kind", "pgd", "--beta", "6"], "--beta not used by --kind pgd"),
    (["--kind", "crt", "--adv-steps", "5"], "--adv-steps not used by --kind crt"),
    (["--kind", "pgd", "--attack-bounds", "theorem3"], "--attack-bounds not used by --kind pgd"),
    (["--kind", "crt", "--widths", "8,8", "--attack-bounds", "theorem3"], "needs a 2-layer network"),
    (["--kind", "gamma", "--no-random-start", "--beta", "6"],  # the whole text, made from the kind table
     "--no-random-start, --beta not used by --kind gamma (only by pgd / trades; --beta: trades; --no-random-start: "
     "pgd)."),
    (["--kind", "trades", "--gamma", "0.1"], "TRADES training has no curvature penalty: drop --gamma, or use --kind "
                                             "gamma / crt."),
])
def test_adversarial_and_relu_bad_settings_exit_2(argv: list[str], match: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--dry-run", "--quiet", "--out", str(tmp_path / "x.pt"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
    assert not (tmp_path / "x.pt").exists()


def test_help_explains_every_kind_and_lists_relu() -> None:
    from crc_core.adversarial import EXPLANATIONS
    from crc_core.cli.train import EPILOG, KIND_HELP
    from crc_core.training_kinds import KINDS, TRAIN_ACTIVATIONS

    assert set(KIND_HELP) == set(KINDS) and "relu" in TRAIN_ACTIVATIONS
    flat = " ".join(EPILOG.split())
    for kind in KINDS:
        assert f"{kind} {' '.join(KIND_HELP[kind].split())}" in flat
    assert all(KIND_HELP[k] == v for k, v in EXPLANATIONS.items())


def test_info_shows_a_sweep_trials_evaluation_and_the_crt_attack(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A sweep trial's checkpoint: its evaluation keys (cert_<method>_<targets>_<ρ>) and the CRT attack it was
    trained with are shown (they read n/a / were missing before); the shipped models show their CRT attack."""
    from crc_core.sweep.config import parse_sweep_config
    from crc_core.sweep.folder import SweepFolder
    from crc_core.sweep.trial import execute_trial

    sweep = parse_sweep_config({
        "name": "info", "train": {"dataset": "embedded", "widths": 8, "kind": "crt", "crt_eps": 1.58, "epochs": 1,
                                  "train_limit": 64, "test_limit": 16, "attack_outer": 3, "attack_inner": 2,
                                  "attack_bounds": "theorem3", "eval_samples": 0},
        "grid": {"seed": [0]}, "evaluate": {"rho": [1.58], "targets": ["runner-up"], "images": 8}})
    folder = SweepFolder(tmp_path, sweep)
    trial = sweep.trials[0]
    out = execute_trial(trial, sweep.evaluate)
    folder.save_trial(trial, out.model, out.row, out.record)
    assert main(["info", str(folder.trial_dir(trial) / "model.pt")]) == 0
    out = capsys.readouterr().out
    assert "crt attack" in out and "3 x 2 steps, theorem3 bounds" in out
    assert re.search(r"certified acc \(rho=1\.58, runner-up, crc\)\s+\d+\.\d\d%", out)
    assert "  n/a\n" not in out and "8 fixed test images" in out
    shipped = Path(__file__).resolve().parents[1] / "assets" / "models"
    assert main(["info", str(shipped / "table4-crt-2x1024-eps1.58.pt")]) == 0
    out = capsys.readouterr().out
    assert "30 x 10 steps, theorem3 bounds" in out and re.search(r"certified acc \(rho=1\.58, runner-up", out)
    assert main(["info", str(shipped / "crt-2x256.pt")]) == 0
    assert "8 x 5 steps, regularizer bounds" in capsys.readouterr().out  # recorded before attack_bounds existed
