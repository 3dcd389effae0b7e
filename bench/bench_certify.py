"""Issue 9 benchmark: certificate cost per image and its overhead over the gradients it needs.

    python bench/bench_certify.py [--checkpoint PATH ...] [--n 500] [--paper-n 50] [--device cpu|cuda]
                                  [--threads N] [--repeat 2] [--no-record] [--out FILE]

Default models: a 2x[1024] softplus net (γ = 0.01, 2 epochs on full Fashion-MNIST, trained once with
crc_core.train and cached in runs/bench/, never committed) and the shipped assets/models/crt-3x256.pt; each on
test images of its own dataset. Per model, target setting (runner-up; all with refine="minimum", the classifier's
radius; all with refine="every-target", every class's own certificate) and mode (fast; paper on --paper-n
images): ms/image, gradient evaluations per image (median, mean), and the overhead ratio

    overhead = certify time ÷ (gradient evaluations × cost of one batched margin gradient)

with the gradient cost measured in the same process (best of --repeat runs of MarginOracle on all n images), and
the all-classes ÷ runner-up time. Every time is given twice: wall clock, and the CPU time of this process (with
--threads 1 the CPU time depends far less on other jobs on a loaded machine; the gradient cost is measured both
ways). Float64 finalisation evaluations count as gradient evaluations (they cost about twice a float32 one, which
therefore shows as overhead). Where the fast solver works in the first layer's row space (N1 < D, see
crc_core.row_space) its gradients are cheaper than the full-space one the ratios divide by: a note gives their cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, record, timed

from crc_core.bounds import curvature_bounds
from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint, save_checkpoint
from crc_core.data import available_datasets, load_dataset
from crc_core.hessian import MarginOracle
from crc_core.row_space import RowSpace
from crc_core.targets import runner_up

# (targets, refine): the paper's runner-up radius; the classifier's radius (every target that can be the image's
# minimum solved fully, the others left with a sound bound); every class's own certificate
SETTINGS = (("runner-up", "every-target"), ("all", "minimum"), ("all", "every-target"))


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


def cpu_timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Best wall time (s), best CPU time of this process (s) over ``repeat`` runs, and the last result. With one
    thread the CPU time hardly depends on other jobs on the machine; the wall time does."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def grad_cost(model, x: torch.Tensor, repeat: int) -> tuple[float, float]:
    """Seconds per row (wall, CPU) of one batched margin gradient (f and ∇f for (image, runner-up) rows, all n
    at once)."""
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    oracle = MarginOracle(model, pred, runner_up(logits, pred))
    oracle(x)  # warm-up
    w, c, _ = cpu_timed(lambda: oracle(x), max(3, repeat))
    return w / x.shape[0], c / x.shape[0]


def row_space_note(model, x: torch.Tensor, repeat: int, g1c: float) -> str:
    """Where the fast solver works in the first layer's row space (crc_core.row_space): the CPU cost of one batched
    margin gradient there, as a line for the table's notes (empty otherwise)."""
    space = RowSpace.of(model)
    if space is None:
        return ""
    origin = x.double().mean(0)
    _, c = grad_cost(space.model_on(model, origin), space.coords(x, origin), repeat)
    return (f"- the fast solver works in the first layer's {space.basis.shape[1]}-dimensional row space "
            f"(crc_core.row_space), where one batched margin gradient costs {1e6 * c:.1f} µs/row CPU "
            f"({c / g1c:.2f} × the full-space gradient above, which the overhead ratios divide by); the proved first "
            "step at x0 stays in the full space")


def bench_one(ck: Path, dataset: str, n: int, paper_n: int, repeat: int, dev: torch.device) -> list[str]:
    model, meta = load_checkpoint(ck)
    model = model.to(dev).eval()
    ds = load_dataset(meta.get("dataset") or dataset, "test", limit=n)
    x, y = ds.images.reshape(len(ds), -1).to(dev), ds.labels.to(dev)
    s_b, bounds = timed(lambda: curvature_bounds(model), sync=True)
    g1, g1c = grad_cost(model, x, repeat)
    lines = [f"**{ck.name}** ({model.describe()}), {len(ds)} test images of {ds.source}; bounds ({bounds.method}, "
             f"all pairs): {s_b:.2f} s; one batched margin gradient: {1e6 * g1:.1f} µs/row wall, "
             f"{1e6 * g1c:.1f} µs/row CPU", "",
             "| targets (refine) | mode | images | ms/image | CPU ms/image | grad evals / image: median | mean | "
             "overhead ratio | CPU overhead ratio | exact |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    per_img: dict[tuple[str, str], tuple[float, float]] = {}
    res = {}
    for targets, refine in SETTINGS:
        for mode in ("fast", "paper"):
            k = n if mode == "fast" else min(paper_n, n)
            if k == 0 or (mode == "paper" and refine == "minimum"):  # paper mode solves every target
                continue
            s, sc, c = cpu_timed(lambda t=targets, m=mode, k=k, r=refine: certify(
                model, x[:k], y[:k], targets=t, mode=m, bounds=bounds, refine=r), repeat if mode == "fast" else 1)
            name = targets if targets == "runner-up" else f"all ({refine})"
            res[(name, mode)] = c
            evals = float(c.n_grad.double().sum())
            per_img[(name, mode)] = (s / k, sc / k)
            ok = c.correct
            lines.append(f"| {name} | {mode} | {k} | {1000 * s / k:.2f} | {1000 * sc / k:.2f} | "
                         f"{float(c.n_grad.double().median()):.0f} | {evals / k:.1f} | {s / (evals * g1):.2f} | "
                         f"{sc / (evals * g1c):.2f} | {float(c.exact[ok].double().mean()):.3f} |")
    lines.append("")
    note = row_space_note(model, x, repeat, g1c)
    if note:
        lines.append(note)
    for name, mode in per_img:
        if name != "runner-up":
            (wa, ca), (wr, cr) = per_img[(name, mode)], per_img[("runner-up", mode)]
            lines.append(f"- {mode}, {name}: ÷ runner-up time per image = {wa / wr:.2f} (CPU: {ca / cr:.2f})")
    cp, cf = res.get(("runner-up", "paper")), res.get(("runner-up", "fast"))
    if cp is not None and cf is not None:
        k = cp.radius.shape[0]
        diff = (cf.radius[:k] - cp.radius)[cp.correct]
        lines.append(f"- runner-up: min(radius_fast - radius_paper) = {float(diff.min()):.2e} over "
                     f"{int(cp.correct.sum())} images")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", action="append", default=None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--paper-n", type=int, default=50, help="images for paper mode (0: skip)")
    ap.add_argument("--repeat", type=int, default=2, help="timings: best of this many runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--out", default=None, help="also append the lines to this file")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    names = {d.name for d in available_datasets()}
    dataset = "fashion-mnist" if "fashion-mnist" in names else "embedded"
    cks = ([Path(c) for c in a.checkpoint] if a.checkpoint
           else [bench_model(dataset), ROOT / "assets" / "models" / "crt-3x256.pt"])
    lines: list[str] = []
    for ck in cks:
        lines += bench_one(ck, dataset, a.n, a.paper_n, a.repeat, dev)
    text = "\n".join(lines)
    if a.out:
        with open(a.out, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if not a.no_record:
        text = record(f"Certificate cost and overhead on {dev.type} (issue 9)",
                      "python bench/bench_certify.py " + " ".join(sys.argv[1:]), lines)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
