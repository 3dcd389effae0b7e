"""Issue 2 benchmark: curvature bounds for all 90 pairs, and Lemma 1 Hessian + spectrum for 100 images.

    python bench/bench_engine.py [--device cpu|cuda] [--threads N] [--eig verified|eigvalsh|both]
                                 [--no-record]

``--eig``: how the bounds get their extreme eigenvalues (Lanczos + Cholesky proof, the default, or full
float64 eigvalsh); ``both`` times the two in the same process, one row each, plus their largest relative gap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import record, timed

from crc_core.bounds import curvature_bounds
from crc_core.data import load_dataset, shared_mnist_dir
from crc_core.hessian import margin_hessian_eigvals
from crc_core.models import MLP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eig", choices=["verified", "eigvalsh", "both"], default="verified")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    lines = ["| what | seconds |", "| --- | --- |"]

    eigs = ["verified", "eigvalsh"] if a.eig == "both" else [a.eig]
    label = {"verified": "proved eigenvalues: Lanczos + Cholesky, float64",
             "eigvalsh": "exact eigenvalues: eigvalsh, float64"}

    def bounds_rows(title: str, model: MLP, method: str) -> None:
        got = {}
        for eig in eigs:
            s, got[eig] = timed(lambda e=eig: curvature_bounds(model, method=method, eig=e), sync=True)
            lines.append(f"| {title} ({label[eig]}) | {s:.2f} |")
        if len(got) == 2:
            v, e = got["verified"], got["eigvalsh"]
            gap = max(float(((v.m - e.m) / e.m.abs()).abs().max()),
                      float(((v.M - e.M) / e.M.abs()).abs().max()))
            below = bool((v.M < e.M).any() or (v.m > e.m).any())
            lines.append(f"| ↳ verified vs eigvalsh: max relative gap {gap:.1e}, "
                         f"verified ever below: {below} | |")

    deep = MLP(784, [1024, 1024, 1024], 10, "softplus").to(dev)
    for method in ("thm4", "refined"):
        bounds_rows(f"4x[1024] softplus, K for all 90 pairs, {method}", deep, method)
    two = MLP(784, [1024], 10, "softplus").to(dev)
    bounds_rows("2x[1024] softplus, Theorem 3 m and M for all 90 pairs", two, "thm3")
    two_sig = MLP(784, [1024], 10, "sigmoid").to(dev)
    bounds_rows("2x[1024] sigmoid, Theorem 3 for all 90 pairs", two_sig, "thm3")

    root = shared_mnist_dir()
    ds = load_dataset("mnist", "test", root=root, limit=100) if root else load_dataset("embedded", "test", limit=100)
    x = ds.images.to(dev)
    with torch.no_grad():
        z = two(x)
    y = z.argmax(1)
    zz = z.clone()
    zz.scatter_(1, y[:, None], float("-inf"))
    t = zz.argmax(1)
    s, _ev = timed(lambda: margin_hessian_eigvals(two, x, y, t, chunk_size=25), sync=True)
    lines.append(f"| 2x[1024] softplus, Lemma 1 Hessian + full spectrum (eigvalsh float64), 100 {ds.name} images | "
                 f"{s:.2f} |")
    text = "\n".join(lines)
    if not a.no_record:
        text = record(f"Curvature engine on {dev.type}", "python bench/bench_engine.py " + " ".join(sys.argv[1:]),
                      lines)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
