"""The results table of a sweep (one row per finished trial) and the Markdown tables generated from it.

Columns: trial_id, the settings (label, dataset, depth, widths, activation, kind, gamma, crt_eps, epochs,
batch_size, lr, seed, limits), test_accuracy, n_images, ``cert_<method>_<target>_<ρ>`` (fraction of the fixed
sample certified at ρ), ``mean_radius_<method>_<target>``, method extras (``certificate_success_crc_<target>``),
optional ``empirical_robust_<ρ>`` / ``attack_success_<ρ>`` and ``K_lb`` / ``K_ub`` / ``K_ub_thm4`` /
``curvature_pairs``, then epochs_done, train_seconds, eval_seconds, device, finished. Fractions are in [0, 1].
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .folder import RESULT_FILE, read_json_object, write_atomic

__all__ = ["parquet_available", "read_results", "results_frame", "results_markdown", "write_results"]

_CERT = re.compile(r"^cert_(?P<method>[^_]+)_(?P<target>[^_]+)_(?P<rho>[0-9.eE+-]+)$")
_KIND_NAMES = {"crt": "CRT", "pgd": "PGD", "trades": "TRADES"}


def parquet_available() -> bool:
    """True when pandas can write Parquet here (pyarrow installed)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def results_frame(rows: Sequence[dict[str, Any]]):
    """rows (dicts, grid order) -> pandas DataFrame with the columns of the module docstring."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def write_results(root: str | Path, rows: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """Write results.csv, results.parquet (when pyarrow is installed) and results.md under ``root``, atomically.
    Returns {"csv": path, "md": path[, "parquet": path]}."""
    root = Path(root)
    df = results_frame(rows)
    written = {"csv": root / "results.csv", "md": root / "results.md"}
    write_atomic(written["csv"], df.to_csv(index=False).encode())
    write_atomic(written["md"], (results_markdown(df) + "\n").encode())
    if parquet_available() and len(df):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        written["parquet"] = root / "results.parquet"
        write_atomic(written["parquet"], buf.getvalue())
    return written


def read_results(root: str | Path):
    """The results table of a sweep folder: results.parquet or results.csv, else rebuilt from the trials'
    result.json files (e.g. after a sweep killed before it rewrote the table)."""
    import pandas as pd

    root = Path(root)
    rows = []
    for path in sorted((root / "trials").glob(f"*/{RESULT_FILE}")):
        row = read_json_object(path)  # None for a damaged file: rebuilt rows skip it, never a crash
        if row is not None:
            rows.append(row)
    for name, reader in (("results.parquet", pd.read_parquet), ("results.csv", pd.read_csv)):
        path = root / name
        if path.is_file() and (name != "results.parquet" or parquet_available()):
            df = reader(path)
            if len(df) >= len(rows):
                return df
    return results_frame(rows)


# ---- Markdown ------------------------------------------------------------------------------------------------------
def model_label(row: dict[str, Any]) -> str:
    """The paper's notation, e.g. ``2×[1024] softplus, CRT γ=0.01 ε=0.5`` (``3×[256-128]`` for mixed widths)."""
    widths = [int(w) for w in str(row["widths"]).split(",")]
    arch = f"{len(widths) + 1}×[{widths[0] if len(set(widths)) == 1 else '-'.join(map(str, widths))}]"
    kind = str(row["kind"])
    parts = [_KIND_NAMES.get(kind, kind)] if kind != "gamma" else []
    if kind != "standard" and _num(row.get("gamma")):
        parts.append(f"γ={float(row['gamma']):g}")
    if _num(row.get("crt_eps")):
        parts.append(f"ε={float(row['crt_eps']):g}")
    return f"{arch} {row['activation']}, {' '.join(parts)}"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pct(v: Any) -> str:
    return f"{100 * float(v):.2f}%" if _num(v) else "—"


def _fixed(v: Any, digits: int = 4) -> str:
    return f"{float(v):.{digits}f}" if _num(v) else "—"


def _columns(df) -> list[tuple[str, str, Any]]:
    """(header, column, formatter) for the Markdown table, in display order, for the columns present."""
    cert = [(m, c) for c in df.columns if (m := _CERT.match(c))]
    methods = {m["method"] for m, _ in cert}
    cols: list[tuple[str, str, Any]] = []
    for key in ("dataset", "seed"):
        if key in df and df[key].nunique(dropna=False) > 1:
            cols.append((key, key, str))
    cols += [("epochs", "epochs", str), ("std acc", "test_accuracy", _pct)]
    for m, c in sorted(cert, key=lambda mc: (float(mc[0]["rho"]), mc[0]["target"] != "runner-up", mc[0]["method"])):
        suffix = f" ({m['method']})" if len(methods) > 1 else ""
        cols.append((f"cert@{m['rho']} {m['target']}{suffix}", c, _pct))
    groups: dict[str, list[tuple[str, str, Any]]] = {"empirical": [], "attack": [], "certificate": [], "viol": []}
    for c in df.columns:
        if c.startswith("empirical_robust_"):
            groups["empirical"].append((f"empirical robust@{c.rsplit('_', 1)[1]}", c, _pct))
        elif c.startswith("attack_success_"):
            groups["attack"].append((f"attack success@{c.rsplit('_', 1)[1]}", c, _pct))
        elif c.startswith("certificate_success_"):
            groups["certificate"].append((f"certificate success ({c.split('_', 2)[2].replace('_', ', ')})", c, _pct))
        elif c.startswith("violations_"):
            groups["viol"].append((f"violations ({c.split('_', 1)[1].replace('_', ' @')})", c, str))
    for group in groups.values():
        cols += group
    cols += [(h, c, _fixed) for h, c in (("K_lb", "K_lb"), ("K_ub (ours)", "K_ub"), ("K_ub (Thm 4)", "K_ub_thm4"))
             if c in df]
    return cols


def results_markdown(df, *, title: str | None = None) -> str:
    """A Markdown table in the style of docs/reproduction.md: one row per trial (model in the paper's notation,
    epochs, standard accuracy, certified accuracy per ρ and target, then whatever else was measured).

    Fractions are shown as percentages with two decimals; missing values as "—". Dataset and seed columns appear
    only when they vary.
    """
    lines = [f"### {title}", ""] if title else []
    if df is None or len(df) == 0:
        return "\n".join([*lines, "_No finished trials yet._"])
    cols = _columns(df)
    lines.append("| model | " + " | ".join(h for h, _, _ in cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for row in df.to_dict("records"):
        cells = [model_label(row)] + [fmt(row.get(c)) for _, c, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
