"""Issue 25: tiny files that claim gigabytes are refused by the loading gate (crc_core/safe_load.py) on every path
(import, info, certify --checkpoint, the library loaders), quickly and with the memory they actually use measured.

The bombs run in one subprocess whose address space is capped at its size after imports + 2 GiB (an attempt to
allocate what a bomb claims fails there instead of swapping) and whose peak RSS (ru_maxrss) is reported: every bomb
must be refused with its own message, exit status 2 and one ``error:`` line, within :data:`SECONDS` each, and the
whole run may grow the process by at most :data:`PEAK_MB` (measured: ~70 MB, the one-time import of torch's
FakeTensorMode for legacy files; the stride-0 files alone: ~1 MB). Before the gate, the first bomb wrote a 795 MB
checkpoint and peaked at 3 GB; the legacy file made ``info`` allocate 3.6 GB.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import hostile_files as H
import pytest

PEAK_MB = 200  # growth of the bomb process's peak RSS over all bombs, in MB
SECONDS = 20  # wall time per bomb (the scan itself: milliseconds; legacy files: a one-time ~3 s import)


class _System:
    def __reduce__(self):
        import os

        return os.system, ("touch PWNED",)


def _duplicate(first: bytes) -> bytes:
    with warnings.catch_warnings():  # zipfile warns that it writes a duplicate name: that is the point
        warnings.simplefilter("ignore")
        return H.duplicate_pickle(first)


def _many_views(n: int) -> bytes:
    import io

    import torch

    buf, storage = io.BytesIO(), torch.zeros(16)
    torch.save({f"w{i}": storage[i % 16] for i in range(n)}, buf)
    return buf.getvalue()


def _bombs(folder: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (CLI argv, what the one error line must say). Files are written into ``folder``."""
    files = {
        "mnist_3_softplus_stride0.pt": H.stride0_mlp([784, 14000, 13400, 10]),  # 1.5 kB -> 795 MB of views
        "layers40.pt": H.stride0_layers(40, 16000),  # 8 kB -> 40 GB of views
        "legacy.pt": H.legacy_claim(900_000_000),  # 370 bytes declaring a 3.6 GB storage
        "bytearray.pt": H.bytearray_bomb(10**10),
        "duplicate.pt": _duplicate(pickle.dumps({"x": _System()}, protocol=2)),
        "views.pt": _many_views(40_000),  # 2.5 MB of pickle: torch parses it at ~0.2 ms a tensor
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    imp = ["--activation", "softplus", "--dataset", "mnist", "--out"]
    return {
        "stride0-import": (["import", "mnist_3_softplus_stride0.pt", "--out", "a.pt"], "stride-0"),
        "stride0-info": (["info", "mnist_3_softplus_stride0.pt"], "stride-0"),
        "layers40-import": (["import", "layers40.pt", *imp, "b.pt"], "limit"),
        "legacy-info": (["info", "legacy.pt"], "declare 3,600,000,000 bytes"),
        "legacy-certify": (["certify", "--checkpoint", "legacy.pt", "--limit", "1"], "declare 3,600,000,000 bytes"),
        "bytearray-import": (["import", "bytearray.pt", *imp, "c.pt"], "bytearray"),
        "duplicate-import": (["import", "duplicate.pt", *imp, "d.pt"], "duplicate zip entries"),
        "duplicate-certify": (["certify", "--checkpoint", "duplicate.pt", "--limit", "1"], "duplicate zip entries"),
        "views-info": (["info", "views.pt"], "too large for a state dict"),
    }


RUNNER = textwrap.dedent("""
    import contextlib, io, json, resource, sys, time
    import torch  # imported before the cap: the cap is on what the bombs add
    from crc_core.cli import main
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.RLIM_INFINITY))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, argv in json.loads(sys.argv[1]).items():
        err, t = io.StringIO(), time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except BaseException as exc:
                rc = f"{type(exc).__name__}: {exc}"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({"name": name, "rc": rc, "err": err.getvalue(), "seconds": time.perf_counter() - t,
                          "peak_mb": peak / 1024}), flush=True)
""")


def test_every_bomb_is_refused_quickly_with_bounded_memory(tmp_path: Path) -> None:
    bombs = _bombs(tmp_path)
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps({k: v[0] for k, v in bombs.items()})],
                          cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS * len(bombs) + 60,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin",
                               "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"})
    results = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(results) == set(bombs), proc.stderr[-2000:]
    for name, (_argv, says) in bombs.items():
        r = results[name]
        lines = r["err"].strip().splitlines()
        assert r["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, r)
        assert says in lines[0], (name, lines[0])
        assert r["seconds"] < SECONDS, (name, r["seconds"])
        assert r["peak_mb"] < PEAK_MB, (name, r["peak_mb"])
    assert not [n for n in ("a.pt", "b.pt", "c.pt", "d.pt") if (tmp_path / n).exists()]  # nothing written
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("build", [lambda: H.stride0_mlp([784, 14000, 13400, 10]),
                                   lambda: _duplicate(pickle.dumps({"fc1.weight": [1.0]}, protocol=2))])
def test_the_app_upload_goes_through_the_gate(build) -> None:
    from app_lib.registry import open_upload
    from crc_core.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"stride-0|duplicate zip entries"):
        open_upload(build(), "mnist_3_softplus_upload.pt")


def _f32(n: int) -> bytes:
    return b"\0" * (4 * n)


SAFETENSORS = {  # name -> (header, body, what the refusal says)
    "huge shape": ({"fc1.weight": {"dtype": "F32", "shape": [50_000, 50_000], "data_offsets": [0, 64]}}, _f32(16),
                   "limit"),
    "shape and bytes differ": ({"fc1.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}, _f32(16),
                               r"has shape \(4, 4\)"),
    "overlapping offsets": ({"fc1.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
                             "fc1.bias": {"dtype": "F32", "shape": [4], "data_offsets": [48, 64]}}, _f32(16),
                            "overlap"),
    "past the end": ({"fc1.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}, _f32(8),
                     "outside the file"),
    "unknown dtype": ({"fc1.weight": {"dtype": "F8_E4M3X", "shape": [4], "data_offsets": [0, 4]}}, _f32(1),
                      "unsupported dtype"),
    "many views of few bytes": ({f"w{i}": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]} for i in range(8)},
                                _f32(16), "overlap"),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS))
def test_hostile_safetensors_headers_are_refused_by_the_gate(tmp_path: Path, case: str) -> None:
    import tracemalloc

    from crc_core.errors import CheckpointError
    from crc_core.importers import inspect_foreign

    header, body, says = SAFETENSORS[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(H.safetensors_bytes(header, body))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=says):
            inspect_foreign(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10e6
    # a duplicate name (JSON keeps the last; another reader may keep the first)
    text = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], ' \
           b'"data_offsets": [4, 8]}}'
    path.write_bytes(len(text).to_bytes(8, "little") + text + _f32(2))
    with pytest.raises(CheckpointError, match="duplicate names"):
        inspect_foreign(path)
