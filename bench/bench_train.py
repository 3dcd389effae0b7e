"""Benchmark: one training epoch of a 2x[256] softplus CRT model on the embedded subset (10k images).

Speed target (issue 4): ≤ 20 s per epoch on 2 CPU cores with the attack's iteration counts as configured.
Reports, per setting, wall seconds and CPU seconds of one epoch (training only, no evaluation), the mean number
of gradient evaluations the curvature attack spent per image (machine-independent), and the test accuracy after
that epoch. Prints a Markdown table for docs/benchmarks.md.

    .venv/bin/python bench/bench_train.py                       # default sweep, 2 threads
    .venv/bin/python bench/bench_train.py --attack 8x5 30x20 --threads 1 --kinds crt
    .venv/bin/python bench/bench_train.py --attack 8x5 30x10 --threads 1 --kinds crt --eps 1.58 \
        --bounds regularizer theorem3                          # the CRT attack's curvature bounds (issue 26)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crc_core.data import load_dataset
from crc_core.train import TrainConfig, train
from crc_core.train_config import ATTACK_BOUNDS, parse_widths


def run(kind: str, outer: int, inner: int, widths: tuple[int, ...], batch: int, data, eps: float = 0.5,
        bounds: str = "regularizer") -> dict:
    cfg = TrainConfig(dataset="embedded", widths=widths, activation="softplus", kind=kind, gamma=0.01,
                      crt_eps=eps, epochs=1, batch_size=batch, attack_outer=outer, attack_inner=inner,
                      attack_bounds=bounds, eval_samples=0, device="cpu", seed=0, log_every=10**6)
    cpu0, t0 = time.process_time(), time.perf_counter()
    res = train(cfg, data=data)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    steps = [e for e in res.history if e["kind"] == "step"]
    grads = sum(e.get("attack_grads", 0.0) for e in steps) / max(1, len(steps))
    attack = f"{outer}x{inner}, {bounds}" if kind == "crt" else "-"
    return {"kind": kind, "attack": attack, "batch": batch,
            "wall_s": wall, "cpu_s": cpu, "grads": grads, "test_acc": res.metrics["test_accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attack", nargs="+", default=["8x5", "10x10", "30x20"],
                   help="CRT attack settings OUTERxINNER (bisection steps x MM steps); paper: 30x20")
    p.add_argument("--kinds", nargs="+", default=["standard", "gamma", "crt"])
    p.add_argument("--widths", default="256")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eps", type=float, default=0.5, help="CRT attack radius; default 0.5")
    p.add_argument("--bounds", nargs="+", default=["regularizer"], choices=ATTACK_BOUNDS,
                   help="the CRT attack's curvature bounds (TrainConfig.attack_bounds); default regularizer")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = (load_dataset("embedded", "train"), load_dataset("embedded", "test"))
    widths = parse_widths(args.widths)
    print(f"# machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model: {len(widths) + 1}x{list(widths)} softplus; "
          f"data: embedded 10k train; batch {args.batch}; CRT ε = {args.eps:g}")
    print("| kind | attack (outer x inner, bounds) | epoch wall s | epoch CPU s | attack grads / image | test acc |")
    print("|---|---|---|---|---|---|")
    settings = [(k, 0, 0, "regularizer") for k in args.kinds if k != "crt"]
    if "crt" in args.kinds:
        settings += [("crt", *map(int, a.lower().split("x")), b) for a in args.attack for b in args.bounds]
    warm = TrainConfig(widths=widths, kind="crt", epochs=1, max_steps=2, eval_samples=0, device="cpu")
    train(warm, data=data)  # one-time costs (imports, allocator) outside the timings
    for kind, outer, inner, bounds in settings:
        r = run(kind, max(outer, 1), max(inner, 1), widths, args.batch, data, args.eps, bounds)
        print(f"| {r['kind']} | {r['attack']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['grads']:.1f} | "
              f"{r['test_acc']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
