"""Issue 14 benchmark: 2-D decision-region slices (crc_core.slices) on the shipped 2x[256] and 3x[256] nets.

    python bench/bench_slice.py [--threads 1] [--repeat 3] [--record]

Times decision_slice (classes + margins on a G×G grid, float64, first-layer shortcut) for several G, the naive
way for comparison (all G² points built in ℝ^784 and run through the model in chunks, float32 and float64), and
the second directions (Hessian eigenvectors, PGD). Ratios are measured in one process. ``--record`` appends the
section to docs/slices.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, machine, timed

from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint
from crc_core.data import load_dataset
from crc_core.slices import decision_slice, second_direction

MODELS = ROOT / "assets" / "models"
NAIVE_CHUNK = 8192  # points per forward pass in the naive reference


@torch.no_grad()
def naive_slice(model, x0, u, v, h: float, grid: int, dtype: torch.dtype) -> torch.Tensor:
    """The reference: every grid point x0 + a·u + b·v built in ℝ^D and classified by model(x)."""
    m = model.to(dtype)
    ax = torch.linspace(-h, h, grid, dtype=dtype)
    A, B = ax[None, :].expand(grid, grid).reshape(-1), ax[:, None].expand(grid, grid).reshape(-1)
    x0, u, v = x0.to(dtype), u.to(dtype), v.to(dtype)
    out = torch.empty(grid * grid, dtype=torch.long)
    for s in range(0, grid * grid, NAIVE_CHUNK):
        sl = slice(s, s + NAIVE_CHUNK)
        out[sl] = m(x0 + A[sl, None] * u + B[sl, None] * v).argmax(1)
    model.float()
    return out.reshape(grid, grid)


def bench_model(name: str, x0: torch.Tensor, repeat: int) -> list[str]:
    """Table rows for one shipped model: slice grids, the naive reference, the second directions."""
    model, _ = load_checkpoint(MODELS / f"{name}.pt")
    cert = certify(model, x0[None])
    xb, r, y, t = cert.x_boundary[0], float(cert.radius[0]), int(cert.pred[0]), int(cert.target[0])
    d = second_direction(model, x0, "random", y=y)
    rows = []
    for g in (101, 201, 301, 401) if name == "crt-2x256" else (201,):
        sec, _ = timed(partial(decision_slice, model, x0, xb, d, radius=r, grid=g), repeat=repeat)
        rows.append(f"| {name} | decision_slice (float64, first-layer shortcut) | {g} | {sec:.3f} |")
    s = decision_slice(model, x0, xb, d, radius=r, grid=201)
    for dtype in (torch.float32, torch.float64):
        sec, ref = timed(partial(naive_slice, model, x0, s.u, s.v, float(s.a[-1]), 201, dtype), repeat=repeat)
        agree = float((ref == s.classes).double().mean())
        rows.append(f"| {name} | naive: G² points in ℝ^784, model(x), {str(dtype)[6:]} (class agreement "
                    f"{agree:.5f}) | 201 | {sec:.3f} |")
    for kind in ("hessian-top", "pgd"):
        sec, _ = timed(partial(second_direction, model, x0, kind, y=y, t=t, rho=0.5))
        rows.append(f"| {name} | second_direction({kind!r}) | – | {sec:.3f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="append the results to docs/slices.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x0 = load_dataset("embedded", "test", limit=1).images[0]
    lines = [f"| model | what | G | best of {args.repeat} (s) |", "|---|---|---|---|"]
    for name in ("crt-2x256", "crt-3x256"):
        lines += bench_model(name, x0, args.repeat)
    text = (f"\n### Slice timings ({dt.date.today().isoformat()})\n\n- machine: {machine()}\n"
            f"- command: `python bench/bench_slice.py --threads {args.threads} --repeat {args.repeat}`\n\n"
            + "\n".join(lines) + "\n")
    print(text)
    if args.record:
        with (ROOT / "docs" / "slices.md").open("a", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
