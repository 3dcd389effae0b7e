"""Issue 23 benchmark: the Playground's three waits on a CPU (targets: train ≤ 5 s, pick a point ≤ 0.5 s, redraw
the regions ≤ 0.5 s).

    python bench/bench_playground.py [--threads 2] [--repeat 3] [--record]

For each toy net: training with crc_core's loop (the Playground's settings: 300 points, 40 epochs, batches of
100); "pick a point" = everything the page computes for a point (CRC with its closest boundary point, CROWN,
first-order or App. G, Algorithm 2's path, the true distance by dense polar search); "redraw" = the decision
grid (161²) plus the Plotly figure. The first training in a process also pays a one-time import of
torch._dynamo by torch.optim (measured separately). ``--record`` appends the table to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine, record, timed

from app_lib import playground as pg
from app_lib import playground_figures as pf
from crc_core.plane import plane_grid

RUNS = (
    pg.ToyRun(dataset="moons", widths=(32,), activation="tanh"),
    pg.ToyRun(dataset="moons", widths=(32,), activation="tanh", kind="crt"),
    pg.ToyRun(dataset="spirals", widths=(64, 64), activation="softplus", epochs=60),
    pg.ToyRun(dataset="blobs", classes=4, widths=(16, 16), activation="sigmoid"),
    pg.ToyRun(dataset="circles", widths=(64,), activation="relu"),
)


def _redraw(toy: pg.TrainedToy) -> object:
    grid = plane_grid(toy.model, toy.lo, toy.hi, pg.REGION_GRID)
    return pf.regions_figure(grid, toy.train.images, toy.train.labels, toy.train.class_names, title="t",
                             clickable=True)


def bench(repeat: int) -> list[str]:
    t0 = time.perf_counter()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the one-time import every first training pays
    rows = [f"first torch.optim.Adam in a process (imports torch._dynamo, once): {time.perf_counter() - t0:.2f} s",
            "", "| net | train (s) | test acc | pick a point (s) | redraw regions (s) | CRC / true distance |",
            "|---|---|---|---|---|---|"]
    for run in RUNS:
        train_s, toy = timed(partial(pg.train_toy_now, run), repeat=repeat)
        x0 = pg.default_point(toy)
        pick_s, view = timed(partial(pg.point_view, toy, x0), repeat=repeat)
        draw_s, _ = timed(partial(_redraw, toy), repeat=repeat)
        main = view.radii.get("crc", view.radii.get("relu-quadratic", float("nan")))
        rows.append(f"| {run.dataset} {run.label()} | {train_s:.2f} | {toy.test_accuracy:.0%} | {pick_s:.3f} | "
                    f"{draw_s:.3f} | {main:.4f} / {view.true_distance:.4f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench(args.repeat)
    print(machine())
    print("\n".join(rows))
    if args.record:
        record("Playground (issue 23): train a toy net, pick a point, redraw the regions",
               f"python bench/bench_playground.py --threads {args.threads} --repeat {args.repeat} --record", rows)


if __name__ == "__main__":
    main()
