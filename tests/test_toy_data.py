"""2-D toy datasets: first-class datasets by name, deterministic, balanced, raw coordinates, one clear error for
bad options; the shared training loop trains them (attacks never clip their coordinates to [0, 1])."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import crc_core.metrics as metrics_mod
import crc_core.training_kinds as kinds_mod
from crc_core.cli import main
from crc_core.data import DATASET_NAMES, TOY_NAMES, in_unit_box, load_dataset, make_toy
from crc_core.errors import DataError
from crc_core.train import TrainConfig, train


@pytest.mark.parametrize("name", TOY_NAMES)
def test_every_toy_loads_by_name_deterministic_and_balanced(name: str) -> None:
    assert name in DATASET_NAMES
    a = load_dataset(name, "train", size=101, noise=0.05, seed=3)
    b = load_dataset(name, "train", size=101, noise=0.05, seed=3)
    test = load_dataset(name, "test", size=101, noise=0.05, seed=3)
    assert a.images.shape == (101, 2) and a.images.dtype == torch.float32 and a.labels.dtype == torch.int64
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, test.images)  # the test split is another draw
    counts = torch.bincount(a.labels)
    assert counts.numel() == a.n_classes and int(counts.max() - counts.min()) <= 1
    assert a.in_dim == 2 and not in_unit_box(name) and in_unit_box("embedded")


def test_raw_coordinates_and_options() -> None:
    moons = load_dataset("moons", "train")
    assert float(moons.images.min()) < -0.5 and float(moons.images.max()) > 1.2  # not squeezed into [0, 1]
    assert load_dataset("blobs", "train", classes=4).n_classes == 4
    assert load_dataset("spirals", "test", classes=3, size=30).n_classes == 3
    assert len(load_dataset("xor", "train", size=50, limit=7)) == 7
    clean = make_toy("circles", "train", noise=0.0, size=40)
    r = clean.images.norm(dim=1)
    assert torch.allclose(r[clean.labels == 0], torch.ones(20), atol=1e-6)  # noise 0: exactly on the circles
    assert torch.allclose(r[clean.labels == 1], torch.full((20,), 0.5), atol=1e-6)


@pytest.mark.parametrize(("options", "words"), [
    ({"noise": -0.1}, "≥ 0"),
    ({"noise": float("nan")}, "≥ 0"),
    ({"size": 0}, "at least one point"),
    ({"classes": 1}, "at least 2 classes"),
    ({"classes": 5}, "from 2 to 4"),
    ({"size": 2, "classes": 3}, "too small"),
])
def test_bad_options_give_one_clear_sentence(options: dict[str, Any], words: str) -> None:
    with pytest.raises(DataError, match=words):
        load_dataset("blobs", "train", **options)


def test_misplaced_options_are_refused() -> None:
    with pytest.raises(DataError, match="exactly 2 classes"):
        load_dataset("moons", "train", classes=3)
    with pytest.raises(DataError, match="toy datasets"):
        load_dataset("embedded", "test", noise=0.1)
    with pytest.raises(DataError, match="no root"):
        load_dataset("moons", "train", root="/tmp")


def test_attacks_on_toys_do_not_clip_to_the_pixel_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """PGD training and the per-epoch PGD evaluation get clamp=False on a toy (True on images)."""
    seen: list[bool] = []
    real_loss, real_robust = kinds_mod.pgd_training_loss, metrics_mod.pgd_robust

    def loss(*a: Any, **k: Any) -> Any:
        seen.append(k["clamp"])
        return real_loss(*a, **k)

    def robust(*a: Any, **k: Any) -> Any:
        seen.append(k["clamp"])
        return real_robust(*a, **k)

    monkeypatch.setattr(kinds_mod, "pgd_training_loss", loss)
    monkeypatch.setattr(metrics_mod, "pgd_robust", robust)
    cfg = TrainConfig(dataset="moons", widths=(8,), activation="tanh", kind="pgd", adv_eps=0.2, adv_steps=2,
                      epochs=1, batch_size=200, eval_samples=10, device="cpu")
    result = train(cfg)
    assert seen and not any(seen)
    assert result.metrics["test_accuracy"] > 0


def test_cli_trains_a_toy(tmp_path: Any) -> None:
    out = tmp_path / "moons.pt"
    code = main(["train", "--dataset", "moons", "--widths", "8", "--activation", "softplus", "--kind", "standard",
                 "--epochs", "1", "--out", str(out), "--threads", "1"])
    assert code == 0 and out.is_file()


def test_sweeps_accept_a_toy_and_attack_it_unclipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A sweep grid on moons parses, and its trial evaluation attacks the raw coordinates (clamp=False)."""
    from pathlib import Path

    import crc_core.sweep.trial as trial_mod
    from crc_core.sweep.config import load_sweep_config

    text = (Path(__file__).resolve().parents[1] / "configs" / "smoke.toml").read_text()
    text = text.replace('dataset = "embedded"', 'dataset = "moons"').replace('widths = "2x64"', 'widths = "2x8"')
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("train_limit", "test_limit")))
    (tmp_path / "toy.toml").write_text(text)
    sweep = load_sweep_config(tmp_path / "toy.toml")
    assert {t.config.dataset for t in sweep.trials} == {"moons"}
    seen: list[bool] = []
    real = metrics_mod.pgd_attack  # the sweep's attacks are crc_core.metrics.attacks_at
    monkeypatch.setattr(metrics_mod, "pgd_attack", lambda *a, **k: (seen.append(k["clamp"]), real(*a, **k))[1])
    model = train(TrainConfig(dataset="moons", widths=(8,), activation="tanh", kind="standard", epochs=1,
                              eval_samples=0, device="cpu")).model
    row = trial_mod.evaluate_trial(model, load_dataset("moons", "test", size=40), sweep.evaluate)
    assert seen == [False] and 0 <= row["test_accuracy"] <= 1
