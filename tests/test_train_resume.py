"""Per-epoch checkpoints (crc_core.epoch_checkpoint) and resuming crc_core.train.train: an interrupted and resumed
run ends with exactly the weights of an uninterrupted one (bitwise, CPU); foreign or mismatched files are refused."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest
import torch
from hostile_files import stride0_mlp

from crc_core.data import Dataset, load_dataset
from crc_core.epoch_checkpoint import EPOCH_FORMAT_TAG, load_epoch_checkpoint
from crc_core.errors import CheckpointError
from crc_core.train import TrainConfig, train


@functools.cache
def tiny_data() -> tuple[Dataset, Dataset]:
    return load_dataset("embedded", "train", limit=192), load_dataset("embedded", "test", limit=40)


def tiny(**kw) -> TrainConfig:
    base = dict(widths=(12,), kind="crt", gamma=0.01, crt_eps=0.5, epochs=3, batch_size=64, eval_samples=4,
                log_every=1, device="cpu", attack_outer=2, attack_inner=2, seed=5)
    return TrainConfig(**{**base, **kw})


def stop_after_epochs(n: int, steps_per_epoch: int):
    """should_stop for train(): True at the first step of epoch n + 1 (the epoch-n checkpoint is written)."""
    seen = {"steps": 0}

    def should_stop() -> bool:
        seen["steps"] += 1
        return seen["steps"] > n * steps_per_epoch

    return should_stop


# pgd: random starts draw from the saved RNG; crt-theorem3: the attack's power-iteration vectors are saved
@pytest.mark.parametrize("kind", ["standard", "crt", "pgd", "crt-theorem3"])
def test_interrupted_then_resumed_equals_straight_run_bitwise(kind: str, tmp_path: Path) -> None:
    config = tiny(kind=kind.split("-")[0], gamma=0.0 if kind in ("standard", "pgd") else 0.01,
                  attack_bounds="theorem3" if kind == "crt-theorem3" else "regularizer")
    straight = train(config, data=tiny_data())
    ckpt = tmp_path / "last-epoch.pt"
    cut = train(config, data=tiny_data(), epoch_checkpoint=ckpt, should_stop=stop_after_epochs(1, 3))
    assert cut.stopped and ckpt.is_file()
    assert load_epoch_checkpoint(ckpt, config, 192).epoch == 1
    torch.manual_seed(123)  # the caller's RNG state must not matter
    resumed = train(config, data=tiny_data(), epoch_checkpoint=ckpt, resume=True)
    assert not resumed.stopped and resumed.steps == straight.steps == 9
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)  # bitwise, not merely close
    epochs = [e["epoch"] for e in resumed.history if e["kind"] == "epoch"]
    assert epochs == [1, 2, 3]  # the first epoch's events are replayed from the checkpoint
    strip = ("seconds", "eval_seconds")
    assert ([{k: v for k, v in e.items() if k not in strip} for e in resumed.history if e["kind"] == "epoch"]
            == [{k: v for k, v in e.items() if k not in strip} for e in straight.history if e["kind"] == "epoch"])
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]
    assert load_epoch_checkpoint(ckpt, config, 192).epoch == 3


def test_resume_of_a_finished_run_trains_nothing_and_more_epochs_continue(tmp_path: Path) -> None:
    ckpt = tmp_path / "e.pt"
    config = tiny(kind="standard", gamma=0.0, epochs=2)
    first = train(config, data=tiny_data(), epoch_checkpoint=ckpt)
    again = train(config, data=tiny_data(), epoch_checkpoint=ckpt, resume=True)
    assert again.steps == first.steps and again.metrics == first.metrics
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), again.model.parameters()))
    longer = train(tiny(kind="standard", gamma=0.0, epochs=3), data=tiny_data(), epoch_checkpoint=ckpt, resume=True)
    straight = train(tiny(kind="standard", gamma=0.0, epochs=3), data=tiny_data())
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(), longer.model.parameters()))
    with pytest.raises(CheckpointError, match="3 epochs done, more than epochs=2"):
        train(config, data=tiny_data(), epoch_checkpoint=ckpt, resume=True)


def test_mismatched_or_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "e.pt"
    train(tiny(kind="standard", gamma=0.0, epochs=1), data=tiny_data(), epoch_checkpoint=ckpt)
    with pytest.raises(CheckpointError, match=r"other settings \(lr: 0.001 there, 0.01 now"):
        train(tiny(kind="standard", gamma=0.0, lr=0.01), data=tiny_data(), epoch_checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="trained on 192 images, this run has 128"):
        train(tiny(kind="standard", gamma=0.0), data=(tiny_data()[0].take(128), tiny_data()[1]),
              epoch_checkpoint=ckpt, resume=True)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["format"] == EPOCH_FORMAT_TAG and isinstance(raw["optimizer"], dict)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(CheckpointError, match="not an epoch checkpoint"):
        load_epoch_checkpoint(other, tiny(), 192)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": EPOCH_FORMAT_TAG, "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused or corrupt"):
        load_epoch_checkpoint(evil, tiny(), 192)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        load_epoch_checkpoint(truncated, tiny(), 192)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_epoch_checkpoint(tmp_path / "missing.pt", tiny(), 192)
    # the loading gate guards this file too: a 1 kB file of stride-0 views of 784-14000-13400-10 is refused
    # before torch builds anything (torch.load alone would materialise ~0.8 GB here)
    bomb = tmp_path / "bomb.pt"
    bomb.write_bytes(stride0_mlp([784, 14000, 13400, 10]))
    with pytest.raises(CheckpointError, match="refused or corrupt"):
        load_epoch_checkpoint(bomb, tiny(), 192)


def test_cli_train_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    train_mod = importlib.import_module("crc_core.train")  # the module (crc_core.train is the function)
    from crc_core.checkpoints import load_checkpoint
    from crc_core.cli import main

    flags = ["train", "--widths", "8", "--kind", "crt", "--epochs", "2", "--batch-size", "64", "--train-limit", "128",
             "--test-limit", "40", "--eval-samples", "0", "--attack-outer", "2", "--attack-inner", "2",
             "--device", "cpu", "--quiet"]
    out, straight = tmp_path / "m.pt", tmp_path / "straight.pt"
    epoch_file = tmp_path / "m.last-epoch.pt"
    assert main([*flags, "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    real_train = train_mod.train

    def crash_in_epoch_2(config, **kw):  # as if the run were stopped during its second epoch
        return real_train(config, **{**kw, "should_stop": stop_after_epochs(1, 2)})

    monkeypatch.setattr(train_mod, "train", crash_in_epoch_2)
    assert main([*flags, "--out", str(out)]) == 130 and epoch_file.is_file()
    monkeypatch.setattr(train_mod, "train", real_train)
    assert main([*flags, "--out", str(out)]) == 2  # the interrupted run is not overwritten silently
    assert "add --resume to continue it" in capsys.readouterr().err
    assert main([*flags, "--out", str(out), "--resume"]) == 0 and not epoch_file.exists()
    assert main([*flags, "--out", str(straight)]) == 0
    (a, meta), (b, _) = load_checkpoint(out), load_checkpoint(straight)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert [e["epoch"] for e in meta["history"]["epochs"]] == [1, 2] and not meta["stopped"]
