"""Shared helpers for benchmarks: machine description, timing, results appended to docs/benchmarks.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, {dev}; "
            f"load avg {os.getloadavg()[0]:.1f}")


def timed(fn: Callable[[], object], repeat: int = 1, sync: bool = False) -> tuple[float, object]:
    """Best wall time (s) over ``repeat`` runs, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def record(title: str, command: str, lines: list[str]) -> str:
    """Append a dated section to docs/benchmarks.md and return its text."""
    text = (f"\n### {title}\n\n- date: {_dt.date.today().isoformat()}\n- machine: {machine()}\n"
            f"- command: `{command}`\n\n" + "\n".join(lines) + "\n")
    path = ROOT / "docs" / "benchmarks.md"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)
    return text


def append_jsonl(path: Path | None, row: dict) -> None:
    """Append one result row as a JSON line to ``path`` (nothing when None); the folder is created."""
    if path is None:
        return
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
