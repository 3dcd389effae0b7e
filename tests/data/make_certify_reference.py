"""Regenerate tests/data/certify_reference.pt: the radii certify() gave BEFORE the issue-9 rebuild.

    CRC_TORCH_THREADS=1 .venv/bin/python tests/data/make_certify_reference.py

Never rerun this to make tests/test_certify_reference.py pass: the stored radii are the floor that every later
solver must meet (new ≥ stored − the mode's allowance: ALLOWANCE in the test, fast 1e-6, paper 1e-5). Stored on an
AMD EPYC (MKL's AVX2 kernels). Cases: shipped assets/models (crt-3x256, gamma-2x256, standard-2x256) on embedded
test images (with labels), and tiny random nets (each activation, depth 2-4) on downsampled images (certifying
their predictions); both solver modes, runner-up and all targets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import small_data  # noqa: E402

from crc_core.certify import certify  # noqa: E402
from crc_core.checkpoints import load_checkpoint  # noqa: E402
from crc_core.data import load_dataset  # noqa: E402
from crc_core.models import MLP  # noqa: E402

SHIPPED = ("crt-3x256", "gamma-2x256", "standard-2x256")
TINY = (("softplus", 2, 11), ("sigmoid", 3, 12), ("tanh", 4, 13), ("softplus", 3, 14))
N_SHIPPED, N_TINY = 8, 16


def tiny_model(act: str, depth: int, seed: int) -> MLP:
    """A random net (weights scaled up so margins and curvature are not trivial), deterministic from ``seed``."""
    torch.manual_seed(seed)
    m = MLP(100, [16] * (depth - 1), 10, act)
    with torch.no_grad():
        for layer in m.layers:
            layer.weight.mul_(2.0)
    return m.eval()


def cases() -> list[tuple[str, MLP, torch.Tensor, torch.Tensor | None]]:
    out = []
    ds = load_dataset("embedded", "test", limit=N_SHIPPED)
    for name in SHIPPED:
        model, _ = load_checkpoint(ROOT / "assets" / "models" / f"{name}.pt")
        out.append((name, model.eval(), ds.images, ds.labels))
    x, _ = small_data("test", N_TINY)
    for act, depth, seed in TINY:
        out.append((f"tiny-{act}-{depth}-s{seed}", tiny_model(act, depth, seed), x, None))  # certify the prediction
    return out


def main() -> None:
    torch.set_num_threads(1)  # as in the tests (tests/conftest.py): matmul summation order depends on threads
    ref = {}
    for name, model, x, lab in cases():
        for mode in ("fast", "paper"):
            for targets in ("runner-up", "all"):
                c = certify(model, x, lab, targets=targets, mode=mode)
                ref[f"{name}|{mode}|{targets}"] = {"radius": c.radius.double(), "radii": c.radius_by_class.double(),
                                                    "runner_up_radius": c.runner_up_radius.double()}
                print(name, mode, targets, [round(float(r), 4) for r in c.radius[:6]])
    torch.save(ref, Path(__file__).with_name("certify_reference.pt"))


if __name__ == "__main__":
    main()
