"""What the sweep suites share: a local 2-CPU Ray for a test module, checked to leave no Ray daemon behind.

Use in a module that skips without Ray (``ray = pytest.importorskip("ray")``)::

    local_ray = pytest.fixture(scope="module")(ray_helpers.local_ray)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY_DAEMONS = ("raylet", "gcs_server")
SHUTDOWN_WAIT_S = 20  # Ray's daemons exit asynchronously after ray.shutdown()


def ray_daemons_under(pid: int) -> list[int]:
    """Live descendants of ``pid`` named like Ray's daemons (from /proc)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
        names[int(entry.name)] = stat[stat.index("(") + 1: stat.rindex(")")]
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            todo.append(c)
            if names[c] in RAY_DAEMONS:
                out.append(c)
    return out


def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs for the module's tests; afterwards, every daemon it started must be gone."""
    import ray

    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to check for leftover Ray processes")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    daemons = ray_daemons_under(os.getpid())
    yield
    ray.shutdown()
    deadline = time.monotonic() + SHUTDOWN_WAIT_S
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in daemons):
        time.sleep(0.2)
    left = ray_daemons_under(os.getpid())
    assert daemons and not left, f"Ray processes left behind: {left}"
