"""``python -m crc_core sweep CONFIG.toml``: run a TOML grid of training runs (a paper table) as Ray tasks.

Progress goes to stderr (a tqdm bar on a terminal, one plain line per event in a pipe or log); the summary and
the results files go to stdout. Exit status: 0 when every trial finished, 1 when some failed (the others are
kept; ``--resume`` reruns the failed ones), 2 for bad input (nothing ran), 130 when stopped by Ctrl-C. A sweep
in the background (which ignores Ctrl-C) stops cleanly on ``kill PID`` (SIGTERM): Ray's driver handler exits
through the same clean-up (running trials cancelled and marked interrupted, Ray shut down), status 15.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .common import PROG, require_at_least_one
from .progress import StreamBar, is_terminal

EXIT_TRIALS_FAILED, EXIT_INTERRUPTED = 1, 130
BAR_FORMAT = "{l_bar}{bar:28}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}"

EPILOG = """\
examples:
  # the plumbing check: 2 tiny models on the embedded subset (< 2 minutes on 2 cores)
  python -m crc_core sweep configs/smoke.toml
  # the paper's Tables 9 and 4 at the official schedule, results in runs/t9
  python -m crc_core sweep configs/table4-table9-fashion-mnist.toml --out runs/t9
  # continue it after a crash or Ctrl-C: finished trials are skipped, killed ones go on from their last epoch
  python -m crc_core sweep configs/table4-table9-fashion-mnist.toml --out runs/t9 --resume
  # on a running Ray cluster (`ray start --head` there; crc_core and the data on every node)
  python -m crc_core sweep configs/table16-gamma.toml --address ray://head:10001

The output folder holds sweep.json, config.toml, trials/<id>/{model.pt,record.json,result.json} and the tables
results.csv (+ results.parquet with pyarrow) and results.md. The config format: configs/README.md.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a grid of training runs and evaluations (a paper table) on Ray, resumably",
        description="Train and evaluate every model of a TOML grid as Ray tasks, locally or on a cluster; write "
                    "one checkpoint per trial and a results table (CSV, Markdown).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.toml", help="the sweep file (see configs/)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder; default runs/sweeps/<name>")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="join a running Ray cluster: 'auto', HOST:PORT or ray://HOST:PORT; default: start Ray "
                        "locally on this machine's cores")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: skip finished trials, rerun the others (from their last "
                        "finished epoch when possible)")
    p.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray (default: all cores); trials run at once = N / cpus_per_trial")
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")


class SweepView(StreamBar):
    """The progress callback of :func:`crc_core.sweep.run_sweep`: a bar of ended trials on a terminal plus one
    line per trial event (started, finished, failed); plain lines only in a pipe."""

    def __call__(self, p: Any) -> None:  # p: SweepProgress
        counts = (f"{p.done}/{p.total} done, {p.running} running, {p.failed} failed, "
                  f"ETA {'?' if p.eta_seconds is None else tqdm.format_interval(p.eta_seconds)}")
        if p.event == "start" and is_terminal(self.stream):
            self.bar = tqdm(total=p.total, initial=p.done, desc="trials", unit="trial", file=self.stream,
                            dynamic_ncols=True, bar_format=BAR_FORMAT)
        text = {"start": f"sweep: {p.total} trials, {p.skipped} already finished",
                "trial_started": f"started  {p.trial_id}",
                "trial_epoch": f"epoch {p.epoch}/{p.epochs} {p.trial_id}",
                "trial_finished": f"finished {p.trial_id}",
                "trial_failed": f"FAILED   {p.trial_id}: {p.error}",
                "done": "sweep ended"}.get(p.event, p.event)
        self.write(f"[{tqdm.format_interval(p.elapsed_seconds)}] {text} ({counts})")
        if self.bar is not None:
            self.bar.update(p.done + p.failed - self.bar.n)
            self.bar.set_postfix_str(f"{p.running} running, {p.failed} failed, ETA "
                                     f"{'?' if p.eta_seconds is None else tqdm.format_interval(p.eta_seconds)}")
            if p.event == "done":
                self.close()


def summary(result: Any, name: str) -> str:
    """The lines printed at the end: counts, failures with their errors, the results files."""
    n = len(result.finished) + len(result.skipped) + len(result.failed)
    lines = [f"sweep {name}: {len(result.finished)} trial(s) finished now, {len(result.skipped)} earlier, "
             f"{len(result.failed)} failed, of {n} ({tqdm.format_interval(result.seconds)}); folder {result.out}"]
    lines += [f"  failed {tid}: {err}" for tid, err in result.failed.items()]
    for key in ("csv", "parquet", "md"):
        if key in result.files:
            lines.append(f"  results ({'Markdown table' if key == 'md' else key}): {result.files[key]}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..sweep import load_sweep_config, run_sweep

    require_at_least_one("--num-cpus", args.num_cpus)
    config = load_sweep_config(args.config)  # every key and value checked before Ray starts
    view = None if args.quiet else SweepView()
    out = Path(args.out) if args.out else None
    try:
        result = run_sweep(config, out=out, address=args.address, resume=args.resume, progress=view,
                           num_cpus=args.num_cpus)
    except KeyboardInterrupt:
        if view is not None:
            view.close()
        again = [a for a in args.argv if a != "--resume"] + ["--resume"]
        print(f"interrupted; running trials were stopped. Continue with: {PROG} {shlex.join(again)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if view is not None:
            view.close()
    print(summary(result, config.name))
    if result.failed:
        again = [a for a in args.argv if a != "--resume"] + ["--resume"]
        print(f"rerun the failed trials with: {PROG} {shlex.join(again)}")
        return EXIT_TRIALS_FAILED
    return 0
