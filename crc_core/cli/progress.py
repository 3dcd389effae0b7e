"""Progress display for the command line, built on tqdm.

On a terminal a live tqdm bar (redrawn in place); on a pipe or a log file one plain line per update in tqdm's
own format (no carriage returns), so logs stay readable. Everything goes to stderr: stdout carries results.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

# 28 characters of bar; the rest of a line carries the numbers. Same look on a terminal and in a log.
BAR_FORMAT = "{l_bar}{bar:28}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"


def is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def fmt(v: Any, pct: bool = False) -> str:
    """A metric for people: ``None`` -> "n/a"; fractions as percentages with ``pct``; else 4 significant digits."""
    if v is None:
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):  # a record written by hand: shown, not computed on
        return str(v)[:80]
    return f"{100 * v:.2f}%" if pct else f"{v:.4g}"


class StreamBar:
    """A tqdm bar on a terminal (``bar``, None in a pipe) with text lines written above it, on ``stream``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.bar: tqdm | None = None

    def write(self, text: str) -> None:
        """A line of text above the bar (the bar is redrawn below it)."""
        if self.bar is not None:
            tqdm.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Progress(StreamBar):
    """One task with a known total (steps, images): ``update(done, postfix)``, ``write(text)``, ``close()``."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.total, self.desc, self.unit = max(1, int(total)), desc, unit
        self.tty = is_terminal(self.stream)
        self.t0 = time.perf_counter()
        if self.tty:
            self.bar = tqdm(total=self.total, desc=desc or None, unit=unit, file=self.stream, dynamic_ncols=True,
                            bar_format=BAR_FORMAT + "{postfix}")

    def update(self, done: int, postfix: str = "", elapsed: float | None = None) -> None:
        """Show ``done`` of ``total`` finished; ``postfix``: the latest numbers; ``elapsed`` overrides the clock."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(postfix, refresh=True)
            return
        seconds = time.perf_counter() - self.t0 if elapsed is None else elapsed
        line = tqdm.format_meter(done, self.total, seconds, prefix=self.desc, unit=self.unit, ascii=True,
                                 bar_format=BAR_FORMAT)
        self.stream.write(line + (f" {postfix}" if postfix else "") + "\n")
        self.stream.flush()


class TrainProgress:
    """The callback of :func:`crc_core.train.train` for the CLI: step events move a bar, epoch events print a line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.progress: Progress | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "step":
            if self.progress is None:
                self.progress = Progress(event["total_steps"], "training", "step", self.stream)
            extra = f" adv-acc {event['attack_accuracy']:.3f}" if "attack_accuracy" in event else ""
            curvature = f"K {event['mean_K']:.4g} " if "mean_K" in event else ""  # ReLU nets: no K
            self.progress.update(
                event["step"], f"epoch {event['epoch']} loss {event['loss']:.4f} ce {event['ce']:.4f} "
                f"{curvature}acc {event['accuracy']:.3f}{extra}", elapsed=event["seconds"])
        elif kind == "epoch":
            self.message(epoch_line(event))
        elif kind == "done" and self.progress is not None:
            self.progress.close()

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.write(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


def epoch_line(event: dict[str, Any]) -> str:
    """One line per epoch event: training numbers, or the evaluation when the epoch was evaluated."""
    if event.get("test_accuracy") is None:
        return (f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}, train acc "
                f"{fmt(event['train_accuracy'], True)} [{tqdm.format_interval(event['seconds'])}]")
    return (f"epoch {event['epoch']}: test acc {fmt(event['test_accuracy'], True)}, PGD acc "
            f"{fmt(event.get('pgd_robust_accuracy'), True)}, certified acc at "
            f"rho={event['eval_rho']:g} (runner-up) {fmt(event['certified_accuracy'], True)}, "
            f"(all classes) {fmt(event['certified_accuracy_all'], True)} on {event['eval_samples']} images, "
            f"mean K_ub {fmt(event['mean_K_ub'])} [{tqdm.format_interval(event['seconds'])}]")
