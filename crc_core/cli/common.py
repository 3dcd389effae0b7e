"""What several commands share: argument validators (one message per mistake) and output helpers.

Validators raise :class:`~crc_core.errors.CRCError`; :func:`crc_core.cli.main` prints it as one ``error:`` line and
exits with status 2, before any work is done.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import CRCError

PROG = "python -m crc_core"


def require_at_least_one(flag: str, value: int | None) -> None:
    """A count given on the command line (--threads, --limit, --batch-size) must be ≥ 1 when given."""
    if value is not None and value < 1:
        raise CRCError(f"{flag} must be at least 1 (a whole number ≥ 1), got {value}.")


def set_threads(threads: int | None) -> None:
    """Apply --threads (CPU threads for torch; None keeps torch's choice)."""
    require_at_least_one("--threads", threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def resolve_device(spec: str):  # -> torch.device
    """--device auto | cpu | cuda | cuda:N -> a torch.device, or a CRCError naming the flag."""
    from ..device import default_device

    try:
        return default_device(None if spec == "auto" else spec)
    except ValueError as exc:
        raise CRCError(f"--device {spec}: {exc}") from None


def output_file(path: str | None, example: str, *, create_folder: bool = False) -> Path | None:
    """--out: None stays None; a folder, an uncreatable or unwritable folder is refused before the work starts.

    ``create_folder``: create the missing folders now (training writes its epoch checkpoints there); otherwise only
    check that the nearest existing folder is writable (:func:`write_output` creates the rest after the work)."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise CRCError(f"--out {out} is a folder; give a file name such as {out / example}.")
    if create_folder:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CRCError(f"--out {out}: cannot create its folder ({exc.strerror}).") from None
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise CRCError(f"--out {out}: cannot create its folder ({existing} is not a folder).")
    if not os.access(existing, os.W_OK):
        raise CRCError(f"--out {out}: the folder {existing} is not writable.")
    return out


def write_output(out: Path, write: Callable[[Path], None]) -> None:
    """Create ``out``'s missing folders and call ``write(out)``; on failure remove what this call created and
    raise one CRCError."""
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if not existed:
                out.unlink()
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise CRCError(f"could not write {out}: {exc.strerror or exc}") from None
