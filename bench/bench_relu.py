"""Issue 12 benchmark: the App. G quadratic certificate on a 2-layer ReLU net, time per image.

    python bench/bench_relu.py [--width 256] [--n 20] [--threads 1] [--record]

"2-layer" = one hidden layer, ``MLP(784, [W], 10, "relu")`` ("2x[W]"). The model is trained once with plain
cross-entropy (Adam, 3 epochs) on the embedded Fashion-MNIST subset and cached in runs/bench/. Reports s/image for
all-class and runner-up targets, the median radius, certified accuracy at ρ = 0.5, the bisection steps, and the
radius against the distance at which L2 PGD flips the prediction (an upper bound on the true distance; any PGD
flip inside a radius would be a soundness failure).
``--record`` appends the section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, machine, record

from crc_core.attack import pgd_attack
from crc_core.baselines.relu_quadratic import certify_relu
from crc_core.data import load_dataset
from crc_core.models import MLP


def relu_model(width: int) -> MLP:
    path = ROOT / "runs" / "bench" / f"relu-2x{width}-embedded.pt"
    model = MLP(784, [width], 10, "relu")
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    ds = load_dataset("embedded", "train")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        for idx in torch.randperm(len(ds.labels), generator=g).split(128):
            loss = F.cross_entropy(model(ds.images[idx]), ds.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def attack_distance(model: MLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smallest ε on a geometric grid (0.02 .. 5) at which L2 PGD (no pixel box) changes the prediction: an upper
    bound on the distance to the decision boundary (inf where none)."""
    out = torch.full((x.shape[0],), float("inf"))
    for eps in torch.logspace(math.log10(0.02), math.log10(5.0), 40).flip(0):
        _, fooled = pgd_attack(model, x, y, float(eps), steps=50, restarts=2, clamp=False)
        out = torch.where(fooled, eps, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = relu_model(args.width).eval()
    test = load_dataset("embedded", "test", limit=args.n)
    lines = [f"2x[{args.width}] relu, {args.n} embedded test images, accuracy "
             f"{float((model(test.images).argmax(1) == test.labels).float().mean()):.3f}", "",
             "| targets | s/image | median radius | certified acc @0.5 | bisection steps "
             "| median radius / PGD distance | PGD flips inside the radius |", "|---|---|---|---|---|---|---|"]
    pred = model(test.images).argmax(1)
    upper = attack_distance(model, test.images, pred)
    for targets in ("all", "runner-up"):
        t0 = time.perf_counter()
        res = certify_relu(model, test.images, test.labels, targets=targets)
        dt = (time.perf_counter() - t0) / args.n
        ok = res.correct & torch.isfinite(upper)
        lines.append(f"| {targets} | {dt:.2f} | {float(res.radius.median()):.3f} | "
                     f"{float(res.certified(0.5).float().mean()):.3f} | {res.n_steps} | "
                     f"{float((res.radius[ok] / upper[ok]).median()):.3f} | "
                     f"{int((upper[ok] < res.radius[ok]).sum())} |")
    cmd = "python bench/bench_relu.py " + " ".join(sys.argv[1:])
    if args.record:
        print(record("App. G ReLU certificate (issue 12)", cmd, lines))
    else:
        print("\n".join([machine(), cmd, "", *lines]))


if __name__ == "__main__":
    main()
