"""``python -m crc_core train``: train a standard / γ-regularized / CRT / PGD / TRADES model with a progress bar and
save a checkpoint."""

from __future__ import annotations

import argparse
import shlex
import signal
import textwrap
import threading
from pathlib import Path
from typing import Any

from ..adversarial import EXPLANATIONS
from ..certify import SOLVER_MODES
from ..data import DATASET_NAMES
from ..errors import CRCError
from ..models import architecture_slug
from ..train_config import ATTACK_BOUNDS, KEEP_RULES, KEEP_SCORES, TrainConfig, parse_widths
from ..training_kinds import CURVATURE_KINDS, KINDS, RELU_KINDS, TRAIN_ACTIVATIONS
from .common import PROG, output_file, set_threads
from .progress import TrainProgress, fmt

EXIT_INTERRUPTED = 130

KIND_HELP: dict[str, str] = {
    "standard": "cross-entropy only",
    "gamma": "cross-entropy + gamma * K, K = the curvature bound of the margin (paper eq. 7)",
    "crt": "the same, computed at the curvature attack's worst-case point within radius --eps (CRT)",
    **EXPLANATIONS,
}

EPILOG = """\
examples:
  # the shipped CRT model: 2 layers (one hidden layer of 256), softplus, gamma 0.01, attack radius 0.5
  python -m crc_core train --dataset embedded --widths 256 --activation softplus --kind crt \\
      --gamma 0.01 --eps 0.5 --epochs 3 --seed 0 --out assets/models/crt.pt
  # the paper's 2x[1024] CRT (Table 9) on full Fashion-MNIST
  python -m crc_core train --dataset fashion-mnist --widths 2x1024 --kind crt --gamma 0.01 --eps 0.5
  # TRADES (beta 6, 10 PGD steps within 0.5) on a 3-layer softplus net; PGD training of a ReLU net
  python -m crc_core train --widths 256,256 --kind trades --beta 6 --eps 0.5 --adv-steps 10
  python -m crc_core train --widths 256 --activation relu --kind pgd --eps 0.5
  # a quick check that everything works (a few steps on a few images)
  python -m crc_core train --dry-run --out runs/dry.pt

kinds:
""" + "".join(textwrap.fill(KIND_HELP[k], 110, initial_indent=f"  {k:<10}", subsequent_indent=" " * 12) + "\n"
             for k in KINDS) + f"""
relu is accepted for {", ".join(RELU_KINDS)}; gamma and crt need a smooth activation (ReLU's Hessian is zero
almost everywhere and undefined at its kinks). The epoch evaluation certifies 2-layer ReLU nets with App. G's
quadratic bound and deeper ReLU nets not at all (PGD accuracy only).

Press Ctrl-C once to stop after the current step and still save the model; twice to abort.
After every epoch the full training state is saved beside --out as <name>.last-epoch.pt (removed when the run
completes); after a crash or a stop, the same command with --resume continues from the last finished epoch and
ends with the weights an uninterrupted run would have.
"""


def _add_crt_attack_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--attack-outer", type=int, default=8,
                   help="CRT attack: bisection steps on the dual variable (paper: 30); default 8")
    g.add_argument("--attack-inner", type=int, default=5,
                   help="CRT attack: majorization-minimization steps per bisection step (paper: 20); default 5")
    g.add_argument("--attack-bounds", choices=ATTACK_BOUNDS, default=None,
                   help="CRT attack: its curvature bounds: 'regularizer' (m = -K of the penalty; default) or "
                        "'theorem3' (Theorem 3's m and M, 2-layer nets, the authors' code; reaches --eps)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a standard, curvature-regularized, CRT, PGD or TRADES model and save a checkpoint",
        description="Train an MLP on images and save it as a checkpoint (weights + metadata: settings, "
                    "metrics and this exact command).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default="embedded", choices=DATASET_NAMES,
                   help="embedded = the Fashion-MNIST subset shipped with crc_core (default); fashion-mnist / "
                        "mnist = the full sets (found automatically, or see --data-root)")
    g.add_argument("--data-root", default=None, metavar="DIR", help="folder with the IDX files of the dataset")
    g.add_argument("--widths", default="256", metavar="W",
                   help="hidden layer widths: '256' (2 layers), '1024,1024' (3 layers) or depth x width "
                        "like '2x1024' (the paper's 2x[1024]); default 256")
    g.add_argument("--activation", default="softplus", choices=TRAIN_ACTIVATIONS,
                   help="smooth activation (curvature needs it) or relu (standard, pgd, trades only); "
                        "default softplus")
    g = p.add_argument_group("training")
    g.add_argument("--kind", default="crt", choices=KINDS, help="what to train (see below); default crt")
    g.add_argument("--gamma", type=float, default=None,
                   help="weight of the curvature penalty; default 0.01 for gamma/crt (not used by standard)")
    g.add_argument("--eps", type=float, default=0.5,
                   help="attack radius of crt, pgd and trades (L2 distance in pixel units, images in [0,1]); "
                        "default 0.5")
    g.add_argument("--adv-steps", type=int, default=None, metavar="N",
                   help="pgd / trades: PGD steps of the inner maximization; default 10")
    g.add_argument("--adv-step-size", type=float, default=None, metavar="A",
                   help="pgd / trades: PGD step size; default 2.5 * eps / steps")
    g.add_argument("--no-random-start", action="store_true",
                   help="pgd: start PGD at the image instead of a random point of the eps-ball")
    g.add_argument("--beta", type=float, default=None,
                   help="trades: weight of the KL term (larger: more robust, less accurate); default 6")
    g.add_argument("--epochs", type=int, default=3, help="passes over the training set; default 3")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate; default 1e-3")
    g.add_argument("--batch-size", type=int, default=128, help="default 128")
    g.add_argument("--seed", type=int, default=0, help="same seed, same weights (on CPU); default 0")
    _add_crt_attack_flags(g)
    g.add_argument("--train-limit", type=int, default=None, metavar="N", help="use only the first N training images")
    g.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N optimizer steps")
    g = p.add_argument_group("evaluation after every epoch")
    g.add_argument("--eval-rho", type=float, default=0.5, help="radius of the certified accuracy; default 0.5")
    g.add_argument("--eval-samples", type=int, default=100, metavar="N",
                   help="certify a fixed sample of N test images (0 = skip); default 100")
    g.add_argument("--no-eval-all", action="store_true",
                   help="report only the paper's runner-up certified accuracy, not the all-class one")
    g.add_argument("--eval-mode", default="fast", choices=SOLVER_MODES, help="certificate solver mode")
    g.add_argument("--eval-every", type=int, default=1, metavar="N",
                   help="evaluate every N epochs (always after the last); default 1")
    g.add_argument("--test-limit", type=int, default=None, metavar="N", help="use only the first N test images")
    _add_keep_flags(p.add_argument_group("which epoch's weights to save"))
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda; default auto")
    g.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    g.add_argument("--out", default=None, metavar="PATH",
                   help="checkpoint to write (default runs/<kind>-<depth>x<width>-<activation>-<dataset>.pt)")
    g.add_argument("--log-every", type=int, default=10, metavar="N", help="progress update every N steps")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same flags from its last finished epoch "
                        "(<out name>.last-epoch.pt)")
    g.add_argument("--dry-run", action="store_true",
                   help="a few steps on a few images, to check the set-up (writes a checkpoint)")


def _add_keep_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--keep", default="last", choices=KEEP_RULES,
                   help="last (the final epoch's, default), best-test-accuracy (the evaluated epoch with the best "
                        "standard test accuracy: the paper's selection; it uses the test set) or "
                        "best-train-certified (the evaluated epoch with the best certified accuracy at --eval-rho, "
                        "runner-up, on the last --select-images training images; reads no test image)")
    g.add_argument("--select-images", type=int, default=TrainConfig.select_images, metavar="N",
                   help="training images --keep best-train-certified certifies after each evaluated epoch (the "
                        f"last N); default {TrainConfig.select_images}")
    g.add_argument("--select-held-out", action="store_true",
                   help="with --keep best-train-certified: hold those images out of training (a validation split)")


def config_from_args(args: argparse.Namespace) -> Any:  # -> TrainConfig
    """The validated TrainConfig the flags describe (--dry-run shrinks the run); CRCError for impossible ones."""
    _check_kind_flags(args)
    gamma, kind = 0.01 if args.gamma is None else args.gamma, KINDS[args.kind]
    settings: dict[str, Any] = dict(
        dataset=args.dataset, data_root=args.data_root, widths=parse_widths(args.widths),
        activation=args.activation, kind=args.kind, gamma=gamma if kind.curvature else 0.0,
        crt_eps=args.eps if kind.crt_attack else 0.5, adv_eps=args.eps if kind.adversarial else 0.5,
        adv_steps=10 if args.adv_steps is None else args.adv_steps,
        adv_step_size=args.adv_step_size, adv_random_start=not args.no_random_start,
        trades_beta=6.0 if args.beta is None else args.beta, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=args.device,
        attack_outer=args.attack_outer, attack_inner=args.attack_inner, eval_rho=args.eval_rho,
        eval_samples=args.eval_samples, eval_all_targets=not args.no_eval_all, eval_mode=args.eval_mode,
        eval_every=args.eval_every, log_every=args.log_every, train_limit=args.train_limit, test_limit=args.test_limit,
        max_steps=args.max_steps, keep=args.keep, select_images=args.select_images,
        select_held_out=args.select_held_out,
        attack_bounds=args.attack_bounds or TrainConfig.attack_bounds)
    if args.dry_run:
        settings.update(epochs=1, max_steps=min(3, args.max_steps or 3), train_limit=min(256, args.train_limit or 256),
                        test_limit=min(100, args.test_limit or 100), eval_samples=min(4, args.eval_samples),
                        log_every=1)
    return TrainConfig(**settings)


# Each kind-specific flag, the setting key it sets (KINDS[k].settings) and whether it was given; a kind whose
# settings lack the key would silently ignore the flag, so it is refused.
def _kind_flags(args: argparse.Namespace) -> tuple[tuple[str, str, bool], ...]:
    return (("--adv-steps", "steps", args.adv_steps is not None),
            ("--adv-step-size", "step_size", args.adv_step_size is not None),
            ("--no-random-start", "random_start", args.no_random_start), ("--beta", "beta", args.beta is not None),
            ("--attack-bounds", "attack_bounds", args.attack_bounds is not None))


def _check_kind_flags(args: argparse.Namespace) -> None:
    """CRCError for a flag the chosen kind does not use (it would be silently ignored)."""
    kind = KINDS[args.kind]
    if not kind.curvature and args.gamma not in (None, 0.0):
        raise CRCError(f"{kind.title} training has no curvature penalty: drop --gamma, or use --kind "
                       f"{' / '.join(CURVATURE_KINDS)}.")
    default = TrainConfig()
    using = {key: " / ".join(k for k, v in KINDS.items() if key in v.settings(default))
             for _, key, _ in _kind_flags(args)}
    unused = [flag for flag, key, given in _kind_flags(args) if given and key not in kind.settings(default)]
    if unused:
        raise CRCError(f"{', '.join(unused)} not used by --kind {args.kind} (only by {using['steps']}; --beta: "
                       f"{using['beta']}; --no-random-start: {using['random_start']}).")


def default_out(config: Any) -> Path:
    """runs/<kind>-<depth>x<widths>-<activation>-<dataset>.pt, e.g. runs/crt-2x256-softplus-embedded.pt."""
    return Path("runs") / f"{config.kind}-{architecture_slug(config.widths, config.activation)}-{config.dataset}.pt"


def epoch_checkpoint_path(out: Path) -> Path:
    """Where ``train`` keeps the per-epoch training state for ``--resume``: runs/x.pt -> runs/x.last-epoch.pt."""
    return out.with_name((out.stem if out.suffix == ".pt" else out.name) + ".last-epoch.pt")


def check_resume(path: Path, resume: bool) -> None:
    """--resume needs the epoch file; without --resume an existing one (an interrupted run) is not overwritten."""
    if resume and not path.is_file():
        raise CRCError(f"--resume: nothing to resume, {path} does not exist (the run finished, or never got "
                       "through an epoch); drop --resume to start it.")
    if not resume and path.is_file():
        raise CRCError(f"{path} holds an interrupted run of this output: add --resume to continue it, or delete "
                       "the file to start again.")


def _train_with_ctrl_c(config: Any, progress: TrainProgress | None, **train_kw: Any) -> Any:  # -> TrainResult
    """Run training; the first Ctrl-C stops after the current step (the model is kept), the second aborts."""
    from ..train import train  # looked up at call time (tests replace crc_core.train's train)

    stop = {"requested": False}

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        if progress is not None:
            progress.message("stopping after this step (press Ctrl-C again to abort without saving) ...")

    in_main_thread = threading.current_thread() is threading.main_thread()  # signals only work there
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        return train(config, callback=progress, should_stop=lambda: stop["requested"], **train_kw)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import run_record, save_checkpoint
    from ..device import default_device, describe_device
    from ..train import final_metrics

    set_threads(args.threads)
    config = config_from_args(args)
    out = output_file(args.out or str(default_out(config)), "model.pt", create_folder=True)  # checked before training
    epoch_file = epoch_checkpoint_path(out)
    check_resume(epoch_file, args.resume)
    progress = TrainProgress() if not args.quiet else None
    if progress is not None:
        progress.message(f"training {config.describe()} on {config.dataset}{' (dry run)' if args.dry_run else ''}, "
                         f"device {describe_device(default_device(config.device))}")
    if args.resume and progress is not None:
        progress.message(f"resuming from {epoch_file}")
    result = _train_with_ctrl_c(config, progress, epoch_checkpoint=epoch_file, resume=args.resume)
    if progress is not None and (result.stopped or not result.metrics):
        progress.message("evaluating the stopped model ...")
    metrics = final_metrics(config, result)  # a stopped run: these weights, evaluated now
    record = run_record(config, result, source=f"{PROG} {shlex.join(args.argv)}", metrics=metrics,
                        extra={"dry_run": bool(args.dry_run)})
    path = save_checkpoint(out, result.model.cpu(), record)
    if not result.stopped:
        epoch_file.unlink(missing_ok=True)  # complete: nothing left to resume
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB): {config.describe()}, "
          f"test acc {fmt(metrics.get('test_accuracy'), True)}, certified acc at rho={config.eval_rho:g}: "
          f"runner-up {fmt(metrics.get('certified_accuracy'), True)}, "
          f"all-class {fmt(metrics.get('certified_accuracy_all'), True)}"
          f"{_kept_text(result.kept)}"
          f"{' [stopped early]' if result.stopped else ''}")
    return EXIT_INTERRUPTED if result.stopped else 0


def _kept_text(kept: dict[str, Any] | None) -> str:
    """", kept epoch 2 (best standard test accuracy)" under a --keep rule other than last; "" otherwise."""
    if kept is None or kept["epoch"] is None:
        return ""
    return f", kept epoch {kept['epoch']} ({KEEP_SCORES[kept['rule']][1]})"
