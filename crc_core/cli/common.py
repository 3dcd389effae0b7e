"""What several commands share: argument validators (one message per mistake) and output helpers.

Validators raise :class:`~crc_core.errors.CRCError`; :func:`crc_core.cli.main` prints it as one ``error:`` line and
exits with status 2, before any work is done.
"""

from __future__ import annotations

import os
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
    """--out: None stays None; a folder, an uncreatable or unwritable folder is refused before the work starts."""
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
        if not os.access(out.parent, os.W_OK):
            raise CRCError(f"--out {out}: the folder {out.parent} is not writable.")
    return out
