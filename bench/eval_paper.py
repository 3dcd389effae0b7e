"""Evaluate checkpoints the way the paper's tables do (Tables 4, 9, 16; App. H.1) and print Markdown rows.

For each checkpoint (trained by `python -m crc_core train`, see docs/reproduction.md):
- standard accuracy on the whole test split;
- certified robust accuracy at each ρ on a fixed random sample of test images (the same images for every model):
  the fraction that is correctly classified with certified radius ≥ ρ, against the runner-up class (the paper's
  metric) and against every class (the classifier's certificate);
- K_lb and K_ub as in App. H.1: per (prediction, runner-up) pair, K_lb = max |λ(∇²f)| over the sample's images of
  that pair (power iteration with Hessian-vector products: a lower bound), K_ub = the certified bound of that pair;
  both averaged over the pairs with at least --min-count images (the paper: ≥ 100 of 10,000 test images).
  K_ub is given for our default bound (Theorem 3 for 2 layers, refined Theorem 4 deeper) and for Theorem 4 as in
  the paper.

    .venv/bin/python bench/eval_paper.py runs/repro/*.pt --dataset fashion-mnist --rho 0.5 1.58 \\
        --samples 1000 --jsonl runs/repro/results.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import append_jsonl

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint
from crc_core.curvature_stats import measured_curvature
from crc_core.data import load_dataset
from crc_core.metrics import fixed_eval_sample


def evaluate_checkpoint(path: Path, dataset: str, rhos: list[float], samples: int, min_count: int,
                        klb_iters: int) -> dict:
    t0 = time.perf_counter()
    model, meta = load_checkpoint(path)
    test = load_dataset(dataset, "test")
    x_all, y_all = test.images, test.labels
    with torch.no_grad():
        acc = float(torch.cat([model(x_all[s:s + 2000]).argmax(1) for s in range(0, len(test), 2000)])
                    .eq(y_all).float().mean())
    idx = fixed_eval_sample(len(test), samples)
    x, y = x_all[idx], y_all[idx]
    bounds = curvature_bounds(model)  # all pairs, default method (certification grade)
    cert = certify(model, x, y, targets="all", mode="fast", bounds=bounds, refine="minimum")
    row: dict = {"checkpoint": str(path), "label": meta.get("label"), "dataset": dataset,
                 "epochs": meta.get("epochs"), "command": meta.get("command"), "standard_accuracy": acc,
                 "samples": int(x.shape[0]), "bound_method": bounds.method}
    correct = cert.correct
    for rho in rhos:
        row[f"certified_runner_up@{rho:g}"] = float((correct & (cert.runner_up_radius >= rho)).float().mean())
        row[f"certified_all@{rho:g}"] = float((correct & (cert.radius >= rho)).float().mean())
    row["mean_radius_runner_up"] = float(cert.runner_up_radius[correct].mean()) if correct.any() else 0.0
    row["mean_radius_all"] = float(cert.radius[correct].mean()) if correct.any() else 0.0
    pc = measured_curvature(model, x, n_iter=klb_iters)
    mask = pc.mask(min_count)
    ys, ts = mask.nonzero(as_tuple=True)
    row["pairs"] = int(mask.sum())
    row["min_count"] = min_count
    row["K_lb"] = pc.mean_K_lb(min_count)
    if row["pairs"]:
        row["K_ub"] = float(bounds.for_pairs(ys, ts).K.mean())
        row["K_ub_thm4"] = float(curvature_bounds(model, ys, ts, method="thm4").K.mean())
    else:
        row["K_ub"] = row["K_ub_thm4"] = float("nan")
    row["seconds"] = time.perf_counter() - t0
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--rho", nargs="+", type=float, default=[0.5, 1.58])
    p.add_argument("--samples", type=int, default=1000, help="fixed random test images to certify")
    p.add_argument("--min-count", type=int, default=None,
                   help="pairs with at least this many sample images (default: 1%% of --samples, as the paper's "
                        "100 of 10,000)")
    p.add_argument("--klb-iters", type=int, default=60, help="power-iteration steps for K_lb")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per checkpoint here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    min_count = args.min_count if args.min_count is not None else max(1, args.samples // 100)
    head = ["model", "epochs", "std acc"] + [f"cert@{r:g} runner-up / all" for r in args.rho] + [
        "K_lb", "K_ub", "K_ub (Thm 4)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for path in args.checkpoints:
        r = evaluate_checkpoint(path, args.dataset, args.rho, args.samples, min_count, args.klb_iters)
        cells = [str(r["label"]), str(r["epochs"]), f"{100 * r['standard_accuracy']:.2f}%"]
        cells += [f"{100 * r[f'certified_runner_up@{x:g}']:.2f}% / {100 * r[f'certified_all@{x:g}']:.2f}%"
                  for x in args.rho]
        cells += [f"{r['K_lb']:.4g}", f"{r['K_ub']:.4g}", f"{r['K_ub_thm4']:.4g}"]
        print("| " + " | ".join(cells) + " |", flush=True)
        append_jsonl(args.jsonl, r)


if __name__ == "__main__":
    main()
