"""Command line: ``python -m crc_core <command> ...``.

Commands (each is a pair ``_add_<name>(subparsers)`` + ``_cmd_<name>(args) -> exit code``, registered once in
``COMMANDS`` below):

  train     train a standard / γ-regularized / CRT model with a progress bar and write a checkpoint
  info      print a checkpoint's metadata (architecture, training settings, metrics, the command that made it)

This module (and __main__.py) are the only places in crc_core that print or parse arguments; the library
functions they call return values and raise :class:`~crc_core.errors.CRCError` with readable messages.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .cli_certify import add_certify, cmd_certify
from .errors import CRCError

PROG = "python -m crc_core"
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


# ----------------------------------------------------------------------------------------------------------------
# Progress bar (plain text on stderr; no dependency)
# ----------------------------------------------------------------------------------------------------------------
def _fmt_seconds(s: float) -> str:
    s = max(0.0, float(s))
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.1f}min" if s < 5400 else f"{s / 3600:.1f}h"


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.4g}"


class ProgressBar:
    """Draws training events. On a terminal: one line redrawn in place; otherwise one line per event (logs)."""

    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self._open_line = False

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            self._open_line = not final
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "step":
            done, total = event["step"], max(1, event["total_steps"])
            filled = int(self.width * done / total)
            bar = "#" * filled + "." * (self.width - filled)
            eta = event["seconds"] / done * (total - done) if done else 0.0
            extra = f" adv-acc {event['attack_accuracy']:.3f}" if "attack_accuracy" in event else ""
            self._write(
                f"[{bar}] {done}/{total} epoch {event['epoch']} loss {event['loss']:.4f} ce {event['ce']:.4f} "
                f"K {event['mean_K']:.4g} acc {event['accuracy']:.3f}{extra} "
                f"{_fmt_seconds(event['seconds'])} (eta {_fmt_seconds(eta)})", final=False)
        elif kind == "epoch" and event.get("test_accuracy") is None:
            self._write(f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}, train acc "
                        f"{_fmt(event['train_accuracy'], True)} [{_fmt_seconds(event['seconds'])}]", final=True)
        elif kind == "epoch":
            self._write(
                f"epoch {event['epoch']}: test acc {_fmt(event['test_accuracy'], True)}, certified acc at "
                f"rho={event['eval_rho']:g} (runner-up) {_fmt(event['certified_accuracy'], True)}, "
                f"(all classes) {_fmt(event['certified_accuracy_all'], True)} on {event['eval_samples']} images, "
                f"mean K_ub {_fmt(event['mean_K_ub'])} [{_fmt_seconds(event['seconds'])}]", final=True)
        elif kind == "done" and self.tty and self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def message(self, text: str) -> None:
        if self.tty and self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()


# ----------------------------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------------------------
_TRAIN_EPILOG = """\
examples:
  # the shipped CRT model: 2 layers (one hidden layer of 256), softplus, gamma 0.01, attack radius 0.5
  python -m crc_core train --dataset embedded --widths 256 --activation softplus --kind crt \\
      --gamma 0.01 --eps 0.5 --epochs 3 --seed 0 --out assets/models/crt.pt
  # the paper's 2x[1024] CRT (Table 9) on full Fashion-MNIST
  python -m crc_core train --dataset fashion-mnist --widths 2x1024 --kind crt --gamma 0.01 --eps 0.5
  # a quick check that everything works (a few steps on a few images)
  python -m crc_core train --dry-run --out runs/dry.pt

kinds:
  standard  cross-entropy only
  gamma     cross-entropy + gamma * K, K = the curvature bound of the margin (paper eq. 7)
  crt       the same, computed at the curvature attack's worst-case point within radius --eps (CRT)

Press Ctrl-C once to stop after the current step and still save the model; twice to abort.
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a standard, curvature-regularized or CRT model and save a checkpoint",
        description="Train an MLP on images and save it as a checkpoint (weights + metadata: settings, "
                    "metrics and this exact command).",
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default="embedded", choices=["embedded", "fashion-mnist", "mnist"],
                   help="embedded = the Fashion-MNIST subset shipped in assets/ (default); fashion-mnist / "
                        "mnist = the full sets (found automatically, or see --data-root)")
    g.add_argument("--data-root", default=None, metavar="DIR", help="folder with the IDX files of the dataset")
    g.add_argument("--widths", default="256", metavar="W",
                   help="hidden layer widths: '256' (2 layers), '1024,1024' (3 layers) or depth x width "
                        "like '2x1024' (the paper's 2x[1024]); default 256")
    g.add_argument("--activation", default="softplus", choices=["softplus", "sigmoid", "tanh"],
                   help="smooth activation (curvature needs it); default softplus")
    g = p.add_argument_group("training")
    g.add_argument("--kind", default="crt", choices=["standard", "gamma", "crt"],
                   help="what to train (see below); default crt")
    g.add_argument("--gamma", type=float, default=None,
                   help="weight of the curvature penalty; default 0.01 for gamma/crt (not used by standard)")
    g.add_argument("--eps", type=float, default=0.5,
                   help="CRT attack radius (L2 distance in pixel units, images in [0,1]); default 0.5")
    g.add_argument("--epochs", type=int, default=3, help="passes over the training set; default 3")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate; default 1e-3")
    g.add_argument("--batch-size", type=int, default=128, help="default 128")
    g.add_argument("--seed", type=int, default=0, help="same seed, same weights (on CPU); default 0")
    g.add_argument("--attack-outer", type=int, default=8,
                   help="CRT attack: bisection steps on the dual variable (paper: 30); default 8")
    g.add_argument("--attack-inner", type=int, default=5,
                   help="CRT attack: majorization-minimization steps per bisection step (paper: 20); default 5")
    g.add_argument("--train-limit", type=int, default=None, metavar="N", help="use only the first N training images")
    g.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N optimizer steps")
    g = p.add_argument_group("evaluation after every epoch")
    g.add_argument("--eval-rho", type=float, default=0.5, help="radius of the certified accuracy; default 0.5")
    g.add_argument("--eval-samples", type=int, default=100, metavar="N",
                   help="certify a fixed sample of N test images (0 = skip); default 100")
    g.add_argument("--no-eval-all", action="store_true",
                   help="report only the paper's runner-up certified accuracy, not the all-class one")
    g.add_argument("--eval-mode", default="fast", choices=["fast", "paper"], help="certificate solver mode")
    g.add_argument("--eval-every", type=int, default=1, metavar="N",
                   help="evaluate every N epochs (always after the last); default 1")
    g.add_argument("--test-limit", type=int, default=None, metavar="N", help="use only the first N test images")
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda; default auto")
    g.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    g.add_argument("--out", default=None, metavar="PATH",
                   help="checkpoint to write (default runs/<kind>-<depth>x<width>-<activation>-<dataset>.pt)")
    g.add_argument("--log-every", type=int, default=10, metavar="N", help="progress update every N steps")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--dry-run", action="store_true",
                   help="a few steps on a few images, to check the set-up (writes a checkpoint)")


def _default_out(config: Any) -> Path:
    arch = f"{len(config.widths) + 1}x{'-'.join(map(str, config.widths))}"
    return Path("runs") / f"{config.kind}-{arch}-{config.activation}-{config.dataset}.pt"


def _thin(events: list[dict[str, Any]], n: int = 200) -> list[dict[str, Any]]:
    """At most n evenly spaced events (always the last), for a compact curve in the metadata."""
    if len(events) <= n:
        return events
    idx = sorted({round(i * (len(events) - 1) / (n - 1)) for i in range(n)})
    return [events[i] for i in idx]


def _round_floats(d: dict[str, Any], digits: int = 6) -> dict[str, Any]:
    return {k: (float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}


def _cmd_train(args: argparse.Namespace) -> int:
    import torch  # imported here so `--help` is instant

    from .checkpoints import save_checkpoint
    from .device import default_device, describe_device
    from .train import TrainConfig, evaluate, parse_widths, train

    if args.threads is not None:
        if args.threads < 1:
            raise CRCError(f"--threads must be ≥ 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
    if args.kind == "standard" and args.gamma not in (None, 0.0):
        raise CRCError("Standard training has no curvature penalty: drop --gamma, or use --kind gamma / crt.")
    gamma = 0.0 if args.kind == "standard" else (0.01 if args.gamma is None else args.gamma)
    settings: dict[str, Any] = dict(
        dataset=args.dataset, data_root=args.data_root, widths=parse_widths(args.widths),
        activation=args.activation, kind=args.kind, gamma=gamma, crt_eps=args.eps, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=args.device,
        attack_outer=args.attack_outer, attack_inner=args.attack_inner, eval_rho=args.eval_rho,
        eval_samples=args.eval_samples, eval_all_targets=not args.no_eval_all, eval_mode=args.eval_mode,
        eval_every=args.eval_every, log_every=args.log_every, train_limit=args.train_limit, test_limit=args.test_limit,
        max_steps=args.max_steps)
    if args.dry_run:
        settings.update(epochs=1, max_steps=min(3, args.max_steps or 3), train_limit=min(256, args.train_limit or 256),
                        test_limit=min(100, args.test_limit or 100), eval_samples=min(4, args.eval_samples),
                        log_every=1)
    config = TrainConfig(**settings)
    out = Path(args.out) if args.out else _default_out(config)
    if out.exists() and out.is_dir():
        raise CRCError(f"--out {out} is a folder; give a file name such as {out / 'model.pt'}.")
    command = f"{PROG} {shlex.join(args.argv)}"

    bar = ProgressBar() if not args.quiet else None
    stop = {"requested": False}

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        if bar is not None:
            bar.message("stopping after this step (press Ctrl-C again to abort without saving) ...")

    in_main_thread = threading.current_thread() is threading.main_thread()  # signals only work there
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        if bar is not None:
            where = describe_device(default_device(config.device))
            bar.message(f"training {config.describe()} on {config.dataset}"
                        f"{' (dry run)' if args.dry_run else ''}, device {where}")
        result = train(config, callback=bar, should_stop=lambda: stop["requested"])
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)

    metrics = dict(result.metrics)
    if result.stopped or not metrics:  # evaluate what we have, so the saved metrics describe these weights
        if bar is not None:
            bar.message("evaluating the stopped model ...")
        metrics = {"epoch": None, "step": result.steps, **evaluate(
            result.model, _test_set(config), rho=config.eval_rho, eval_samples=config.eval_samples,
            all_targets=config.eval_all_targets, mode=config.eval_mode)}
    epochs_done = [e for e in result.history if e["kind"] == "epoch"]
    steps = [_round_floats({k: v for k, v in e.items() if k != "kind"}) for e in result.history if e["kind"] == "step"]
    metadata = {
        "dataset": config.dataset,
        "kind": config.kind,
        "gamma": config.gamma_used,
        "crt_eps": config.crt_eps if config.kind == "crt" else None,
        "epochs": len(epochs_done),
        "label": config.describe(),
        "metrics": _round_floats(metrics),
        "command": command,
        "config": config.to_dict(),
        "stopped": result.stopped,
        "dry_run": bool(args.dry_run),
        "train_seconds": round(result.seconds, 2),
        "device": describe_device(result.model.layers[0].weight.device),
        "torch_version": torch.__version__,
        "history": {"epochs": [_round_floats({k: v for k, v in e.items() if k != "kind"}) for e in epochs_done],
                    "steps": _thin(steps)},
    }
    path = save_checkpoint(out, result.model.cpu(), metadata)
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB): {config.describe()}, "
          f"test acc {_fmt(metrics.get('test_accuracy'), True)}, certified acc at rho={config.eval_rho:g}: "
          f"runner-up {_fmt(metrics.get('certified_accuracy'), True)}, "
          f"all-class {_fmt(metrics.get('certified_accuracy_all'), True)}"
          f"{' [stopped early]' if result.stopped else ''}")
    return EXIT_INTERRUPTED if result.stopped else EXIT_OK


def _test_set(config: Any) -> Any:
    from .data import load_dataset
    return load_dataset(config.dataset, "test", root=config.data_root, limit=config.test_limit)


# ----------------------------------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------------------------------
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a checkpoint's metadata",
                       description="Print what a checkpoint contains: architecture, how it was trained (the exact "
                                   "command), and its metrics. The file is verified (SHA-256, weights only).")
    p.add_argument("checkpoint", help="a .pt file written by `train` (e.g. assets/models/crt.pt)")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")


def _cmd_info(args: argparse.Namespace) -> int:
    from .checkpoints import read_metadata

    path = Path(args.checkpoint)
    meta = read_metadata(path)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return EXIT_OK
    arch = meta.get("architecture", {})
    widths = arch.get("widths", [])
    m = meta.get("metrics") or {}
    rows = [
        ("file", f"{path} ({path.stat().st_size / 1e6:.2f} MB)"),
        ("model", f"{len(widths) + 1}x{widths} {arch.get('activation')} "
                  f"({arch.get('in_dim')} inputs, {arch.get('n_classes')} classes)"),
        ("trained as", meta.get("label") or meta.get("kind")),
        ("dataset", meta.get("dataset")),
        ("gamma", meta.get("gamma")),
        ("crt eps", meta.get("crt_eps")),
        ("epochs", meta.get("epochs")),
        ("test accuracy", _fmt(m.get("test_accuracy"), True)),
        (f"certified acc (rho={m.get('eval_rho', '?')}, runner-up)", _fmt(m.get("certified_accuracy"), True)),
        (f"certified acc (rho={m.get('eval_rho', '?')}, all classes)", _fmt(m.get("certified_accuracy_all"), True)),
        ("certified on", f"{m.get('eval_samples')} fixed test images" if m.get("eval_samples") else None),
        ("mean K_ub", _fmt(m.get("mean_K_ub"))),
        ("stopped early", meta.get("stopped")),
        ("created", meta.get("created")),
        ("command", meta.get("command")),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        if v is not None:
            print(f"{k:<{w}}  {v}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------------
# Registry and entry point
# ----------------------------------------------------------------------------------------------------------------
Command = tuple[str, Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]

COMMANDS: list[Command] = [
    ("train", _add_train, _cmd_train),
    ("info", _add_info, _cmd_info),
    ("certify", add_certify, cmd_certify),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CRC Explorer: curvature-based robustness certificates and curvature-regularized training "
                    "(Singla & Feizi 2020). Run a command with --help for its options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add, run in COMMANDS:
        before = set(sub.choices)
        add(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code (0 ok, 2 bad input or failure, 130 stopped by Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args._run(args))
    except CRCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("aborted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
