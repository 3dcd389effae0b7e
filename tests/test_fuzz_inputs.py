"""Issue 25: no input makes crc_core crash. Hundreds of hostile inputs (random bytes, truncated and byte-mutated real
checkpoints, a foreign state dict, a safetensors file and the shipped sweep configs) go through the library entry
points in-process; each must load or be refused with a CRCError (never another exception), within seconds, and the
whole run may grow the process's peak memory by a bounded amount. A sample also goes through the command line in a
subprocess: exit status 0 or 2, at most one ``error:`` line, no traceback, no warning line.
"""

from __future__ import annotations

import io
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from crc_core.checkpoints import read_metadata
from crc_core.errors import CRCError
from crc_core.importers import inspect_foreign
from crc_core.sweep.config import load_sweep_config

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "assets" / "models").glob("*.pt"))
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))
SECONDS_PER_CASE = 5.0
PEAK_GROWTH_MB = 400  # over the whole in-process run (measured: well under 100 MB)


def _foreign_bytes(legacy: bool = False) -> bytes:
    g = torch.Generator().manual_seed(0)
    sd = {"fc1.weight": torch.randn(16, 784, generator=g), "fc1.bias": torch.randn(16, generator=g),
          "fc2.weight": torch.randn(10, 16, generator=g), "fc2.bias": torch.randn(10, generator=g)}
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    g = torch.Generator().manual_seed(1)
    return save({"fc1.weight": torch.randn(16, 784, generator=g), "fc1.bias": torch.zeros(16),
                 "fc2.weight": torch.randn(10, 16, generator=g), "fc2.bias": torch.zeros(10)})


def _mutations(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    """``n`` variants: truncations at random points, and 1-8 random bytes overwritten (half of them in the first
    4 kB and the last 1 kB, where zip headers, the pickle and the central directory live)."""
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(data[: rng.randrange(len(data))])
            continue
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            region = rng.random()
            pos = (rng.randrange(min(4096, len(b))) if region < 0.25 else
                   len(b) - 1 - rng.randrange(min(1024, len(b))) if region < 0.5 else rng.randrange(len(b)))
            b[pos] = rng.randrange(256)
        out.append(bytes(b))
    return out


def _model_cases() -> list[tuple[str, bytes]]:
    rng = random.Random(25)
    cases = [(f"random-{n}", rng.randbytes(n)) for n in (0, 1, 7, 64, 700, 5000, 40_000)]
    magics = (b"PK\x03\x04", b"\x80\x02\x8a\x0a", b"\x80\x05", b"(dp0\n", b"\x10" + bytes(7) + b"{")
    cases += [(f"random-prefixed-{i}", magic + rng.randbytes(300)) for i, magic in enumerate(magics)]
    sources = [(p.name, p.read_bytes()) for p in MODELS[:2]]
    sources += [("foreign.pt", _foreign_bytes()), ("legacy.pt", _foreign_bytes(legacy=True)),
                ("model.safetensors", _safetensors_bytes())]
    for name, data in sources:
        cases += [(f"{name}-{i}", m) for i, m in enumerate(_mutations(data, rng, 60))]
    return cases


def _config_cases() -> list[tuple[str, bytes]]:
    rng = random.Random(26)
    cases = [("random-toml", rng.randbytes(500)), ("not-utf8", b"name = \"\xff\xfe\"\n"),
             ("nested", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n")]
    for path in CONFIGS:
        data = path.read_bytes()
        cases += [(f"{path.name}-{i}", m) for i, m in enumerate(_mutations(data, rng, 30))]
    return cases


def _run_all(cases: list[tuple[str, bytes]], tmp_path: Path, suffix: str,
             readers: list[Callable[[Path], object]]) -> list[str]:
    """Every case through every reader -> the failures (empty when each case loaded or raised CRCError)."""
    failures = []
    for i, (name, data) in enumerate(cases):
        path = tmp_path / f"case{i}{suffix}"
        path.write_bytes(data)
        for read in readers:
            t = time.perf_counter()
            try:
                read(path)
            except CRCError:
                pass
            except Exception as exc:  # any other exception is what this test looks for
                failures.append(f"{name} {read.__name__}: {type(exc).__name__}: {str(exc)[:200]}")
            if time.perf_counter() - t > SECONDS_PER_CASE:
                failures.append(f"{name} {read.__name__}: took {time.perf_counter() - t:.1f} s")
        path.unlink()
    return failures


def test_hostile_model_files_load_or_are_refused_in_process(tmp_path: Path) -> None:
    cases = _model_cases()
    assert len(cases) >= 300
    warm = tmp_path / "warm-up.pt"  # legacy files are read under torch's FakeTensorMode: a one-time import of ~3 s
    warm.write_bytes(_foreign_bytes(legacy=True))
    assert inspect_foreign(warm).describe().startswith("784-16-10")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    failures = _run_all(cases, tmp_path, ".pt", [read_metadata, inspect_foreign])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not failures, "\n".join(failures[:20])
    assert grown_mb < PEAK_GROWTH_MB


def test_hostile_sweep_configs_load_or_are_refused_in_process(tmp_path: Path) -> None:
    cases = _config_cases()
    assert len(cases) >= 150
    failures = _run_all(cases, tmp_path, ".toml", [load_sweep_config])
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("command", ["info", "import"])
def test_a_sample_through_the_command_line_gives_one_error_line(tmp_path: Path, command: str) -> None:
    rng = random.Random(27 if command == "info" else 28)
    cases = _model_cases()
    sample = [*rng.sample(cases, 5), ("png", b"\x89PNG\r\n\x1a\n" + bytes(64))]
    script = ("import sys\nfrom crc_core.cli import main\n"
              "for p in sys.argv[2:]:\n"
              "    args = [sys.argv[1], p] + (['--activation', 'softplus', '--dataset', 'mnist', '--out',"
              " p + '.out.pt'] if sys.argv[1] == 'import' else [])\n"
              "    print('EXIT', main(args), file=sys.stderr, flush=True)\n")
    paths = []
    for i, (_name, data) in enumerate(sample):
        paths.append(tmp_path / f"case{i}.pt")
        paths[-1].write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", script, command, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-3000:]
    blocks = proc.stderr.split("EXIT ")
    codes = [int(b.split()[0]) for b in blocks[1:]]
    assert len(codes) == len(sample) and set(codes) <= {0, 2}, proc.stderr[-3000:]
    for block, code in zip(blocks[:-1], codes, strict=True):  # the text before each EXIT line is that case's
        lines = [line for line in block.splitlines()[1 if block is not blocks[0] else 0:] if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == (code == 2) and (code == 0 or len(lines) == 1), block
