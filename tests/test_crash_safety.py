"""Crash safety of checkpoint writes: a process killed with SIGKILL in the middle of saving never destroys the last
good checkpoint.

A writer process (torch imported once) forks children that save a ~5 MB checkpoint over and over (each save writes a
new value into one weight and the same value into the metadata); the test kills each child with SIGKILL after a
random delay, then checks that the path loads (format, SHA-256 digest, shapes, finite weights), that weights and
metadata come from the same save, that the iteration never goes back, and counts the temporary files left behind.
Default: 10 kills; ``-m slow``: 300 kills, plus SIGKILL of real ``python -m crc_core train`` runs. Numbers:
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from app_lib.registry import list_files
from crc_core.checkpoints import load_checkpoint, save_checkpoint
from crc_core.models import MLP

REPO = Path(__file__).resolve().parent.parent

WRITER = r'''
import os, sys
import torch
torch.set_num_threads(1)
from crc_core.checkpoints import save_checkpoint
from crc_core.models import MLP

path = sys.argv[1]
torch.manual_seed(0)
model = MLP(784, [1024, 512], 10)  # 1.33 M parameters: a 5.3 MB file, a few tens of ms per save
w = model.layers[0].weight

def save(i):
    with torch.no_grad():
        w[0, 0] = float(i)  # exact in float32 for i < 2**24
    save_checkpoint(path, model, {"iteration": i, "dataset": "embedded"})

for line in sys.stdin:
    cmd, arg = line.split()
    if cmd == "init":
        save(int(arg))
        print("ok", flush=True)
    elif cmd == "go":
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed
            i = int(arg)
            while True:
                save(i)
                i += 1
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print("dead", status, flush=True)
'''


@dataclass
class KillStats:
    kills: int = 0
    mid_write: int = 0  # kills after which a new temporary file was left (the kill hit the file write)
    iterations_lost: int = 0  # kills after which the file still held the previous run's checkpoint
    stray_tmp: int = 0
    stray_bytes: int = 0
    loaded: list[int] = field(default_factory=list)


def _tmp_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")}


def _check_loads(path: Path) -> int:
    """The checkpoint at ``path`` loads; weights and metadata belong to the same save -> its iteration."""
    model, meta = load_checkpoint(path)
    i = int(meta["iteration"])
    assert model.layers[0].weight[0, 0].item() == float(i), "weights and metadata come from different saves"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    sidecar = path.with_name(path.name + ".json")
    if sidecar.exists():  # best effort, but atomic too: always complete JSON
        json.loads(sidecar.read_text())
    return i


def kill_saves(folder: Path, n_kills: int, *, seed: int = 0, max_delay: float = 0.25) -> KillStats:
    """Start the writer, then ``n_kills`` times: fork a saving child, SIGKILL it after a random delay, check."""
    rng = random.Random(seed)
    path = folder / "model.pt"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    stats = KillStats()
    try:
        proc.stdin.write("init 0\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok"
        last = _check_loads(path)
        for k in range(1, n_kills + 1):
            tmp_before = _tmp_files(folder)
            start = k * 10_000
            proc.stdin.write(f"go {start}\n")
            proc.stdin.flush()
            pid = int(proc.stdout.readline())
            time.sleep(rng.uniform(0, max_delay))
            os.kill(pid, signal.SIGKILL)
            status = proc.stdout.readline().split()
            assert status[0] == "dead" and os.WIFSIGNALED(int(status[1]))
            assert os.WTERMSIG(int(status[1])) == signal.SIGKILL
            stats.kills += 1
            i = _check_loads(path)
            assert i == last or start <= i < start + 10_000, (i, last, start)
            if i == last:
                stats.iterations_lost += 1
            last = i
            stats.loaded.append(i)
            if _tmp_files(folder) - tmp_before:
                stats.mid_write += 1
        stats.stray_tmp = len(_tmp_files(folder))
        stats.stray_bytes = sum((folder / n).stat().st_size for n in _tmp_files(folder))
        # the app never lists temporary files as models
        assert [r.path.name for r in list_files(folder, "trained")] == ["model.pt"]
    finally:
        proc.stdin.close()
        proc.wait(30)
    return stats


def test_sigkill_during_saves_keeps_a_loadable_checkpoint(tmp_path):
    stats = kill_saves(tmp_path, n_kills=10, seed=1)
    assert stats.kills == 10
    # each kill leaves at most one temporary file (of the .pt or of its .json sidecar); they are never loaded
    assert stats.stray_tmp <= stats.kills


@pytest.mark.slow
def test_sigkill_during_saves_many_times(tmp_path):
    t0 = time.time()
    stats = kill_saves(tmp_path, n_kills=300, seed=2)
    print(f"\n[crash-safety] {stats.kills} SIGKILLs in {time.time() - t0:.0f} s: last good checkpoint loaded "
          f"{stats.kills}/{stats.kills}; {stats.mid_write} kills hit a file write (left a temp file); "
          f"{stats.iterations_lost} kills before the first save of the run completed; "
          f"{stats.stray_tmp} stray temp files at the end ({stats.stray_bytes / 1e6:.0f} MB)")
    assert stats.kills == 300
    assert stats.mid_write >= 30  # the delays do land inside writes
    assert stats.stray_tmp <= stats.kills


@pytest.mark.slow
def test_sigkill_of_the_training_cli(tmp_path):
    """Kill `python -m crc_core train --dry-run --out model.pt` at random moments (training, evaluating or writing):
    model.pt always loads, and holds either the previous model or a complete new one."""
    path = tmp_path / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(path, MLP(784, [256], 10), {"iteration": -1})
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "crc_core", "train", "--dry-run", "--quiet", "--threads", "1", "--out", str(path)]
    t0 = time.time()
    subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True, timeout=300)
    full = time.time() - t0
    rng = random.Random(3)
    replaced = 0
    n = 12
    for _ in range(n):
        before = path.read_bytes()
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.1) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _model, meta = load_checkpoint(path)
        assert meta.get("dry_run") is True or meta.get("iteration") == -1
        replaced += path.read_bytes() != before
    print(f"\n[crash-safety] {n} SIGKILLs of `crc_core train` (full run {full:.1f} s): the checkpoint loaded "
          f"{n}/{n} times; {replaced} runs had replaced it before the kill")


def test_saved_checkpoint_respects_the_umask(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", MLP(784, [8], 10))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
