"""Choose the compute device once; everything else follows tensors' ``.device``."""

from __future__ import annotations

import torch

__all__ = ["default_device", "describe_device"]


def default_device(prefer: str | None = None) -> torch.device:
    """Return the device to compute on.

    ``prefer=None`` (or ``"auto"``) gives ``cuda`` when a GPU is available, else ``cpu``.
    ``prefer="cpu"`` always gives the CPU; ``prefer="cuda"`` / ``"cuda:1"`` gives that GPU and raises
    ``ValueError`` when CUDA is not available, rather than silently falling back.
    """
    if prefer is None or prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(prefer)
    except RuntimeError as exc:
        raise ValueError(f"Unknown device {prefer!r}: use 'auto', 'cpu' or 'cuda'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {prefer!r} was requested but CUDA is not available on this machine.")
    return dev


def describe_device(dev: torch.device | str) -> str:
    """One human-readable line, e.g. ``"cuda:0 (NVIDIA H200, 139.8 GiB)"`` or ``"cpu (2 threads)"``."""
    dev = torch.device(dev)
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(dev)
