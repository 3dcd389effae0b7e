"""A sweep's output folder as a source of models for the across-models views (Curvature page's comparison, the
Compare page's Table 5b): pick the folder, read its results table (cached per folder and time stamp), take the
numbers from its columns where the sweep measured them, and measure the rest as the pages do for any model.

A folder that is missing, a file, not a sweep's, empty, or whose table lacks columns: one sentence, nothing else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import torch

from app_lib import compare_view, curvature_view, heavy_jobs, registry
from crc_core.checkpoints import load_checkpoint
from crc_core.errors import CRCError
from crc_core.sweep import is_sweep_folder, read_results, results_markdown, sweep_overview
from crc_core.sweep.results import model_label

SWEEPS = "sweeps"  # sweeps live in <runs>/sweeps/<name> by default
NEEDED = ("trial_id", "checkpoint", "widths", "activation", "kind")  # columns every use below needs
TABLE_5B = ("crc", "crown", "lipschitz")  # the Table 5b methods, as in compare_view.models_table


@dataclass(frozen=True)
class SweepPick:
    """A readable sweep folder and the finished trials picked from its results table (one row each)."""

    root: Path
    table: pd.DataFrame


def found_sweeps() -> list[Path]:
    """Sweep folders under ``<runs>/sweeps`` ($CRC_RUNS_DIR) and the repository's ``runs/sweeps``, by name."""
    bases = {registry.runs_dir() / SWEEPS, registry.REPO_ROOT / "runs" / SWEEPS}
    out = {p.resolve() for b in bases if b.is_dir() for p in b.iterdir() if p.is_dir() and is_sweep_folder(p)}
    return sorted(out, key=lambda p: p.name)


def resolve(text: str) -> Path:
    """A typed folder: absolute or ~, else relative to $CRC_RUNS_DIR (or its sweeps/), the repository's
    runs/sweeps or the repository, where it exists; else to the working directory."""
    path = Path(os.path.expanduser(text.strip()))
    if path.is_absolute():
        return path
    for base in (registry.runs_dir(), registry.runs_dir() / SWEEPS, registry.REPO_ROOT / "runs" / SWEEPS,
                 registry.REPO_ROOT):
        if (base / path).exists():
            return base / path
    return path


ROOT_ENV = "CRC_SWEEPS_ROOT"  # another folder whose sweeps may be read (besides the runs folders)


def allowed_roots() -> list[Path]:
    """The folders a typed sweep folder must lie under: $CRC_RUNS_DIR, the repository's runs/ and $CRC_SWEEPS_ROOT
    (when the app is served to a class, nothing else on the server can be probed from the page)."""
    roots = [registry.runs_dir(), registry.REPO_ROOT / "runs"]
    if os.environ.get(ROOT_ENV):
        roots.append(Path(os.path.expanduser(os.environ[ROOT_ENV])))
    return [r.resolve() for r in roots]


def problem(root: Path) -> str | None:
    """Why ``root`` cannot be read as a sweep folder, in one sentence; None when it can. A folder outside
    :func:`allowed_roots` is refused before anything about it (whether it exists) is said."""
    real = root.resolve()
    if not any(real == a or a in real.parents for a in allowed_roots()):
        return (f"Only sweep folders under the runs folder ({registry.runs_dir()}) are read here; set "
                f"${ROOT_ENV} on the server to allow another folder.")
    if not root.exists():
        return f"{root} does not exist: type the folder a sweep wrote (python -m crc_core sweep … --out FOLDER)."
    if not root.is_dir():
        return f"{root} is a file, not a folder: type the sweep's output folder (the one holding sweep.json)."
    if not is_sweep_folder(root):
        return f"{root} is not a sweep folder (it has no sweep.json): type the folder a sweep wrote."
    return None


def _stamp(root: Path) -> tuple[int, ...]:
    """Changes whenever a trial finishes or changes state, or the table is rewritten (the cache key)."""
    files = [root / "sweep.json", root / "results.csv", root / "results.parquet",
             *(f for name in ("result.json", "status.json", "last-epoch.pt") for f in root.glob(f"trials/*/{name}"))]
    return tuple(sorted(f.stat().st_mtime_ns for f in files if f.is_file()))


@st.cache_data(show_spinner=False, max_entries=16)
def _read(root: str, stamp: tuple[int, ...]) -> tuple[dict[str, Any], pd.DataFrame]:
    over = sweep_overview(root, with_epochs=True)
    over["trials"] = [{**t, "checkpoint": str(t["checkpoint"] or "")} for t in over["trials"]]
    return {**over, "root": str(over["root"])}, read_results(root)


def read(root: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """(sweep_overview, results table) of a sweep folder, cached per folder and time stamp. CRCError when the
    table lacks a needed column."""
    overview, df = _read(str(root.resolve()), _stamp(root))
    missing = [c for c in NEEDED if c not in df.columns] if len(df) else []
    if missing:
        raise CRCError(f"The results table of {root} lacks the column{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(missing)}: it was not written by this version's sweep command.")
    return overview, df


def _states(overview: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for t in overview["trials"]:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def picker(key: str, *, max_models: int = 8) -> SweepPick | None:
    """The folder input, a note on the sweep's state, its results table (Markdown) and a pick of its trials.
    None when no usable folder is given (the note says why)."""
    found = found_sweeps()
    text = st.text_input("Sweep folder", key=f"{key}_dir",
                         placeholder="runs/sweeps/NAME", help="The output folder of `python -m crc_core sweep`; "
                         "a relative path is looked up under $CRC_RUNS_DIR first.")
    if found:
        st.caption("Sweeps found (type a name): " + ", ".join(f"`{p.name}`" for p in found))
    if not text.strip():
        return None
    root = resolve(text)
    if (why := problem(root)) is not None:
        st.warning(why, icon=":material/folder_off:")
        return None
    overview, df = read(root)
    if any(t["state"] != "finished" for t in overview["trials"]):
        st.info(f"Sweep {overview.get('name')!r} is unfinished or still running: {_states(overview)}.",
                icon=":material/hourglass_top:")
        st.dataframe(pd.DataFrame(overview["trials"]).drop(columns="checkpoint"), hide_index=True, key=f"{key}_st")
    if not len(df):
        st.info(f"Sweep {overview.get('name')!r} has no finished trial yet.", icon=":material/hourglass_empty:")
        return None
    st.markdown(results_markdown(df))
    names = {str(r["trial_id"]): model_label(r) for r in df.to_dict("records")}
    ids = st.multiselect("The sweep's models to add", list(names), default=list(names)[:max_models],
                         format_func=names.get, key=f"{key}_ids", max_selections=max_models)
    return SweepPick(root, df[df["trial_id"].astype(str).isin(ids)]) if ids else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    return {"kind": row["kind"], "gamma": _num(row.get("gamma")), "crt_eps": _num(row.get("crt_eps")),
            "architecture": {"widths": [int(w) for w in str(row["widths"]).split(",")],
                             "activation": str(row["activation"])}}


@st.cache_resource(show_spinner=False, max_entries=16)
def _model(key: str, path: str, device: str) -> tuple[Any, dict[str, Any]]:
    model, meta = load_checkpoint(path, map_location=device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


def load_trial(pick: SweepPick, row: dict[str, Any], device: torch.device) -> tuple[registry.ModelRef, Any, dict]:
    """A finished trial's model (checkpoint relative to the folder), cached per file and device."""
    path = pick.root / str(row["checkpoint"])
    if not path.is_file():
        raise CRCError(f"The checkpoint of trial {row['trial_id']} is missing ({path}).")
    st_ = path.stat()
    key = f"{path.resolve()}|{st_.st_mtime_ns}|{st_.st_size}"
    model, meta = _model(key, str(path), str(device))
    return registry.ModelRef(f"sweep:{model_label(row)}", "sweep", None, key), model, meta


def curvature_rows(pick: SweepPick | None, dataset: str, n_images: int, min_count: int,
                   device: torch.device) -> curvature_view.Comparison:
    """Rows of the Curvature page's comparison for the picked trials: K_lb / K_ub from the table's K columns when
    the sweep measured them (its own test sample and minimum), else measured here as for any model."""
    rows: list[dict[str, Any]] = []
    waiting: list[str] = []
    for r in ([] if pick is None else pick.table.to_dict("records")):
        meta, label = _meta(r), model_label(r)
        if meta["architecture"]["activation"] == "relu":
            continue
        klb, kub = _num(r.get("K_lb")), _num(r.get("K_ub"))
        if klb is not None and kub is not None:
            depth = len(meta["architecture"]["widths"]) + 1
            row = {"model": label, "architecture": registry.arch_text(meta["architecture"]),
                   "training": registry.kind_text(meta), "γ": meta["gamma"],
                   "test accuracy": _num(r.get("test_accuracy")), "K_lb": klb,
                   "K_ub_thm3" if depth == 2 else "K_ub_refined": kub, "K_ub_thm4": _num(r.get("K_ub_thm4"))}
            row["K_ub/K_lb"] = kub / klb if klb else None
        else:
            ref, model, ckpt_meta = load_trial(pick, r, device)
            row = curvature_view.compare_row(ref, model, ckpt_meta, dataset, n_images, min_count, device)
            if row is None:
                waiting.append(label)
                continue
            row["model"] = label
        rows.append({**row, "model": f"{label} (sweep)"})
    return curvature_view.Comparison(rows, waiting)


def table5b(pick: SweepPick, dataset: str, n_images: int, device: torch.device) -> pd.DataFrame:
    """Table 5b rows for the picked trials: mean certificate (runner-up, over correctly classified images) per
    method from the table's ``mean_radius_<method>_runner-up`` columns; a trial without any is certified here on
    the first ``n_images`` test images of ``dataset`` (holding the heavy-job lock)."""
    rows = []
    for r in pick.table.to_dict("records"):
        means = {compare_view.label(m): _num(r.get(f"mean_radius_{m}_runner-up")) for m in TABLE_5B}
        if any(v is not None for v in means.values()):
            row = {"accuracy": _num(r.get("test_accuracy")), **means}
            crc, crown = row[compare_view.label("crc")], row[compare_view.label("crown")]
            row["CRC / CROWN"] = crc / crown if crc is not None and crown else None
        else:
            ref, model, _meta = load_trial(pick, r, device)
            with heavy_jobs.heavy_lock():
                row = compare_view.model_row(ref.key, dataset, n_images, device, model)
        rows.append({"model": f"{model_label(r)} (sweep)", **row})
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def bars(table: pd.DataFrame) -> tuple[list[str], dict[str, list[float]]]:
    """(ticks, method -> values) for compare_figures.mean_certificate_bars."""
    shown = [m for m in ("crc", "relu-quadratic", "crown", "lipschitz") if compare_view.label(m) in table]
    values: dict[str, Sequence[float]] = {m: table[compare_view.label(m)].tolist() for m in shown}
    return [str(t).replace(", ", "<br>", 1) for t in table["model"]], values  # type: ignore[return-value]
