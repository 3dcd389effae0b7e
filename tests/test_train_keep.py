"""TrainConfig.keep: "best-test-accuracy" (the paper's model selection; it uses the test set) returns the weights of
the evaluated epoch with the best standard test accuracy, keeps that epoch across an interrupted and resumed run
(bitwise on CPU), says which epoch it kept in the run record; "best-train-certified" does the same by certified
accuracy on the last training images and reads no test image; no rule changes the training; the default "last"
changes nothing."""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_train_resume import stop_after_epochs, tiny, tiny_data

from crc_core.checkpoints import load_checkpoint, save_checkpoint
from crc_core.cli import main
from crc_core.epoch_checkpoint import load_epoch_checkpoint
from crc_core.errors import CheckpointError, CRCError
from crc_core.run_records import run_record
from crc_core.sweep.config import parse_sweep_config, trial_settings
from crc_core.sweep.trial import execute_trial
from crc_core.train import train

train_mod = importlib.import_module("crc_core.train")  # the module (crc_core.train is the function)
BEST = "best-test-accuracy"


def fake_accuracies(monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    """Each epoch evaluation (the real one, random draws included) reports the next value of the returned list as
    its test accuracy; the weights it saw are appended to the second list."""
    accs: list[float] = []
    seen: list[dict[str, torch.Tensor]] = []
    real: Callable = train_mod.config_epoch_metrics

    def patched(model, config, test):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {**real(model, config, test), "test_accuracy": accs.pop(0)}

    monkeypatch.setattr(train_mod, "config_epoch_metrics", patched)
    return accs, seen


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("accs, best", [([0.5, 0.9, 0.7], 2), ([0.9, 0.9, 0.5], 1), ([0.1, 0.2, 0.3], 3)])
def test_the_best_epoch_is_kept(accs: list[float], best: int, monkeypatch: pytest.MonkeyPatch) -> None:
    queue, seen = fake_accuracies(monkeypatch)
    queue.extend(accs)
    config = tiny(kind="standard", gamma=0.0, keep=BEST)
    result = train(config, data=tiny_data())
    assert len(seen) == 3 and not same_weights(seen[0], seen[2])
    assert same_weights(result.model.state_dict(), seen[best - 1])  # the kept epoch's weights, exactly
    assert result.kept is not None and result.kept["epoch"] == best and result.kept["test_accuracy"] == max(accs)
    assert result.metrics["epoch"] == best and result.metrics["test_accuracy"] == max(accs)
    assert result.history[-1]["metrics"]["epoch"] == best  # the "done" event describes the kept weights
    record = run_record(config, result, source="test")
    assert record["kept"]["epoch"] == best and "test set" in record["kept"]["reason"]
    assert record["metrics"]["epoch"] == best and record["config"]["keep"] == BEST


def test_resumed_run_keeps_the_same_best_and_ends_bitwise_equal(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    queue, _ = fake_accuracies(monkeypatch)
    config = tiny(keep=BEST)
    queue.extend([0.5, 0.9, 0.7])
    straight = train(config, data=tiny_data())
    ckpt = tmp_path / "last-epoch.pt"
    queue.extend([0.5, 0.9])
    cut = train(config, data=tiny_data(), epoch_checkpoint=ckpt, should_stop=stop_after_epochs(2, 3))
    assert cut.stopped and cut.kept["epoch"] == 2
    state = load_epoch_checkpoint(ckpt, config, 192)
    assert state.epoch == 2 and state.best is not None and state.best["epoch"] == 2
    queue.append(0.7)  # only epoch 3 is trained and evaluated after the resume
    resumed = train(config, data=tiny_data(), epoch_checkpoint=ckpt, resume=True)
    assert not queue and resumed.kept == straight.kept and resumed.kept["epoch"] == 2
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    strip = ("seconds", "eval_seconds")
    assert ({k: v for k, v in resumed.metrics.items() if k not in strip}
            == {k: v for k, v in straight.metrics.items() if k not in strip})
    again = train(config, data=tiny_data(), epoch_checkpoint=ckpt, resume=True)  # finished: nothing to train
    assert again.kept == straight.kept and same_weights(again.model.state_dict(), straight.model.state_dict())


def test_default_keeps_the_last_epoch_and_nothing_else_changes(tmp_path: Path) -> None:
    config = tiny(kind="standard", gamma=0.0, epochs=2)
    assert config.keep == "last" and "keep" not in trial_settings(config)  # sweep trial ids are unchanged
    ckpt = tmp_path / "e.pt"
    result = train(config, data=tiny_data(), epoch_checkpoint=ckpt)
    assert result.kept is None and result.metrics["epoch"] == 2
    assert "kept" not in run_record(config, result, source="test")
    raw = torch.load(ckpt, weights_only=True)
    assert "best" not in raw
    # an epoch checkpoint written before keep existed resumes as keep="last" and is refused for the other rule
    del raw["config"]["keep"]
    torch.save(raw, ckpt)
    assert load_epoch_checkpoint(ckpt, config, 192).best is None
    with pytest.raises(CheckpointError, match="keep: None there, 'best-test-accuracy' now"):
        load_epoch_checkpoint(ckpt, tiny(kind="standard", gamma=0.0, epochs=2, keep=BEST), 192)


def test_a_run_stopped_before_any_evaluation_keeps_its_weights_and_says_so() -> None:
    result = train(tiny(kind="standard", gamma=0.0, keep=BEST), data=tiny_data(), should_stop=lambda: True)
    assert result.stopped and result.kept["epoch"] is None and "no epoch was evaluated" in result.kept["reason"]


@pytest.mark.parametrize("value", ["best", "", None, 1])
def test_bad_keep_is_refused_in_one_sentence(value) -> None:
    with pytest.raises(CRCError, match=r"^keep must be 'last' .*, 'best-test-accuracy' .* or 'best-train-certified' "
                                       r".*, got .*\.$"):
        tiny(keep=value)


TRAIN_CERT = "best-train-certified"


def test_train_certified_keeps_the_epoch_with_the_most_certified_training_images(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The score is certified accuracy at eval_rho on the last select_images training images (never a test
    image); the best epoch's weights are returned; the record says which epoch, its score and why."""
    train_ds, test_ds = tiny_data()
    scores, seen, weights = [0.25, 0.75, 0.5], [], []

    def fake(model, x, y, rho, *, mode):
        seen.append((x.clone(), y.clone(), rho, mode))
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return scores[len(seen) - 1]

    monkeypatch.setattr(train_mod, "certified_accuracy", fake)
    config = tiny(keep=TRAIN_CERT, select_images=50, eval_rho=0.3)
    result = train(config, data=(train_ds, test_ds))
    assert len(seen) == 3 and all(torch.equal(x, train_ds.images[-50:]) and torch.equal(y, train_ds.labels[-50:])
                                  and rho == 0.3 and mode == "fast" for x, y, rho, mode in seen)
    assert same_weights(result.model.state_dict(), weights[1])
    kept = result.kept
    assert kept["epoch"] == 2 and kept["train_certified_accuracy"] == 0.75 and kept["select_images"] == 50
    assert kept["test_accuracy"] == result.metrics["test_accuracy"] and result.metrics["epoch"] == 2
    assert "no test image was read" in kept["reason"] and "last 50 training images" in kept["reason"]
    assert [e["train_certified_accuracy"] for e in result.history if e["kind"] == "epoch"] == scores
    record = run_record(config, result, source="test")
    assert record["kept"] == {**kept, "test_accuracy": pytest.approx(kept["test_accuracy"], abs=1e-6)}
    assert record["config"]["select_images"] == 50 and trial_settings(config)["select_images"] == 50


def test_no_rule_changes_the_training_and_the_score_is_the_kept_weights_certificate(tmp_path: Path) -> None:
    """The per-epoch certification draws no random numbers from the run: every epoch's weights equal those of a
    run that keeps the last epoch, bit for bit (CPU); re-certifying the kept weights gives its recorded score."""
    from crc_core.metrics import certified_accuracy

    train_ds, test_ds = tiny_data()
    last = train(tiny(kind="pgd", gamma=0.0), data=(train_ds, test_ds))  # PGD's random starts use the global RNG
    ckpt = tmp_path / "e.pt"
    config = tiny(kind="pgd", gamma=0.0, keep=TRAIN_CERT, select_images=64)
    kept = train(config, data=(train_ds, test_ds), epoch_checkpoint=ckpt)
    assert same_weights(load_epoch_checkpoint(ckpt, config, 192).model, last.model.state_dict())
    score = certified_accuracy(kept.model, train_ds.images[-64:], train_ds.labels[-64:], config.eval_rho)
    assert score == kept.kept["train_certified_accuracy"]


def test_held_out_selection_images_are_never_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """select_held_out: the run trains on the first N - n images exactly as a run limited to them (bitwise) and
    certifies the last n after each epoch; the epoch state records N - n training images."""
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(train_mod, "certified_accuracy", lambda model, x, y, rho, *, mode: seen.append(x) or 0.5)
    ckpt = tmp_path / "e.pt"
    config = tiny(train_limit=192, keep=TRAIN_CERT, select_images=64, select_held_out=True)
    held = train(config, epoch_checkpoint=ckpt)
    plain = train(tiny(train_limit=128))
    images = tiny_data()[0].images
    assert len(seen) == 3 and all(torch.equal(x, images[128:192]) for x in seen)
    assert load_epoch_checkpoint(ckpt, config, 128).n_train == 128
    assert same_weights(load_epoch_checkpoint(ckpt, config, 128).model, plain.model.state_dict())
    assert held.kept["epoch"] == 1 and "held out of training" in held.kept["reason"]
    with pytest.raises(CRCError, match="leaves none to train on"):
        train(tiny(train_limit=64, keep=TRAIN_CERT, select_images=64, select_held_out=True))
    with pytest.raises(CRCError, match="needs that rule, not keep='last'"):
        tiny(select_held_out=True)


def test_train_certified_needs_a_certificate_and_a_positive_count() -> None:
    with pytest.raises(CRCError, match=r"needs a certificate: .* this ReLU net has 3 layers"):
        tiny(kind="pgd", gamma=0.0, activation="relu", widths=(8, 8), keep=TRAIN_CERT)
    tiny(kind="pgd", gamma=0.0, activation="relu", widths=(8,), keep=TRAIN_CERT)  # App. G certifies 2 layers
    with pytest.raises(CRCError, match="select_images must be a whole number ≥ 1"):
        tiny(keep=TRAIN_CERT, select_images=0)


def test_sweep_files_accept_keep() -> None:
    doc = {"name": "k", "train": {"dataset": "embedded", "widths": 8, "kind": "standard", "epochs": 1,
                                  "keep": BEST}, "grid": {"seed": [0]}}
    sweep = parse_sweep_config(doc)
    assert sweep.trials[0].config.keep == BEST and trial_settings(sweep.trials[0].config)["keep"] == BEST
    assert sweep.trials[0].trial_id != parse_sweep_config({**doc, "train": {**doc["train"], "keep": "last"}}
                                                          ).trials[0].trial_id
    small = parse_sweep_config({**doc, "train": {**doc["train"], "epochs": 2, "train_limit": 64, "test_limit": 16},
                                "evaluate": {"rho": [0.5], "targets": ["runner-up"], "images": 4}})
    out = execute_trial(small.trials[0], small.evaluate)
    assert out.record["kept"]["epoch"] in (1, 2) and out.record["kept"]["rule"] == BEST
    bad = copy.deepcopy(doc)
    bad["train"]["keep"] = "best"
    with pytest.raises(CRCError, match="keep must be 'last'"):
        parse_sweep_config(bad)


def test_cli_keep_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "best.pt"
    assert main(["train", "--dry-run", "--kind", "standard", "--widths", "8", "--out", str(out), "--quiet",
                 "--device", "cpu", "--eval-samples", "0", "--keep", BEST]) == 0
    _, meta = load_checkpoint(out)
    assert meta["config"]["keep"] == BEST and meta["kept"]["epoch"] == 1
    assert "kept epoch 1 (best standard test accuracy)" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0  # info says which epoch's weights the file holds
    acc = f"{100 * meta['kept']['test_accuracy']:.2f}%"
    assert re.search(rf"^kept +best standard test accuracy \(epoch 1 of 1, {re.escape(acc)}\)$",
                     capsys.readouterr().out, re.M)
    meta["kept"] = {"rule": BEST, "epoch": None, "test_accuracy": None, "reason": "no epoch was evaluated"}
    save_checkpoint(out, load_checkpoint(out)[0], meta)
    assert main(["info", str(out)]) == 0
    assert re.search(r"^kept +best-test-accuracy: no epoch was evaluated$", capsys.readouterr().out, re.M)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dry-run", "--keep", "best", "--out", str(tmp_path / "x.pt")])
    assert exc.value.code == 2
    assert main(["train", "--dry-run", "--kind", "standard", "--widths", "8", "--out", str(out), "--quiet",
                 "--device", "cpu", "--eval-samples", "0", "--keep", TRAIN_CERT, "--select-images", "32"]) == 0
    _, meta = load_checkpoint(out)
    assert meta["config"]["select_images"] == 32 and meta["kept"]["select_images"] == 32
    assert "kept epoch 1 (best certified accuracy on training images)" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    cert, acc = (f"{100 * meta['kept'][k]:.2f}%" for k in ("train_certified_accuracy", "test_accuracy"))
    assert re.search(rf"^kept +best certified accuracy on training images \(epoch 1 of 1, {re.escape(cert)}, "
                     rf"test accuracy {re.escape(acc)}\)$", capsys.readouterr().out, re.M)


def test_kept_text_shows_hand_written_records_without_trusting_them() -> None:
    """The Home page and `info` describe the kept weights from metadata that may come from anywhere."""
    from crc_core.run_records import kept_text

    assert kept_text({}) is None and kept_text({"config": {"keep": "last"}}) == "last"
    odd = kept_text({"epochs": 30, "kept": {"rule": TRAIN_CERT, "epoch": "9" * 500,
                                            "train_certified_accuracy": "x" * 500, "test_accuracy": True}})
    assert odd.startswith("best certified accuracy on training images (epoch 999") and len(odd) < 250
    unknown = kept_text({"epochs": 3, "kept": {"rule": ["?"], "epoch": 2, "test_accuracy": 0.5}})
    assert unknown == "['?'] (epoch 2 of 3, test accuracy 50.00%)"
    text = kept_text({"epochs": 30, "kept": {"rule": TRAIN_CERT, "epoch": 8, "train_certified_accuracy": 0.5412,
                                             "test_accuracy": 0.8129}})
    assert text == "best certified accuracy on training images (epoch 8 of 30, 54.12%, test accuracy 81.29%)"
