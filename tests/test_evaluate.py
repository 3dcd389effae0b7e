"""Evaluation table, K_lb vs K_ub, local certificates, and the certify CLI."""

import json

import pytest
import torch
from helpers import small_data, small_model

from crc_core.activations import ACTIVATIONS
from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import save_checkpoint
from crc_core.errors import CRCError
from crc_core.evaluate import curvature_table, evaluate
from crc_core.local import local_lower_curvature, second_derivative_range
from crc_core.testing import attack_certificates


@pytest.fixture(scope="module")
def model():
    return small_model(2, "tanh", True)


def test_evaluate_summary_is_consistent(model):
    x, y = small_data("test", 40)
    ev = evaluate(model, x, y, rho=0.3, batch_size=16)
    s, df = ev.summary, ev.table
    assert len(df) == 40 and df["index"].tolist() == list(range(40))
    assert 0 <= s["certified_accuracy"] <= s["empirical_robust_accuracy"] <= s["clean_accuracy"] <= 1
    assert s["certified_accuracy"] <= s["certified_accuracy_runner_up"]  # one target is easier than all
    assert ((df["radius"] <= df["runner_up_radius"] + 1e-9) | ~df["correct"]).all()
    # a certified image can never be fooled by an attack at ρ
    assert not (df["certified"] & (df["pgd_fooled"] | df["curv_fooled"])).any()
    with pytest.raises(CRCError, match="positive"):
        evaluate(model, x, y, rho=0)
    with pytest.raises(CRCError, match="No images"):
        evaluate(model, x[:0], y[:0], rho=0.5)


@pytest.mark.parametrize("depth", [2, 3])
def test_measured_curvature_never_exceeds_the_bound(depth):
    model = small_model(depth, "softplus", True)
    x, _ = small_data("test", 60)
    df = curvature_table(model, x, method="exact")
    assert len(df) > 0
    assert (df["K_lb"] <= df["K_ub"] * (1 + 1e-9)).all()
    assert df.attrs["mean_K_lb"] <= df.attrs["mean_K_ub"]


def test_curvature_table_reports_progress_per_batch_and_can_be_cancelled():
    model = small_model(2, "softplus", True)
    x, _ = small_data("test", 60)
    seen = []
    df = curvature_table(model, x, method="power", batch_size=25, progress=lambda *done_total: seen.append(done_total))
    assert seen == [(25, 60), (50, 60), (60, 60)] and len(df) > 0

    def cancel(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        curvature_table(model, x, method="power", batch_size=25, progress=cancel)


@pytest.mark.parametrize("act", ["softplus", "sigmoid", "tanh"])
def test_second_derivative_range_is_exact_on_intervals(act):
    a_fn = ACTIVATIONS[act]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, generator=g, dtype=torch.float64) * 3
    b = a + torch.rand(200, generator=g, dtype=torch.float64) * 4
    lo, hi = second_derivative_range(a_fn, a, b)
    s = torch.linspace(0, 1, 4001, dtype=torch.float64)
    vals = a_fn.d2(a[:, None] + s[None, :] * (b - a)[:, None])
    assert (vals.min(1).values >= lo).all() and (vals.max(1).values <= hi).all()
    assert (vals.min(1).values - lo < 1e-5).all() and (hi - vals.max(1).values < 1e-5).all()


def test_local_certificates_are_sound_and_never_smaller(model):
    x, y = small_data("test", 30)
    g = certify(model, x, y)
    loc = certify(model, x, y, local=True)
    ok = g.correct
    assert (loc.radius[ok] >= g.radius[ok] - 1e-12).all()
    res = attack_certificates(model, x[ok], loc.pred[ok], loc.radius[ok])
    assert res.n_violations == 0
    # local lower curvature is never below the global one
    b = curvature_bounds(model)
    yy, tt = g.pred[ok], g.runner_up[ok]
    m_R = local_lower_curvature(model, x[ok], yy, tt, torch.full((int(ok.sum()),), 0.5))
    assert (m_R >= b.for_pairs(yy, tt).m - 1e-12).all()
    with pytest.raises(CRCError, match="2-layer"):
        certify(small_model(3, "tanh", True), x[:2], local=True)


def test_certify_cli_writes_csv_and_json(tmp_path, capsys):
    from crc_core.cli import main

    m = small_model(2, "softplus", True)
    # the CLI works on 784-pixel datasets: wrap the 100-d test model behind a 784-input MLP of the same kind
    from crc_core.models import MLP

    big = MLP(784, [16], 10, "softplus")
    ck = save_checkpoint(tmp_path / "m.pt", big, {"dataset": "embedded"})
    out = tmp_path / "r.csv"
    assert main(["certify", "--checkpoint", str(ck), "--limit", "12", "--out", str(out), "--rho", "0.2",
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "certified accuracy" in text and "clean accuracy" in text
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == 12 and {"radius", "certified", "pgd_fooled"} <= set(df.columns)
    outj = tmp_path / "r.json"
    assert main(["certify", "--checkpoint", str(ck), "--limit", "5", "--out", str(outj), "--json",
                 "--targets", "runner-up", "--no-attacks", "--threads", "1"]) == 0
    data = json.loads(outj.read_text())
    assert data["summary"]["n"] == 5 and len(data["images"]) == 5
    assert m.in_dim == 100
