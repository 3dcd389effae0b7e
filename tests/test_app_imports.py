"""Pages of several browser sessions import the app's modules at the same moment, each in its own thread.

Streamlit runs every session's script in its own thread, so the first visitors after a server start import
``app_lib`` and ``crc_core`` concurrently. Python hands a thread a half-initialised module when it imports a
submodule while another thread is still running the package's ``__init__`` ("cannot import name 'Bounds' from
partially initialized module 'crc_core.bounds'", or a ``_DeadlockError``): the page then dies at import time.
``app_lib/__init__.py`` imports the whole ``crc_core`` package first, which makes the others wait. This test replays
the pages' own import lines from several threads at once, many rounds, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_SCRIPT = r'''
import sys, threading
import torch, streamlit  # a running server has these already
stmts = sys.argv[1:]
failures = []
for _ in range(40):
    for name in [m for m in sys.modules if m.split(".")[0] in ("crc_core", "app_lib")]:
        del sys.modules[name]  # a fresh start for this round
    barrier = threading.Barrier(len(stmts))
    def go(s):
        barrier.wait()
        try:
            exec(s, {})
        except Exception as exc:
            failures.append(f"{s}: {type(exc).__name__}: {exc}")
    threads = [threading.Thread(target=go, args=(s,)) for s in stmts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print(len(failures))
print("\n".join(failures[:3]))
'''


def _page_imports(path: Path) -> str:
    """The first-party import lines of a page (app_lib / crc_core), in order, as one statement block."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = [ast.unparse(node) for node in tree.body if isinstance(node, ast.ImportFrom | ast.Import)
             and any((getattr(node, "module", None) or "").startswith(p) or
                     any(a.name.startswith(p) for a in getattr(node, "names", [])) for p in ("app_lib", "crc_core"))]
    return "\n".join(lines)


def test_pages_import_concurrently_without_half_initialised_modules():
    pages = [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]
    stmts = [_page_imports(p) for p in pages]
    assert all(stmts) and all(s.lstrip().startswith("from app_lib") for s in stmts), stmts  # app_lib first
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, *stmts], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, _, detail = proc.stdout.partition("\n")
    assert int(n) == 0, detail
