"""``python -m crc_core certify``: certified radii (and attacks) for test images of a checkpoint, to CSV/JSON."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, get_args

from ..bounds import Method as BoundMethod
from ..certify import SOLVER_MODES, TARGET_MODES
from ..data import DATASET_NAMES, SPLITS, in_unit_box
from ..errors import CRCError
from . import certify_methods as cm
from .common import output_file, require_at_least_one, resolve_device, set_threads, write_output
from .progress import Progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certify",
        help="certify test images of a checkpoint: provable L2 radii, attacks, accuracy table",
        description=(
            "Compute curvature-based robustness certificates (CRC) for test images. For each image the certified "
            "radius is a proven lower bound on the L2 distance to the nearest input that changes the prediction "
            "(all other classes by default). Images are also attacked at radius --rho (PGD and the paper's "
            "Algorithm 2), giving the empirical side of the picture. Writes a per-image CSV (or JSON) and prints a "
            "summary like the paper's tables. --methods adds CROWN, the first-order (Lipschitz) bound, randomized "
            "smoothing and, for 2-layer ReLU nets, the App. G certificate (the default for them): one "
            "radius_<method> column and one certified-accuracy line each. On a deeper ReLU net CRC is refused with "
            "the reason and the other methods run."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `python -m crc_core train`")
    p.add_argument("--dataset", default="embedded", help=" | ".join(DATASET_NAMES))
    p.add_argument("--data-root", default=None, help="folder with IDX files (default: search the usual places)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--rho", type=float, default=0.5, help="radius ρ for certified / empirical robust accuracy")
    p.add_argument("--targets", default="all", choices=TARGET_MODES,
                   help="'all' certifies the classifier; 'runner-up' is the paper's setting")
    p.add_argument("--mode", default="fast", choices=SOLVER_MODES,
                   help="solver: 'fast' (default) or 'paper' (Algorithm 1 as written: 30x20 steps)")
    p.add_argument("--bounds", default="auto", choices=get_args(BoundMethod),
                   help="curvature bound: auto = Theorem 3 for 2 layers, refined Theorem 4 deeper")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-attacks", action="store_true", help="skip PGD / Algorithm 2 at ρ")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy 2-core machine)")
    p.add_argument("--local", action="store_true",
                   help="2-layer nets: refine each certificate with local curvature bounds (paper section 7.4)")
    p.add_argument("--out", default=None, help="write the per-image table here (.csv, or .json with --json)")
    p.add_argument("--json", action="store_true", help="write JSON (table + summary) instead of CSV")
    cm.add_flags(p)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_checkpoint
    from ..data import load_dataset

    require_at_least_one("--limit", args.limit)
    require_at_least_one("--batch-size", args.batch_size)
    asked = cm.parse_methods(args.methods)
    smoothing = cm.check_smoothing_flags(args) if asked and "smoothing" in asked else {}
    if not (args.rho > 0 and args.rho < float("inf")):
        raise CRCError(f"--rho: ρ must be a positive finite number, got {args.rho!r}.")
    set_threads(args.threads)
    device = resolve_device(args.device)
    out = output_file(args.out, "results.csv")  # fail before the work, not after it (folders made at the end)
    model, _meta = load_checkpoint(args.checkpoint, map_location="cpu")
    methods, refused = cm.choose_methods(model, asked, args.targets)
    model = model.to(device)
    ds = load_dataset(args.dataset, args.split, root=args.data_root, limit=args.limit)
    if ds.in_dim != model.in_dim or ds.n_classes != model.n_classes:
        raise CRCError(f"The model expects {model.in_dim} inputs and {model.n_classes} classes; the dataset has "
                       f"{ds.in_dim} and {ds.n_classes}.")
    t0 = time.perf_counter()
    x, y = ds.images.to(device), ds.labels.to(device)
    table, s = _crc_table(model, x, y, args) if "crc" in methods else (None, _plain_summary(args, len(ds)))
    others = tuple(m for m in methods if m != "crc")
    if others:
        extra = cm.run_methods(model, x, y, others, targets=args.targets, attack=not args.no_attacks,
                               smoothing=smoothing, batch_size=args.batch_size)
        if table is None:
            table = extra
            s["clean_accuracy"] = float(table["correct"].mean())
        else:
            table = table.join(extra.drop(columns=["index", "label", "pred", "correct"]))
    if "crc" in methods:
        table["radius_crc"] = table["radius"]
    s.update(cm.method_summary(table, methods, args.rho), methods=list(methods), refused=refused)
    if "smoothing" in methods:
        s["smoothing"] = dict(smoothing, note=cm.SMOOTHING_NOTE.format(sigma=smoothing["sigma"],
                                                                    p=1 - smoothing["alpha"]))
    s.update(seconds=round(time.perf_counter() - t0, 3), checkpoint=str(args.checkpoint), dataset=ds.source,
             device=str(device), model=model.describe())
    if out is not None:
        text = (json.dumps({"summary": s, "images": table.to_dict(orient="records")}, indent=1, default=float)
                if args.json else table.to_csv(index=False))
        write_output(out, lambda p: p.write_text(text))
    print(summary_text(s))
    return 0


def _crc_table(model, x, y, args: argparse.Namespace):  # -> (DataFrame, summary dict)
    """CRC's evaluation (certificates and attacks at ρ) as before --methods existed."""
    from ..bounds import curvature_bounds
    from ..evaluate import evaluate

    progress = Progress(x.shape[0], "certifying", "img")
    try:
        bounds = curvature_bounds(model, method=args.bounds)
        res = evaluate(model, x, y, rho=args.rho, targets=args.targets, mode=args.mode, attacks=not args.no_attacks,
                       bounds=bounds, batch_size=args.batch_size, local=args.local,
                       progress=lambda done, _total: progress.update(done), clamp=in_unit_box(args.dataset))
    finally:
        progress.close()
    return res.table, dict(res.summary)


def _plain_summary(args: argparse.Namespace, n: int) -> dict[str, Any]:
    return {"n": n, "rho": float(args.rho), "targets": args.targets}


def summary_text(s: dict[str, Any]) -> str:
    """The summary as a small table like the paper's (fractions as percentages); one line per method."""
    pct = lambda v: f"{100 * v:6.2f}%"  # noqa: E731
    crc = "certified_accuracy" in s
    setting = f", mode = {s['mode']}, bounds = {s['bound_method']}" if crc else ""
    lines = [f"model {s['model']} on {s['dataset']}, {s['n']} images, ρ = {s['rho']}, targets = {s['targets']}"
             f"{setting}, device = {s['device']}",
             f"  clean accuracy                 {pct(s['clean_accuracy'])}"]
    if crc:
        lines.append(f"  certified accuracy ({s['targets']})".ljust(33) + pct(s['certified_accuracy']))
        if s["targets"] != "runner-up":  # the paper's metric, beside the chosen targets' one
            lines.append(f"  certified accuracy (runner-up) {pct(s['certified_accuracy_runner_up'])}")
        lines += [f"  mean certificate               {s['mean_certificate']:.4f}",
                  f"  certificate success (exact)    {pct(s['certificate_success_rate'])}"]
        if "empirical_robust_accuracy" in s:
            lines += [f"  empirical robust accuracy      {pct(s['empirical_robust_accuracy'])}",
                      f"  attack success (Alg. 2)        {pct(s['attack_success_rate'])}"]
    if s.get("methods", ["crc"]) != ["crc"]:
        lines += cm.method_lines(s)
    if crc:
        lines.append(f"  median gradient evaluations    {s['median_n_grad']:.0f}   ({s['seconds']:.1f} s)")
    else:
        lines.append(f"  ({s['seconds']:.1f} s)")
    return "\n".join(lines)
