"""scripts/select_epoch.py: a keep rule applied afterwards to a run's saved epoch states gives what ``--keep`` gives
during the run (same epoch, same weights bit for bit, same record), and refuses states that are not one finished
run's."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from test_train_resume import stop_after_epochs, tiny

from crc_core.checkpoints import load_checkpoint
from crc_core.errors import CRCError
from crc_core.run_records import run_record
from crc_core.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "select_epoch.py"
_spec = importlib.util.spec_from_file_location("select_epoch", SCRIPT)
select_epoch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(select_epoch)


def epoch_states(tmp_path: Path, **kw) -> list[Path]:
    """Train tiny(**kw) for 3 epochs, one epoch per call (stopped, then resumed), copying the epoch state after each."""
    config, ckpt, out = tiny(**kw), tmp_path / "last-epoch.pt", []
    for epoch in (1, 2, 3):
        train(config, epoch_checkpoint=ckpt, resume=True, should_stop=stop_after_epochs(1, 3))
        out.append(Path(shutil.copy(ckpt, tmp_path / f"epoch{epoch}.pt")))
    return out


def test_selecting_afterwards_equals_keeping_during_the_run(tmp_path: Path) -> None:
    run = dict(train_limit=192, test_limit=40)  # 3 steps per epoch
    paths = epoch_states(tmp_path, keep="best-test-accuracy", **run)
    config, result, scores = select_epoch.select(paths[::-1], "best-train-certified", select_images=64)
    during = train(tiny(keep="best-train-certified", select_images=64, **run))
    assert config == tiny(keep="best-train-certified", select_images=64, **run)
    assert result.kept == during.kept and result.metrics.keys() == during.metrics.keys()
    assert all(torch.equal(result.model.state_dict()[k], v) for k, v in during.model.state_dict().items())
    epochs = [e for e in during.history if e["kind"] == "epoch"]
    assert scores == {e["epoch"]: e["train_certified_accuracy"] for e in epochs}
    strip = ("seconds", "eval_seconds")
    mine = run_record(config, result, source="x")
    theirs = run_record(config, during, source="x")
    for r in (mine, theirs):
        r.pop("train_seconds")
        for e in r["history"]["epochs"] + r["history"]["steps"]:
            for k in strip:
                e.pop(k, None)
        r["metrics"].pop("eval_seconds")
    assert mine == theirs


def test_a_held_out_run_is_selected_on_its_held_out_images(tmp_path: Path) -> None:
    run = dict(train_limit=256, test_limit=40, keep="best-train-certified", select_images=64, select_held_out=True)
    paths = epoch_states(tmp_path, **run)  # 192 trained on: 3 steps per epoch
    config, result, _ = select_epoch.select(paths, "best-train-certified")
    during = train(tiny(**run))
    assert config == tiny(**run) and result.kept == during.kept
    assert all(torch.equal(result.model.state_dict()[k], v) for k, v in during.model.state_dict().items())
    with pytest.raises(CRCError, match="The run trained on 192 images; with these settings it would train on 224"):
        select_epoch.select(paths, "best-train-certified", select_images=32)


def test_the_command_line_writes_the_kept_epoch_and_says_how(tmp_path: Path, capsys) -> None:
    paths = epoch_states(tmp_path, train_limit=192, test_limit=40)
    out = tmp_path / "kept.pt"
    assert select_epoch.main([*map(str, paths), "--keep", "best-train-certified", "--select-images", "32",
                              "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("train_certified_accuracy") == 3 and "no test image was read" in printed
    _, meta = load_checkpoint(out)
    assert meta["config"]["keep"] == "best-train-certified" and meta["kept"]["select_images"] == 32
    assert "keep='last'" in meta["selected_afterwards"] and meta["command"] == meta["selected_afterwards"]


def test_states_that_are_not_one_finished_run_are_refused(tmp_path: Path) -> None:
    paths = epoch_states(tmp_path, train_limit=192, test_limit=40)
    with pytest.raises(CRCError, match=r"epochs 1\.\.3 of one finished run, once each; got epochs \[1, 3\]"):
        select_epoch.select([paths[0], paths[2]], "best-train-certified")
    with pytest.raises(CRCError, match=r"got epochs \[1, 2, 2, 3\]"):
        select_epoch.select([*paths, paths[1]], "best-train-certified")
    other = epoch_states(tmp_path / "other", train_limit=192, test_limit=40, seed=6)
    with pytest.raises(CRCError, match="other settings"):
        select_epoch.select([*paths[:2], other[2]], "best-train-certified")
    with pytest.raises(CRCError, match="keep must be one of"):
        select_epoch.select(paths, "last")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CRCError):
        select_epoch.select([tmp_path / "junk.pt"], "best-train-certified")
