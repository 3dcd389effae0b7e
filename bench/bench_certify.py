"""Issue 3 benchmark: certificates per image on a trained 2x[1024] softplus net, paper vs fast mode.

    python bench/bench_certify.py [--checkpoint PATH] [--n 1000] [--device cpu|cuda] [--threads N]

Without --checkpoint, a 2x[1024] softplus model (γ = 0.01 curvature-regularised, 2 epochs) is trained once with
crc_core.train on full Fashion-MNIST (Debian's copy) or the embedded subset, and cached in runs/bench/.
Reports ms/image and gradient evaluations (median, mean) for runner-up and all-class targets, and the radius
difference fast - paper (must be ≥ -1e-4 on every image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, record, timed

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint, save_checkpoint
from crc_core.data import available_datasets, load_dataset


def bench_model(dataset: str) -> Path:
    path = ROOT / "runs" / "bench" / f"softplus-2x1024-gamma0.01-{dataset}.pt"
    if path.exists():
        return path
    from crc_core.train import TrainConfig, train

    cfg = TrainConfig(dataset=dataset, widths=(1024,), activation="softplus", kind="gamma", gamma=0.01, epochs=2,
                      eval_samples=0, seed=0, device="cpu")
    res = train(cfg)
    save_checkpoint(path, res.model, {"dataset": dataset, "gamma": 0.01, "epochs": 2, "metrics": res.metrics,
                                      "command": "bench/bench_certify.py (TrainConfig γ-regularised)"})
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--paper-n", type=int, default=None, help="images for paper mode (default: --n)")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    names = {d.name for d in available_datasets()}
    dataset = "fashion-mnist" if "fashion-mnist" in names else "embedded"
    ck = Path(a.checkpoint) if a.checkpoint else bench_model(dataset)
    model, meta = load_checkpoint(ck)
    model = model.to(dev)
    ds = load_dataset(meta.get("dataset") or dataset, "test", limit=a.n)
    x, y = ds.images.to(dev), ds.labels.to(dev)
    s_b, bounds = timed(lambda: curvature_bounds(model), sync=True)
    lines = [f"model: {ck.name} ({model.describe()}), {len(ds)} test images of {ds.source}; "
             f"bounds ({bounds.method}, all 90 pairs): {s_b:.2f} s", "",
             "| targets | mode | images | total s | ms/image | grad evals median | mean | exact | cert. acc ρ=0.5 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    results = {}
    for targets in ("runner-up", "all"):
        for mode in ("paper", "fast"):
            n = a.paper_n if (mode == "paper" and a.paper_n) else len(ds)
            s, c = timed(lambda t=targets, m=mode, k=n: certify(model, x[:k], y[:k], targets=t, mode=m,
                                                                 bounds=bounds), sync=True)
            ok = c.correct
            results[(targets, mode)] = c
            lines.append(f"| {targets} | {mode} | {n} | {s:.2f} | {1000 * s / n:.2f} | "
                         f"{float(c.n_grad[ok].double().median()):.0f} | {float(c.n_grad[ok].double().mean()):.0f} | "
                         f"{float(c.exact[ok].double().mean()):.3f} | {float(c.certified(0.5).double().mean()):.4f} |")
    lines.append("")
    for targets in ("runner-up", "all"):
        cp, cf = results[(targets, "paper")], results[(targets, "fast")]
        k = cp.radius.shape[0]
        ok = cp.correct
        diff = (cf.radius[:k] - cp.radius)[ok]
        ratio = float(cp.n_grad[ok].double().median() / cf.n_grad[:k][ok].double().median())
        lines.append(f"- {targets}: median gradient evaluations paper / fast = {ratio:.1f}x; "
                     f"min(radius_fast - radius_paper) = {float(diff.min()):.2e} over {int(ok.sum())} images")
    text = "\n".join(lines)
    if not a.no_record:
        text = record(f"Certificates on {dev.type}: paper vs fast", "python bench/bench_certify.py " +
                      " ".join(sys.argv[1:]), lines)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
