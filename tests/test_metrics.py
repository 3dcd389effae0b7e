"""crc_core.metrics: one meaning per number; old run records read with today's names."""

from __future__ import annotations

import torch

from crc_core.metrics import EPOCH_METRIC_KEYS, epoch_metrics, fixed_eval_sample, upgrade_metric_keys
from crc_core.models import MLP


def test_old_records_read_with_todays_names():
    old = {"kind": "epoch", "empirical_robust_accuracy": 0.4, "certified_accuracy": 0.2}
    assert upgrade_metric_keys(old) == {"kind": "epoch", "pgd_robust_accuracy": 0.4, "certified_accuracy": 0.2}


def test_fixed_sample_is_the_same_for_every_caller():
    a, b = fixed_eval_sample(1000, 30), fixed_eval_sample(1000, 30)
    assert torch.equal(a, b) and len(set(a.tolist())) == 30 and fixed_eval_sample(5, 30).shape == (5,)


def test_epoch_metrics_keys_and_pgd_meaning():
    torch.manual_seed(0)
    model = MLP(6, [8], 3, "softplus").eval()
    x, y = torch.rand(20, 6), torch.randint(0, 3, (20,))
    m = epoch_metrics(model, (x, y), rho=0.5, eval_samples=12)
    assert tuple(m) == EPOCH_METRIC_KEYS and "empirical_robust_accuracy" not in m
    assert m["eval_samples"] == 12
    assert m["certified_accuracy_all"] <= m["certified_accuracy"] <= m["pgd_robust_accuracy"] <= 1
