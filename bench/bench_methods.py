"""Issue 11 benchmark: every certificate on the shipped models, mean radius and time per image per method.

    python bench/bench_methods.py [--n 100] [--targets runner-up|all] [--device cpu|cuda] [--threads N]
                                  [--models standard-2x256,...] [--smoothing-n 10000]

For each model in assets/models/, the first --n images of the embedded test set are certified by CRC, CROWN, the
first-order (Lipschitz) bound and randomized smoothing (σ = 0.25, n0 = 100, α = 0.001; a certificate of the smoothed
classifier with probability ≥ 1 − α), and attacked (PGD, for the upper end of [best sound radius, attack distance]).
Prints a markdown table: mean certificate over the correctly classified images, and seconds per image (the wall
time of the batch / n). Numbers go to docs/comparison.md by hand, with the machine line printed here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, machine

from crc_core.checkpoints import load_checkpoint
from crc_core.compare import DEFAULT_METHODS as METHODS
from crc_core.compare import compare_certificates
from crc_core.data import load_dataset

DEFAULT_MODELS = ("standard-2x256", "gamma-2x256", "crt-2x256", "standard-3x256", "crt-3x256")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--targets", choices=("runner-up", "all"), default="runner-up")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--smoothing-n", type=int, default=10_000)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset("embedded", "test", limit=args.n)
    print(f"machine: {machine()}; {args.n} embedded test images, targets = {args.targets}")
    head = " | ".join(f"{m}" for m in METHODS)
    print(f"| model | acc | {head} | attack (mean upper) | best sound method | s/image: {head} |")
    print("|---" * (4 + 2 * len(METHODS)) + "|")
    for name in args.models.split(","):
        model, _ = load_checkpoint(ROOT / "assets" / "models" / f"{name}.pt", map_location=args.device)
        res = compare_certificates(model, ds.images, ds.labels, targets=args.targets,
                                   smoothing_options={"n": args.smoothing_n})
        ok = res.correct
        means = [res.mean_certificate(m) for m in METHODS]
        det = {m: res.mean_certificate(m) for m in METHODS if res.methods[m].deterministic}
        upper = res.attack_upper[ok]
        upper_mean = float(upper[torch.isfinite(upper)].mean())
        times = [res.methods[m].seconds_per_image for m in METHODS]
        assert not res.violation.any(), f"{name}: a deterministic radius above the attack's distance"
        print(f"| {name} | {float(ok.double().mean()):.0%} | " + " | ".join(f"{v:.3f}" for v in means)
              + f" | {upper_mean:.3f} | {max(det, key=det.get)} | " + " | ".join(f"{t:.3f}" for t in times) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
