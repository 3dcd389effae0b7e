"""``python -m crc_core info``: a checkpoint's metadata (architecture, settings, metrics, the command that made it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..models import format_architecture
from ..run_records import kept_text
from .progress import fmt


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a checkpoint's metadata",
                       description="Print what a checkpoint contains: architecture, how it was trained (the exact "
                                   "command), and its metrics. The file is verified (SHA-256, weights only).")
    p.add_argument("checkpoint", help="a .pt file written by `train` (e.g. assets/models/crt-2x256.pt)")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import read_metadata

    path = Path(args.checkpoint)
    meta = read_metadata(path)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    arch = meta["architecture"]  # read_metadata has checked it
    rows = [
        ("file", f"{path} ({path.stat().st_size / 1e6:.2f} MB)"),
        ("name", meta.get("name")),
        ("model", format_architecture(arch["widths"], arch["activation"], in_dim=arch["in_dim"],
                                      n_classes=arch["n_classes"])),
        ("trained as", meta.get("label") or meta.get("kind")),
        ("dataset", meta.get("dataset")),
        ("gamma", meta.get("gamma")),
        ("crt eps", meta.get("crt_eps")),
        ("crt attack", _crt_attack(meta)),
        ("epochs", meta.get("epochs")),
        ("kept", kept_text(meta)),
        *_metric_rows(meta.get("metrics") or {}),
        *_source_rows(meta.get("source")),
        ("stopped early", meta.get("stopped")),
        ("created", meta.get("created")),
        ("command", meta.get("command")),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        if v is not None:
            print(f"{k:<{w}}  {v}")
    return 0


def _crt_attack(meta: dict[str, Any]) -> str | None:
    """The CRT training attack's steps and curvature bounds, e.g. "8 x 5 steps, theorem3 bounds"; None otherwise."""
    config = meta.get("config")
    if not isinstance(config, dict) or config.get("kind") != "crt":
        return None
    return (f"{config.get('attack_outer')} x {config.get('attack_inner')} steps, "
            f"{config.get('attack_bounds', 'regularizer')} bounds")


def _metric_rows(m: dict[str, Any]) -> list[tuple[str, Any]]:
    """Test and certified accuracy rows; none for a model never evaluated (e.g. just imported)."""
    if not m:
        return []
    if "certified_accuracy" not in m and any(k.startswith("cert_") for k in m):
        return _sweep_metric_rows(m)
    rho = m.get("eval_rho", "?")
    return [
        ("test accuracy", fmt(m.get("test_accuracy"), True)),
        (f"certified acc (rho={rho}, runner-up)", fmt(m.get("certified_accuracy"), True)),
        (f"certified acc (rho={rho}, all classes)", fmt(m.get("certified_accuracy_all"), True)),
        ("certified on", f"{m.get('eval_samples')} fixed test images" if m.get("eval_samples") else None),
        ("mean K_ub", fmt(m.get("mean_K_ub"))),
    ]


def _sweep_metric_rows(m: dict[str, Any]) -> list[tuple[str, Any]]:
    """A sweep trial's evaluation (keys ``cert_<method>_<targets>_<ρ>``, ``empirical_robust_<ρ>``)."""
    rows: list[tuple[str, Any]] = [("test accuracy", fmt(m.get("test_accuracy"), True))]
    for key in sorted(k for k in m if k.startswith("cert_") and k.count("_") >= 3):
        method, rest = key[len("cert_"):].split("_", 1)
        targets, rho = rest.rsplit("_", 1)
        rows.append((f"certified acc (rho={rho}, {targets}, {method})", fmt(m[key], True)))
    rows += [(f"empirical robust (rho={k.rsplit('_', 1)[1]})", fmt(m[k], True))
             for k in sorted(m) if k.startswith("empirical_robust_")]
    rows.append(("certified on", f"{m['n_images']} fixed test images" if m.get("n_images") else None))
    return rows


def _source_rows(src: Any) -> list[tuple[str, Any]]:
    """Where an imported model came from (crc_core.importers' metadata["source"]): file, SHA-256, original keys."""
    if not isinstance(src, dict):
        return []
    keys = src.get("original_keys") or []
    size = src.get("size_bytes")
    layout = f"{src.get('container')} file, " + (f"{size:,} bytes" if isinstance(size, int) else f"size {size!r}")
    return [
        ("imported from", src.get("file")),
        ("source sha256", src.get("sha256")),
        ("source layout", layout + (f", under {src['wrapper_key']!r}" if src.get("wrapper_key") else "")),
        ("original keys", ", ".join(map(str, keys)) if isinstance(keys, list) and keys else None),
        ("activation from", src.get("activation_from")),
        ("dataset from", src.get("dataset_from")),
    ]
