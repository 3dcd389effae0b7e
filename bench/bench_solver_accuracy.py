"""How far the float32 fast solver's radii lie below the same solver run in float64 (issue 9: the yardstick for
judging a change of the solver's float32 path).

    python bench/bench_solver_accuracy.py [--checkpoint PATH ...] [--n 300] [--targets runner-up|all]
                                          [--threads N] [--no-record]

certify() runs twice on the same images: on the float32 model (what every user gets) and on its float64 copy
(the same algorithm with float64 iterates; its tolerances scale with the dtype, so it stops far closer to the dual
optimum). Both radii are proved lower bounds; their difference is what the float32 path leaves on the table. Rows are
split into exact certificates (primal = dual: both runs reach the boundary distance) and non-exact ones (η at the
top of its range), where the float32 iterates stop at their own precision, about ‖∇F_η‖ ≈ 1e-6. Any change of the
float32 path moves a non-exact radius within that band, which is why the stored-reference test
(tests/test_certify_reference.py, 1e-6) pins the path; this script says how wide the band is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_certify import bench_model
from common import ROOT, record

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint
from crc_core.data import available_datasets, load_dataset
from crc_core.models import as_dtype


def shortfall_lines(name: str, r32: torch.Tensor, r64: torch.Tensor, exact: torch.Tensor) -> list[str]:
    """Table rows: per kind of row, count and the float64 − float32 radius gap (median, 99th percentile, max,
    largest relative), and how many rows lie more than 1e-6 below."""
    out = []
    gap = (r64.double() - r32.double())
    for kind, mask in (("exact", exact), ("not exact", ~exact & (r64 > 0))):
        g = gap[mask]
        if g.numel() == 0:
            continue
        q = torch.quantile(g, torch.tensor([0.5, 0.99], dtype=g.dtype))
        rel = (g / r64.double()[mask]).max()
        out.append(f"| {name} | {kind} | {g.numel()} | {q[0]:.1e} | {q[1]:.1e} | {g.max():.1e} | {rel:.1e} | "
                   f"{int((g > 1e-6).sum())} |")
    return out


def run_model(ck: Path, dataset: str, n: int, targets: str) -> list[str]:
    model, meta = load_checkpoint(ck)
    ds = load_dataset(meta.get("dataset") or dataset, "test", limit=n)
    x = ds.images.reshape(len(ds), -1)
    m64 = as_dtype(model, torch.float64)
    b32, b64 = curvature_bounds(model), curvature_bounds(m64)  # not timed
    t0 = time.perf_counter()
    c32 = certify(model, x, targets=targets, bounds=b32)
    t1 = time.perf_counter()
    c64 = certify(m64, x.double(), targets=targets, bounds=b64)
    t2 = time.perf_counter()
    name = f"{ck.name} ({targets}; float32 {1e3 * (t1 - t0) / len(ds):.2f} ms/img, {c32.n_grad.double().mean():.1f} " \
           f"grads; float64 {1e3 * (t2 - t1) / len(ds):.2f} ms/img, {c64.n_grad.double().mean():.1f} grads)"
    if targets == "all":  # every class's own radius (refine="every-target", the default)
        done = ~torch.isnan(c64.radius_by_class)
        return shortfall_lines(name, c32.radius_by_class[done], c64.radius_by_class[done],
                               c64.exact_by_class[done])
    return shortfall_lines(name, c32.radius, c64.radius, c64.exact)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", action="append", type=Path)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--targets", choices=("runner-up", "all"), default="runner-up")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dataset = "fashion-mnist" if "fashion-mnist" in {d.name for d in available_datasets()} else "embedded"
    cks = args.checkpoint or [bench_model(dataset), ROOT / "assets" / "models" / "crt-3x256.pt"]
    lines = ["| model | rows | count | gap median | gap 99 % | gap max | max gap / radius | rows > 1e-6 below |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for ck in cks:
        lines += run_model(ck, dataset, args.n, args.targets)
    print("\n".join(lines))
    if not args.no_record:
        record("Float32 solver vs the same solver in float64 (issue 9)", " ".join(["python", *sys.argv]), lines)


if __name__ == "__main__":
    main()
