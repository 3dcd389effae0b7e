"""``certify --methods``: CRC beside CROWN, the first-order bound, randomized smoothing and App. G, per image.

:func:`run_methods` runs :func:`crc_core.compare.compare_certificates` on the images in batches (CRC itself comes
from :func:`crc_core.evaluate.evaluate`, see cli/certify.py) and returns one row per image with a
``radius_<method>`` column per method; :func:`method_summary` adds one certified-accuracy number per method.
Randomized smoothing certifies the *smoothed* classifier, with probability ≥ 1 − α: every line that shows it says so.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from ..errors import CRCError
from .progress import Progress

SMOOTHING_NOTE = ("smoothing certifies the smoothed classifier (Gaussian noise σ = {sigma:g}), not the model, "
                  "and holds with probability ≥ 1 − α = {p:g}")


def add_flags(p: argparse.ArgumentParser) -> None:
    """--methods and the smoothing flags."""
    p.add_argument("--methods", default=None,
                   help="comma-separated certificates: crc, crown, lipschitz, smoothing, relu-quadratic (App. G, "
                        "2-layer ReLU nets); one radius_<method> column each (default: crc, or relu-quadratic "
                        "for a 2-layer ReLU model)")
    g = p.add_argument_group("randomized smoothing (--methods ...,smoothing): a certificate of the smoothed "
                             "classifier, with probability ≥ 1 − α")
    g.add_argument("--sigma", type=float, default=0.25, help="noise σ (> 0)")
    g.add_argument("--n0", type=int, default=100, help="selection samples per image (≥ 1)")
    g.add_argument("--n", type=int, default=10_000, help="estimation samples per image (≥ n0)")
    g.add_argument("--alpha", type=float, default=0.001, help="failure probability α, in (0, 1)")


def parse_methods(text: str | None) -> tuple[str, ...] | None:
    """--methods "a,b" -> ("a", "b") (known names, no repeats); None when the flag is not given."""
    from ..compare import ALL_METHODS

    if text is None:
        return None
    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in ALL_METHODS]
    if not names or unknown:
        raise CRCError(f"--methods {text!r}: {'unknown method ' + ', '.join(unknown) if unknown else 'empty'}; "
                       f"use a comma-separated list of {', '.join(ALL_METHODS)}.")
    return names


def check_smoothing_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The smoothing flags as options for compare_certificates, or a CRCError naming the flags."""
    from ..baselines.smoothing import check_smoothing_args

    try:
        check_smoothing_args(args.sigma, args.n0, args.n, args.alpha)
    except CRCError as exc:
        raise CRCError(f"smoothing flags (--sigma, --n0, --n, --alpha): {exc}") from None
    return {"sigma": args.sigma, "n0": args.n0, "n": args.n, "alpha": args.alpha}


def choose_methods(model, asked: tuple[str, ...] | None, targets: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the methods to run on ``model``, refused method -> reason): those asked (default: its main certificate)
    that apply; a refused one is reported on stderr with the reason; if none is left, the reasons are the error."""
    from ..compare import default_methods, refusal

    methods = asked if asked is not None else default_methods(model)
    reasons = {m: why for m in methods if (why := refusal(model, m)) is not None}
    left = tuple(m for m in methods if m not in reasons)
    if not left:
        raise CRCError(" ".join(f"{m}: {why}" for m, why in reasons.items()))
    for m, why in reasons.items():
        print(f"warning: {m} refused: {why}", file=sys.stderr)
    if targets not in ("all", "runner-up") and set(left) - {"crc"}:
        raise CRCError(f"--targets {targets} is for CRC alone; with --methods use 'all' or 'runner-up'.")
    return left, reasons


def run_methods(model, images, labels, methods: tuple[str, ...], *, targets: str, attack: bool,
                smoothing: dict[str, Any], batch_size: int):  # -> pandas.DataFrame
    """One row per image: index, label, pred, correct, radius_<m> and time_<m> (s per image) per method, the
    methods' flags, attack_upper (distance of the closest prediction change found; inf without --attacks)."""
    import pandas as pd

    from ..compare import Targets, compare_certificates

    frames = []
    N = images.shape[0]
    progress = Progress(N, f"certifying ({', '.join(methods)})", "img")
    try:
        for s in range(0, N, batch_size):
            res = compare_certificates(model, images[s:s + batch_size], labels[s:s + batch_size], methods=methods,
                                       targets=cast(Targets, targets), attack=attack,  # validated above
                                       smoothing_options=smoothing)
            df = res.to_frame().drop(columns=["best_sound", "violation"])
            df.insert(0, "index", range(s, s + len(df)))
            frames.append(df)
            progress.update(min(s + batch_size, N))
    finally:
        progress.close()
    return pd.concat(frames, ignore_index=True)


def method_summary(table, methods: tuple[str, ...], rho: float) -> dict[str, float]:
    """certified_accuracy_<m> (correct and radius ≥ ρ, over all images), mean_certificate_<m> (over correct
    images) and seconds_per_image_<m> for each method."""
    ok = table["correct"].to_numpy().astype(bool)
    out: dict[str, float] = {}
    for m in methods:
        r = table[f"radius_{m}"].to_numpy()
        out[f"certified_accuracy_{m}"] = float((ok & (r >= rho)).mean())
        out[f"mean_certificate_{m}"] = float(r[ok].mean()) if ok.any() else 0.0
        if f"time_{m}" in table:
            out[f"seconds_per_image_{m}"] = float(table[f"time_{m}"].mean())
    return out


def method_lines(s: dict[str, Any]) -> list[str]:
    """One certified-accuracy line per method (smoothing labelled as the smoothed classifier's, prob. 1 − α)."""
    lines = [f"  certified accuracy at ρ = {s['rho']:g}, per method (targets = {s['targets']}):"]
    for m in s["methods"]:
        star = " *" if m == "smoothing" else ""
        t = s.get(f"seconds_per_image_{m}")
        lines.append(f"    {m + star:<18} {100 * s[f'certified_accuracy_{m}']:6.2f}%   mean certificate "
                     f"{s[f'mean_certificate_{m}']:.4f}" + (f"   {t:.3g} s/img" if t is not None else ""))
    if "smoothing" in s["methods"]:
        lines.append("    * " + SMOOTHING_NOTE.format(sigma=s["smoothing"]["sigma"],
                                                       p=1 - s["smoothing"]["alpha"]))
    for m, why in s.get("refused", {}).items():
        lines.append(f"    {m}: refused ({why})")
    return lines
