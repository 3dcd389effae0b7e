"""Command line: ``python -m crc_core <command> ...``.

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> exit code``, registered by one line
in :data:`COMMANDS`:

  train     train a standard / γ-regularized / CRT model with a progress bar and write a checkpoint (cli/train.py)
  info      print a checkpoint's metadata: architecture, settings, metrics, the command that made it (cli/info.py)
  certify   certified radii and attacks for test images of a checkpoint, to CSV / JSON (cli/certify.py)
  import    a foreign MLP file (e.g. the paper's official checkpoints) as a checkpoint (cli/import_.py)
  sweep     a TOML grid of training runs and evaluations (a paper table) on Ray, resumable (cli/sweep.py)

Shared argument checks live in cli/common.py, progress bars (tqdm) in cli/progress.py. This package (with
``crc_core/__main__.py``) is the only place in crc_core that prints or parses arguments; the library functions it
calls return values and raise :class:`~crc_core.errors.CRCError` with readable messages, which :func:`main` prints as
one ``error:`` line (exit status 2).

To add a command ``foo``: write ``crc_core/cli/foo.py`` with ``add_parser(sub)`` (which calls
``sub.add_parser("foo", ...)``) and ``run(args) -> int``, import it below and add
``Command("foo", foo.add_parser, foo.run)`` to :data:`COMMANDS` (a keyword such as ``import`` needs another module
name, e.g. ``import_.py``). Import what only ``run`` needs inside ``run`` (``--help`` stays quick); validate
flags with cli/common.py before any work; print results to stdout and progress to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..errors import CRCError
from . import certify, import_, info, sweep, train
from .common import PROG
from .progress import Progress, TrainProgress

__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "PROG", "Command", "Progress", "TrainProgress",
           "build_parser", "main"]

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


class Command(NamedTuple):
    """A subcommand: its name, the function that adds its subparser, the function that runs it."""

    name: str
    add_parser: Callable[[argparse._SubParsersAction], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = [
    Command("train", train.add_parser, train.run),
    Command("info", info.add_parser, info.run),
    Command("certify", certify.add_parser, certify.run),
    Command("import", import_.add_parser, import_.run),
    Command("sweep", sweep.add_parser, sweep.run),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CRC Explorer: curvature-based robustness certificates and curvature-regularized training "
                    "(Singla & Feizi 2020). Run a command with --help for its options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
        sub.choices[command.name].set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code (0 ok, 2 bad input or failure, 130 stopped by Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(args._run(args))
    except CRCError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("aborted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a file the command writes or reads outside the library's checks
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}")
    except (MemoryError, RecursionError) as exc:
        return _fail(f"the input is too large or nested too deeply to process ({type(exc).__name__}).")
    except Exception as exc:  # the promise: one line, never a traceback (a bug in crc_core if it happens)
        return _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc), 300)} (this is a bug in crc_core; please "
                     "report it with the command line).")


def _one_line(text: str, limit: int = 2000) -> str:
    """A message on one line (its lines joined by "; "), at most ``limit`` characters."""
    joined = "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def _fail(message: str) -> int:
    """Print one ``error:`` line and return the error exit status."""
    print(f"error: {_one_line(message) or 'failed'}", file=sys.stderr)
    return EXIT_ERROR
