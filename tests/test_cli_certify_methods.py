"""``certify --methods``: one radius_<method> column and one certified-accuracy line per method; ReLU routing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from crc_core.checkpoints import save_checkpoint
from crc_core.cli import main
from crc_core.data import load_dataset
from crc_core.models import MLP

FAST = ["--n0", "20", "--n", "300", "--alpha", "0.01", "--threads", "1"]


def _trained(widths: list[int], activation: str, seed: int = 0) -> MLP:
    """A small 784-input net fitted for 150 Adam steps on the embedded training images (about a second)."""
    ds = load_dataset("embedded", "train", limit=2000)
    torch.manual_seed(seed)
    m = MLP(784, widths, 10, activation)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(150):
        idx = torch.randint(0, len(ds), (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(m(ds.images[idx].reshape(128, -1)), ds.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("methods")
    nets = {"softplus": _trained([16], "softplus"), "relu2": _trained([16], "relu"),
            "relu3": _trained([16, 16], "relu")}
    return {k: save_checkpoint(folder / f"{k}.pt", m, {"dataset": "embedded"}) for k, m in nets.items()}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_method_adds_a_column_and_a_summary_line(ckpts, tmp_path, capsys):
    out = tmp_path / "r.csv"
    rc, text, err = _run(["certify", "--checkpoint", str(ckpts["softplus"]), "--limit", "6", "--rho", "0.2",
                          "--methods", "crc,crown,lipschitz,smoothing", "--out", str(out), *FAST], capsys)
    assert rc == 0, err
    df = pd.read_csv(out)
    assert len(df) == 6
    for m in ("crc", "crown", "lipschitz", "smoothing"):
        assert f"radius_{m}" in df.columns
        assert any(line.strip().startswith(m) and "%" in line for line in text.splitlines()), (m, text)
    # the existing columns stay, and CRC's column is its radius
    assert {"radius", "certified", "pgd_fooled", "attack_upper"} <= set(df.columns)
    assert (df["radius_crc"] == df["radius"]).all()
    assert "smoothed classifier" in text and "1 − α = 0.99" in text
    ok = df["correct"].astype(bool)
    for m in ("crc", "crown", "lipschitz"):  # deterministic radii lie below the attack's distance
        assert (df.loc[ok, f"radius_{m}"] <= df.loc[ok, "attack_upper"] + 1e-9).all()
        assert (df.loc[~ok, f"radius_{m}"] == 0).all()


def test_json_carries_the_columns_and_one_number_per_method(ckpts, tmp_path, capsys):
    outj = tmp_path / "r.json"
    rc, _text, err = _run(["certify", "--checkpoint", str(ckpts["softplus"]), "--limit", "4", "--no-attacks",
                           "--json", "--out", str(outj), "--methods", "crown,smoothing", "--targets", "runner-up",
                           *FAST], capsys)
    assert rc == 0, err
    data = json.loads(outj.read_text())
    s = data["summary"]
    assert s["methods"] == ["crown", "smoothing"] and "certified_accuracy" not in s  # CRC was not asked for
    assert {"radius_crown", "radius_smoothing", "smoothing_abstain"} <= set(data["images"][0])
    assert 0 <= s["certified_accuracy_crown"] <= s["clean_accuracy"]
    assert "probability" in s["smoothing"]["note"] and s["smoothing"]["sigma"] == 0.25


def test_two_layer_relu_defaults_to_app_g_and_crc_is_refused_with_the_reason(ckpts, tmp_path, capsys):
    out = tmp_path / "relu.csv"
    rc, text, err = _run(["certify", "--checkpoint", str(ckpts["relu2"]), "--limit", "3", "--targets", "runner-up",
                          "--rho", "0.1", "--out", str(out), "--threads", "1"], capsys)
    assert rc == 0, err
    df = pd.read_csv(out)
    assert "radius_relu-quadratic" in df.columns and (df.loc[df["correct"], "radius_relu-quadratic"] > 0).all()
    assert (df["radius_relu-quadratic"] <= df["attack_upper"] + 1e-9).all()
    assert "relu-quadratic" in text
    rc, text, err = _run(["certify", "--checkpoint", str(ckpts["relu2"]), "--limit", "2", "--no-attacks",
                          "--methods", "crc,lipschitz", "--threads", "1"], capsys)
    assert rc == 0, err
    assert "crc refused" in err and "ReLU" in err and "relu-quadratic" in err
    assert "lipschitz" in text and "crc: refused" in text


def test_deeper_relu_refuses_crc_and_app_g_but_runs_the_rest(ckpts, capsys):
    rc, _text, err = _run(["certify", "--checkpoint", str(ckpts["relu3"]), "--limit", "2", "--no-attacks",
                           "--threads", "1"], capsys)
    assert rc == 2 and "error: " in err and "ReLU" in err and "crown" in err and "Traceback" not in err
    rc, text, err = _run(["certify", "--checkpoint", str(ckpts["relu3"]), "--limit", "2", "--no-attacks",
                          "--methods", "crc,relu-quadratic,crown", "--threads", "1"], capsys)
    assert rc == 0, err
    assert "crc refused" in err and "relu-quadratic refused" in err and "2-layer" in err
    assert any(line.strip().startswith("crown") for line in text.splitlines())


@pytest.mark.parametrize("flags,expected", [
    (["--methods", "crc,ibp"], "unknown method ibp"),
    (["--methods", ","], "empty"),
    (["--methods", "smoothing", "--sigma", "0"], "--sigma"),
    (["--methods", "smoothing", "--n0", "100", "--n", "10"], "at least the selection samples"),
    (["--methods", "smoothing", "--alpha", "1.5"], "α"),
    (["--methods", "smoothing", "--n0", "0"], "positive integers"),
    (["--methods", "crown", "--targets", "least"], "'all' or 'runner-up'"),
])
def test_bad_flags_are_one_line_errors_before_any_work(flags, expected, ckpts, tmp_path, capsys):
    out = tmp_path / "never.csv"
    rc, _text, err = _run(["certify", "--checkpoint", str(ckpts["softplus"]), "--limit", "2", "--out", str(out),
                           *flags], capsys)
    assert rc == 2 and expected in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("targets", ["runner-up", "all"])
def test_summary_names_each_certified_accuracy_once_in_one_column(targets: str) -> None:
    """With --targets runner-up the paper's line is the chosen one (it was printed twice); values line up."""
    from crc_core.cli.certify import summary_text

    s = {"model": "2x[8] softplus", "dataset": "embedded", "n": 10, "rho": 0.5, "targets": targets, "mode": "fast",
         "bound_method": "thm3", "device": "cpu", "clean_accuracy": 0.9, "certified_accuracy": 0.5,
         "certified_accuracy_runner_up": 0.6, "mean_certificate": 0.7, "certificate_success_rate": 0.3,
         "empirical_robust_accuracy": 0.8, "attack_success_rate": 0.2, "median_n_grad": 20, "seconds": 1.0}
    lines = summary_text(s).splitlines()[1:-1]
    cert = [ln for ln in lines if ln.lstrip().startswith("certified accuracy")]
    assert [ln.split("(")[1].split(")")[0] for ln in cert] == (["runner-up"] if targets == "runner-up"
                                                                else ["all", "runner-up"])
    assert len({len(ln.rstrip()) for ln in lines if ln.rstrip().endswith("%")}) == 1  # one value column
