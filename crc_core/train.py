"""One training loop for standard, γ-regularized, curvature-based robust (CRT, paper section 6) and the empirical
adversarial baselines of Table 14 (PGD, TRADES).

Per-sample loss (eq. 7): ℓ(z(x_in), y) + γ K(W, y, t), with y the true label, t the strongest wrong class
(largest logit among classes ≠ y, at the clean input; detached) and K the Theorem 4 bound, differentiable through
warm-started power iteration (:class:`~crc_core.bounds.CurvatureRegularizer`, App. C.1). The three kinds differ
only in the input and γ:

* ``"standard"``: x_in = x, γ = 0 (K is still measured, without gradient, for the curves);
* ``"gamma"``:    x_in = x, loss + γ · mean K;
* ``"crt"``:      x_in = Algorithm 2's x_attack at radius ε (curvature attack with the detached K estimate as
  its curvature bound), loss + γ · mean K;
* ``"pgd"``:      Madry et al.'s L2 PGD adversarial training at radius ``adv_eps``, γ = 0
  (:func:`crc_core.adversarial.pgd_training_loss`);
* ``"trades"``:   TRADES, CE + β · KL at the PGD point within ``adv_eps``, γ = 0
  (:func:`crc_core.adversarial.trades_loss`).

``activation="relu"`` is accepted for standard, pgd and trades (no curvature penalty); its epoch metrics use the
App. G certificate for 2-layer nets (:mod:`crc_core.baselines.relu_quadratic`) and no certificate for deeper ones.

:func:`train` reports progress through a callback (``"step"`` events every ``log_every`` steps, ``"epoch"``
events with test accuracy, certified accuracy at ρ on a fixed sample and mean certification-grade K_ub, one
``"done"`` event), stops cleanly between steps when ``should_stop()`` is true, and is repeatable for a seed
(the global RNG is forked, so callers' random state is untouched). It follows ``config.device``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .activations import CURVATURE_ACTIVATIONS
from .adversarial import pgd_robust, pgd_training_loss, trades_loss, validate_adversarial_options
from .attack import curvature_attack
from .baselines.relu_quadratic import certified_at
from .bounds import CurvatureRegularizer, curvature_bounds
from .certify import certify
from .data import DATASET_NAMES, Dataset, in_unit_box, load_dataset
from .device import default_device
from .epoch_checkpoint import load_epoch_checkpoint, restore_run, save_epoch_checkpoint
from .errors import CRCError
from .hessian import runner_up
from .models import MLP, format_architecture

__all__ = [
    "ADVERSARIAL_KINDS",
    "CURVATURE_KINDS",
    "EVAL_PGD_STEPS",
    "KINDS",
    "RELU_KINDS",
    "TRAIN_ACTIVATIONS",
    "Event",
    "EventLog",
    "RunState",
    "StepStats",
    "TrainConfig",
    "TrainResult",
    "epoch_metrics",
    "final_metrics",
    "fixed_eval_sample",
    "parse_widths",
    "run_epoch",
    "runner_up",
    "train",
]

Kind = Literal["standard", "gamma", "crt", "pgd", "trades"]
KINDS: tuple[str, ...] = ("standard", "gamma", "crt", "pgd", "trades")
CURVATURE_KINDS: tuple[str, ...] = ("gamma", "crt")  # use the curvature bound K in the loss: smooth activations only
ADVERSARIAL_KINDS: tuple[str, ...] = ("pgd", "trades")  # empirical baselines (Table 14), no curvature term
RELU_KINDS: tuple[str, ...] = ("standard", "pgd", "trades")  # the kinds a ReLU net can be trained with
TRAIN_ACTIVATIONS: tuple[str, ...] = (*CURVATURE_ACTIVATIONS, "relu")
EVAL_PGD_STEPS = 50  # PGD steps of the per-epoch empirical robust accuracy (as crc_core.evaluate's default)
_EVAL_KEYS = ("test_accuracy", "empirical_robust_accuracy", "certified_accuracy", "certified_accuracy_all",
              "mean_K_ub", "eval_rho", "eval_samples", "eval_seconds")
EVAL_SAMPLE_SEED = 20200712  # fixed: every model is certified on the same test images
Event = dict[str, Any]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in checkpoint metadata via :meth:`to_dict`).

    Args:
        dataset: "embedded" (shipped Fashion-MNIST subset), "fashion-mnist", "mnist", or a 2-D toy ("moons",
            "circles", "spirals", "xor", "blobs" with the defaults their name carries; see crc_core.data).
        data_root: folder of IDX files for fashion-mnist / mnist (None: found automatically).
        widths: hidden widths; (256,) is the 2-layer net "2x[256]", (1024, 1024) is "3x[1024,1024]".
        activation: "softplus", "sigmoid" or "tanh" (curvature needs a smooth activation), or "relu" for the
            kinds in RELU_KINDS (ReLU's Hessian is zero almost everywhere: no curvature penalty or CRT).
        kind: "standard", "gamma" (curvature-regularized), "crt" (curvature attack inputs + regularizer), "pgd"
            (L2 PGD adversarial training) or "trades" (TRADES); see crc_core.adversarial.EXPLANATIONS.
        gamma: γ ≥ 0, weight of mean K in the loss (used by "gamma" and "crt" only).
        crt_eps: ε > 0, the attack radius (L2, pixels in [0, 1]) for "crt".
        adv_eps: ε > 0, the PGD radius (L2, pixels in [0, 1]) for "pgd" and "trades".
        adv_steps: PGD steps ≥ 1 of the inner maximization ("pgd", "trades").
        adv_step_size: PGD step size > 0, or None for 2.5·ε/steps (Madry et al.).
        adv_random_start: "pgd" starts PGD at a uniform point of the ε-ball (else at x); TRADES always starts
            at x + 0.001·N(0, I).
        trades_beta: β ≥ 0, TRADES' weight of the KL term (the paper's default 6).
        epochs, lr, batch_size: Adam with a constant learning rate, shuffled mini-batches.
        seed: weight initialisation, shuffling and power-iteration start; same seed, same weights (CPU).
        device: "auto" (cuda if available), "cpu" or "cuda[:i]".
        attack_outer, attack_inner: Algorithm 2's bisection steps on η and MM steps per η during CRT
            (paper: 30 and 20; fewer is much faster and still finds strong attacks, see docs/benchmarks.md).
        eval_rho: ρ of the certified and empirical robust accuracy reported every epoch.
        eval_samples: size of the fixed test sample that is attacked and certified every epoch (0: skip both).
            The App. G proofs of a 2-layer ReLU net are slower than CRC: ~0.5 s per image with all classes on
            one loaded CPU thread (500 images: 4 min), so prefer a smaller sample or eval_every for ReLU.
        eval_all_targets: also report the all-class certified accuracy (min radius over every t ≠ y).
        eval_mode: certify's mode for the epoch metric ("fast" or "paper").
        eval_every: evaluate every this many epochs (and always after the last one); other epochs' events carry
            None for the evaluation keys.
        log_every: steps between "step" events.
        train_limit, test_limit: use only the first N examples of a split (None: all).
        max_steps: stop after this many steps in total (None: run all epochs); for dry runs.
    """

    dataset: str = "embedded"
    data_root: str | None = None
    widths: tuple[int, ...] = (256,)
    activation: str = "softplus"
    kind: str = "crt"
    gamma: float = 0.01
    crt_eps: float = 0.5
    adv_eps: float = 0.5
    adv_steps: int = 10
    adv_step_size: float | None = None
    adv_random_start: bool = True
    trades_beta: float = 6.0
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    attack_outer: int = 8
    attack_inner: int = 5
    eval_rho: float = 0.5
    eval_samples: int = 100
    eval_all_targets: bool = True
    eval_mode: str = "fast"
    eval_every: int = 1
    log_every: int = 10
    train_limit: int | None = None
    test_limit: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        self.validate()

    # ---------------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`CRCError` with a plain-language message for any impossible setting."""
        def positive_int(name: str, value: Any, allow_none: bool = False, allow_zero: bool = False) -> None:
            if value is None and allow_none:
                return
            ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value >= 1)
            if not ok:
                need = "a whole number ≥ 0" if allow_zero else "a whole number ≥ 1"
                raise CRCError(f"{name} must be {need}{' or None' if allow_none else ''}, got {value!r}.")

        def finite(name: str, value: Any) -> float:
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise CRCError(f"{name} must be a number, got {value!r}.") from None
            if not math.isfinite(v):
                raise CRCError(f"{name} must be finite, got {value!r}.")
            return v

        if self.dataset not in DATASET_NAMES:
            raise CRCError(f"Unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_NAMES)}.")
        if not self.widths or min(self.widths) < 1:
            raise CRCError(f"widths must list at least one hidden layer width ≥ 1 (e.g. 256), got {self.widths!r}.")
        self.validate_kind()
        if finite("gamma", self.gamma) < 0:
            raise CRCError(f"γ (gamma) weighs the curvature penalty and must be ≥ 0, got {self.gamma}.")
        if finite("crt_eps", self.crt_eps) <= 0:
            raise CRCError(f"The CRT attack radius ε must be > 0, got {self.crt_eps}.")
        if not isinstance(self.adv_random_start, bool):
            raise CRCError(f"adv_random_start must be True or False, got {self.adv_random_start!r}.")
        validate_adversarial_options(eps=self.adv_eps, steps=self.adv_steps, step_size=self.adv_step_size,
                                     beta=self.trades_beta)
        if finite("lr", self.lr) <= 0:
            raise CRCError(f"The learning rate must be > 0, got {self.lr}.")
        if finite("eval_rho", self.eval_rho) <= 0:
            raise CRCError(f"The certification radius ρ must be > 0, got {self.eval_rho}.")
        for name in ("epochs", "batch_size", "attack_outer", "attack_inner", "log_every", "eval_every"):
            positive_int(name, getattr(self, name))
        positive_int("eval_samples", self.eval_samples, allow_zero=True)
        positive_int("seed", self.seed, allow_zero=True)
        for name in ("train_limit", "test_limit", "max_steps"):
            positive_int(name, getattr(self, name), allow_none=True)
        if self.eval_mode not in ("fast", "paper"):
            raise CRCError(f"eval_mode must be 'fast' or 'paper', got {self.eval_mode!r}.")
        try:
            default_device(self.device)
        except ValueError as exc:
            raise CRCError(str(exc)) from None

    def validate_kind(self) -> None:
        """Raise :class:`CRCError` for an unknown kind or activation, or ReLU with a curvature kind."""
        if self.kind not in KINDS:
            raise CRCError(f"Unknown training kind {self.kind!r}: choose one of {', '.join(KINDS)}.")
        if self.activation not in TRAIN_ACTIVATIONS:
            raise CRCError(f"Activation {self.activation!r} cannot be trained here; choose one of "
                           f"{', '.join(TRAIN_ACTIVATIONS)} (relu only for {', '.join(RELU_KINDS)}).")
        if self.activation == "relu" and self.kind in CURVATURE_KINDS:
            raise CRCError(f"Training kind {self.kind!r} needs a smooth activation (softplus, sigmoid or tanh): its "
                           "curvature penalty bounds the Hessian, and ReLU's Hessian is zero almost everywhere and "
                           f"undefined at its kinks; train relu with {', '.join(RELU_KINDS)}.")

    @property
    def gamma_used(self) -> float:
        """γ actually applied: 0 unless the kind uses the curvature penalty (gamma, crt)."""
        return float(self.gamma) if self.kind in CURVATURE_KINDS else 0.0

    def kind_settings(self) -> dict[str, Any]:
        """The hyperparameters of this kind only (for run records and labels), e.g. {"gamma": 0.01, "eps": 0.5}."""
        if self.kind == "gamma":
            return {"gamma": float(self.gamma)}
        if self.kind == "crt":
            return {"gamma": float(self.gamma), "eps": float(self.crt_eps), "attack_outer": self.attack_outer,
                    "attack_inner": self.attack_inner}
        if self.kind in ADVERSARIAL_KINDS:
            out: dict[str, Any] = {"eps": float(self.adv_eps), "steps": self.adv_steps,
                                   "step_size": self.adv_step_size}
            if self.kind == "pgd":
                out["random_start"] = self.adv_random_start
            else:
                out["beta"] = float(self.trades_beta)
            return out
        return {}

    def describe(self) -> str:
        """e.g. ``"2x[256] softplus, CRT γ=0.01 ε=0.5"`` or ``"2x[256] relu, PGD ε=0.5"``."""
        arch = format_architecture(self.widths, self.activation)
        if self.kind == "standard":
            return f"{arch}, standard"
        if self.kind == "gamma":
            return f"{arch}, γ={self.gamma:g}"
        if self.kind == "pgd":
            return f"{arch}, PGD ε={self.adv_eps:g}"
        if self.kind == "trades":
            return f"{arch}, TRADES β={self.trades_beta:g} ε={self.adv_eps:g}"
        return f"{arch}, CRT γ={self.gamma:g} ε={self.crt_eps:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (widths as a list)."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (older/newer metadata)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """What :func:`train` returns.

    model: the trained MLP (eval mode, on the training device). history: every event emitted, in order.
    metrics: the last evaluation (keys as in :func:`epoch_metrics`, plus "epoch"); empty if stopped before the first
    epoch ended. stopped: True when ``should_stop`` ended the run early. seconds: wall time.
    """

    model: MLP
    history: list[Event] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False
    seconds: float = 0.0
    steps: int = 0


# --------------------------------------------------------------------------------------------------------------
# Pieces of the loop
# --------------------------------------------------------------------------------------------------------------
def fixed_eval_sample(n_total: int, n: int) -> torch.Tensor:
    """Indices (min(n, n_total),) of the fixed certification sample: the same test images for every model and seed."""
    g = torch.Generator().manual_seed(EVAL_SAMPLE_SEED)
    return torch.randperm(n_total, generator=g)[: min(n, n_total)]


@torch.no_grad()
def _accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    correct = 0
    for s in range(0, x.shape[0], batch):
        correct += int((model(x[s:s + batch]).argmax(1) == y[s:s + batch]).sum())
    return correct / max(1, x.shape[0])


def _certified_accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor, rho: float, *, all_targets: bool,
                        bounds: Any, mode: str) -> tuple[float | None, float | None]:
    """(runner-up, all-class) certified accuracy of x (B, D) with labels y (B,) at radius ρ.

    Certified = correctly classified with certified radius ≥ ρ (against the runner-up class only, as in the
    paper, or against every other class; None when not computed). One :func:`crc_core.certify.certify` call:
    the all-class run also yields the runner-up radius.
    """
    if all_targets:
        cert = certify(model, x, y, targets="all", mode=mode, bounds=bounds, refine="minimum")
        ok_all = cert.correct & (cert.radius >= rho)
        ok_ru = cert.correct & (cert.runner_up_radius >= rho)
        return float(ok_ru.float().mean()), float(ok_all.float().mean())
    cert = certify(model, x, y, targets="runner-up", mode=mode, bounds=bounds)
    return float((cert.correct & (cert.radius >= rho)).float().mean()), None


def _curvature_certificates(model: MLP, xs: torch.Tensor, ys: torch.Tensor, rho: float, *, all_targets: bool,
                            mode: str) -> dict[str, Any]:
    """CRC on the sample of a smooth net: certified_accuracy, certified_accuracy_all, mean_K_ub."""
    with torch.no_grad():
        logits = model(xs)
    pred = logits.argmax(1)
    t = runner_up(logits, pred)
    bounds = curvature_bounds(model) if all_targets else None
    pair_bounds = bounds.for_pairs(pred, t) if bounds is not None else curvature_bounds(model, pred, t)
    ru, every = _certified_accuracy(model, xs, ys, rho, all_targets=all_targets,
                                    bounds=bounds if bounds is not None else pair_bounds, mode=mode)
    return {"certified_accuracy": ru, "certified_accuracy_all": every, "mean_K_ub": float(pair_bounds.K.mean())}


def _relu_certificates(model: MLP, xs: torch.Tensor, ys: torch.Tensor, rho: float, *,
                       all_targets: bool) -> dict[str, Any]:
    """App. G on the sample of a 2-layer ReLU net (one proof at ρ per image and target, no bisection); None for
    deeper ReLU nets, which have no certificate here. No mean_K_ub (ReLU has no curvature bound)."""
    if model.depth != 2:
        return {"certified_accuracy": None, "certified_accuracy_all": None, "mean_K_ub": None}
    ru = certified_at(model, xs, ys, rho, targets="runner-up")
    every = None
    if all_targets:  # only images certified against the runner-up can be certified against every class
        ok = torch.zeros_like(ru)
        if ru.any():
            ok[ru] = certified_at(model, xs[ru], ys[ru], rho, targets="all")
        every = float(ok.float().mean())
    return {"certified_accuracy": float(ru.float().mean()), "certified_accuracy_all": every, "mean_K_ub": None}


def epoch_metrics(model: MLP, test: Dataset | tuple[torch.Tensor, torch.Tensor], *, rho: float = 0.5,
                  eval_samples: int = 100, all_targets: bool = True, mode: str = "fast",
                  clamp: bool = True) -> dict[str, Any]:
    """The metrics reported after a training epoch, on a test set (images (N, D) in [0, 1], labels (N,)).

    Returns a dict with
      test_accuracy: clean accuracy on all N images;
      empirical_robust_accuracy: fraction of the fixed sample (``eval_samples`` images, see
        :func:`fixed_eval_sample`) correctly classified at the image and at the point L2 PGD (EVAL_PGD_STEPS steps,
        radius ρ) finds: an upper bound on the true robust accuracy; None if eval_samples = 0;
      certified_accuracy: fraction of the sample correctly classified with a certified radius ≥ ρ against the
        runner-up class (the paper's metric); CRC for smooth nets, the App. G certificate for 2-layer ReLU nets;
        None if eval_samples = 0 and for deeper ReLU nets (no certificate for them here);
      certified_accuracy_all: the same against every class t ≠ y (None if not computed);
      mean_K_ub: mean certification-grade K (Theorems 3/4) over the sample's (prediction, runner-up) pairs
        (None for ReLU nets);
      eval_rho, eval_samples, eval_seconds.
    ``clamp``: PGD keeps pixels in [0, 1] (False for the 2-D toys' raw coordinates). Follows the model's device.
    (The per-image evaluation tables of the paper are :func:`crc_core.evaluate.evaluate`.)
    """
    t0 = time.perf_counter()
    images, labels = (test.images, test.labels) if isinstance(test, Dataset) else test
    dev = model.layers[0].weight.device
    images, labels = images.to(dev), labels.to(dev)
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {"test_accuracy": _accuracy(model, images, labels), "empirical_robust_accuracy": None,
                           "certified_accuracy": None, "certified_accuracy_all": None, "mean_K_ub": None,
                           "eval_rho": float(rho), "eval_samples": 0}
    if eval_samples > 0 and images.shape[0] > 0:
        idx = fixed_eval_sample(images.shape[0], eval_samples).to(dev)
        xs, ys = images[idx], labels[idx]
        out["eval_samples"] = int(xs.shape[0])
        robust = pgd_robust(model, xs, ys, eps=rho, steps=EVAL_PGD_STEPS, clamp=clamp)
        out["empirical_robust_accuracy"] = float(robust.float().mean())
        if model.activation_name == "relu":
            out.update(_relu_certificates(model, xs, ys, rho, all_targets=all_targets))
        else:
            out.update(_curvature_certificates(model, xs, ys, rho, all_targets=all_targets, mode=mode))
    out["eval_seconds"] = time.perf_counter() - t0
    model.train(was_training)
    return out


def config_epoch_metrics(model: MLP, config: TrainConfig, test: Dataset) -> dict[str, Any]:
    """:func:`epoch_metrics` with the evaluation settings of ``config`` (eval_rho, eval_samples, ...)."""
    return epoch_metrics(model, test, rho=config.eval_rho, eval_samples=config.eval_samples,
                         all_targets=config.eval_all_targets, mode=config.eval_mode,
                         clamp=in_unit_box(config.dataset))


def final_metrics(config: TrainConfig, result: TrainResult, test: Dataset | None = None) -> dict[str, Any]:
    """The metrics that describe ``result.model`` as saved: ``result.metrics`` after a completed run; for a run
    stopped early (or before its first evaluation) the weights are evaluated now, as after an epoch, with
    "epoch" None. ``test`` defaults to config's test split (with its test_limit)."""
    if result.metrics and not result.stopped:
        return dict(result.metrics)
    if test is None:
        test = load_dataset(config.dataset, "test", root=config.data_root, limit=config.test_limit)
    return {"epoch": None, "step": result.steps, **config_epoch_metrics(result.model, config, test)}


def _build_model(config: TrainConfig, in_dim: int, n_classes: int, init_model: MLP | None) -> MLP:
    if init_model is None:
        return MLP(in_dim, list(config.widths), n_classes, config.activation)
    want = {"in_dim": in_dim, "widths": list(config.widths), "n_classes": n_classes,
            "activation": config.activation}
    if init_model.config() != want:
        raise CRCError(
            f"init_model is {init_model.config()} but the config asks for {want}; "
            "use a config with the model's widths and activation."
        )
    return copy.deepcopy(init_model)  # never modify the caller's (possibly cached, shared) model


def _load_data(config: TrainConfig, data: tuple[Dataset, Dataset] | None) -> tuple[Dataset, Dataset]:
    if data is not None:
        train_ds, test_ds = data
        if config.train_limit is not None:
            train_ds = train_ds.take(config.train_limit)
        if config.test_limit is not None:
            test_ds = test_ds.take(config.test_limit)
        return train_ds, test_ds
    train_ds = load_dataset(config.dataset, "train", root=config.data_root, limit=config.train_limit)
    test_ds = load_dataset(config.dataset, "test", root=config.data_root, limit=config.test_limit)
    return train_ds, test_ds


class StepStats:
    """Running means of step statistics between two "step" events."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.n) for k, v in self.sums.items()}


# --------------------------------------------------------------------------------------------------------------
# Event emission
# --------------------------------------------------------------------------------------------------------------
class EventLog:
    """Builds the events of one run (documented in :func:`train`), keeps them in ``history`` and passes each to
    the callback. ``steps_per_epoch`` / ``total_steps`` are set once the data is known."""

    def __init__(self, callback: Callable[[Event], None] | None) -> None:
        self.callback = callback
        self.history: list[Event] = []
        self.t_start = time.perf_counter()
        self.steps_per_epoch = 0
        self.total_steps = 0

    def seconds(self) -> float:
        return time.perf_counter() - self.t_start

    def emit(self, event: Event) -> None:
        self.history.append(event)
        if self.callback is not None:
            self.callback(event)

    def step(self, step: int, epoch: int, epoch_step: int, window: StepStats) -> None:
        """A "step" event with the means of ``window`` (the steps since the last one)."""
        self.emit({"kind": "step", "step": step, "epoch": epoch, "epoch_step": epoch_step,
                   "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                   "seconds": self.seconds(), **window.means()})

    def epoch(self, epoch: int, step: int, train_means: dict[str, float], metrics: dict[str, Any] | None) -> None:
        """An "epoch" event; ``metrics`` None for an epoch skipped by eval_every (its evaluation keys are None)."""
        shown = metrics if metrics is not None else {"epoch": epoch, "step": step, **dict.fromkeys(_EVAL_KEYS)}
        self.emit({"kind": "epoch", "epoch": epoch, "step": step, "seconds": self.seconds(),
                   "train_loss": train_means["loss"], "train_accuracy": train_means["accuracy"], **shown})

    def done(self, stopped: bool, step: int, metrics: dict[str, Any]) -> float:
        """The "done" event; returns the run's wall time."""
        seconds = self.seconds()
        self.emit({"kind": "done", "stopped": stopped, "step": step, "seconds": seconds, "metrics": dict(metrics)})
        return seconds


# --------------------------------------------------------------------------------------------------------------
# The loop: an epoch step, and train() around it
# --------------------------------------------------------------------------------------------------------------
@dataclass
class RunState:
    """The state of one training run between epochs."""

    config: TrainConfig
    model: MLP
    X: torch.Tensor
    Y: torch.Tensor
    opt: torch.optim.Optimizer
    reg: CurvatureRegularizer
    shuffle: torch.Generator
    step: int = 0
    stopped: bool = False


def run_epoch(run: RunState, epoch: int, log: EventLog, should_stop: Callable[[], bool] | None) -> StepStats:
    """One pass over the shuffled training set (or until total_steps / should_stop); emits "step" events every
    ``log_every`` steps and at the end of the epoch. Returns the statistics of the epoch's steps (n = 0: none)."""
    config, n = run.config, run.X.shape[0]
    perm = torch.randperm(n, generator=run.shuffle).to(run.X.device)
    window, epoch_stats = StepStats(), StepStats()
    for epoch_step in range(1, log.steps_per_epoch + 1):
        if run.step >= log.total_steps:
            break
        if should_stop is not None and should_stop():
            run.stopped = True
            if window.n:  # report the steps done since the last event
                log.step(run.step, epoch, epoch_step - 1, window)
            break
        idx = perm[(epoch_step - 1) * config.batch_size: epoch_step * config.batch_size]
        stats = _train_step(run.model, run.opt, run.reg, run.X[idx], run.Y[idx], config, config.gamma_used)
        run.step += 1
        window.add(**stats)
        epoch_stats.add(**stats)
        if run.step % config.log_every == 0 or epoch_step == log.steps_per_epoch or run.step == log.total_steps:
            log.step(run.step, epoch, epoch_step, window)
            window = StepStats()
    return epoch_stats


def _start(config: TrainConfig, train_ds: Dataset, init_model: MLP | None, dev: torch.device) -> RunState:
    """Model, optimizer, regularizer and shuffling for a run (call inside the run's forked RNG)."""
    torch.manual_seed(config.seed)
    model = _build_model(config, train_ds.in_dim, train_ds.n_classes, init_model).to(dev)
    model.train()
    return RunState(config, model, train_ds.images.to(dev), train_ds.labels.to(dev),
                torch.optim.Adam(model.parameters(), lr=config.lr), CurvatureRegularizer(),
                torch.Generator().manual_seed(config.seed))


def train(config: TrainConfig, *, callback: Callable[[Event], None] | None = None,
          should_stop: Callable[[], bool] | None = None, init_model: MLP | None = None,
          data: tuple[Dataset, Dataset] | None = None, epoch_checkpoint: str | Path | None = None,
          resume: bool = False) -> TrainResult:
    """Train an MLP as ``config`` says; return a :class:`TrainResult`.

    Args:
        config: a validated :class:`TrainConfig`.
        callback: called with each event dict (also collected in ``history``):
            {"kind": "step", "step", "epoch", "epoch_step", "steps_per_epoch", "total_steps", "seconds",
             "loss", "ce", "mean_K", "accuracy"[, "attack_accuracy", "attack_grads", "robust_kl"]} every
             ``log_every`` steps (means over the window; accuracy on the clean batch; mean_K absent for ReLU nets;
             ce is TRADES' natural loss; attack_accuracy on the attacked batch for CRT, PGD and TRADES;
             attack_grads = gradient evaluations per attacked image for CRT; robust_kl for TRADES);
            {"kind": "epoch", "epoch", "step", "seconds", "train_loss", "train_accuracy", + :func:`epoch_metrics`
             keys (None on epochs skipped by ``eval_every``)};
            {"kind": "done", "stopped", "step", "seconds", "metrics"}.
        should_stop: polled before every step; when it returns True the loop ends after the current step and
            the result has ``stopped=True`` with the model as trained so far (usable, finite).
        init_model: continue from these weights (copied; must match the config's architecture).
        data: (train, test) datasets to use instead of loading ``config.dataset`` (limits still apply).
        epoch_checkpoint: write the full training state there after every finished epoch
            (:mod:`crc_core.epoch_checkpoint`; atomic, so a killed run keeps its last finished epoch).
        resume: continue from ``epoch_checkpoint`` when that file exists (its history is replayed first, then
            training goes on from the next epoch; CheckpointError when it was made with other settings). On CPU
            the final weights equal those of an uninterrupted run, bit for bit.
    """
    if not isinstance(config, TrainConfig):
        raise CRCError(f"train() needs a TrainConfig, got {type(config).__name__}.")
    log = EventLog(callback)
    dev = default_device(config.device)
    train_ds, test_ds = _load_data(config, data)
    if len(train_ds) == 0:
        raise CRCError("The training set is empty.")
    log.steps_per_epoch = math.ceil(len(train_ds) / config.batch_size)
    log.total_steps = min(log.steps_per_epoch * config.epochs, config.max_steps or math.inf)
    metrics: dict[str, Any] = {}
    rng_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        run = _start(config, train_ds, init_model, dev)
        first, metrics = _resume(run, log, epoch_checkpoint if resume else None, config, len(train_ds))
        for epoch in range(first, config.epochs + 1):
            epoch_stats = run_epoch(run, epoch, log, should_stop)
            if run.stopped or epoch_stats.n == 0:
                break
            finished = run.step >= log.total_steps or epoch == config.epochs
            evaluated = None
            if finished or epoch % config.eval_every == 0:
                metrics = evaluated = {"epoch": epoch, "step": run.step,
                                       **config_epoch_metrics(run.model, config, test_ds)}
            log.epoch(epoch, run.step, epoch_stats.means(), evaluated)
            if epoch_checkpoint is not None:
                save_epoch_checkpoint(epoch_checkpoint, run, epoch=epoch, seconds=log.seconds(), history=log.history,
                                      metrics=metrics)
            if run.step >= log.total_steps:
                break
    run.model.eval()
    seconds = log.done(run.stopped, run.step, metrics)
    return TrainResult(run.model, log.history, metrics, run.stopped, seconds, run.step)


def _resume(run: RunState, log: EventLog, path: str | Path | None, config: TrainConfig,
            n_train: int) -> tuple[int, dict[str, Any]]:
    """Load the epoch checkpoint at ``path`` (if any) into ``run`` and replay its events into ``log``; return
    (first epoch to run, last evaluation). Without a file: (1, {})."""
    if path is None or not Path(path).is_file():
        return 1, {}
    state = load_epoch_checkpoint(path, config, n_train)
    restore_run(run, state)
    log.t_start -= state.seconds  # event times count the earlier part of the run too
    for event in state.history:
        log.emit(event)
    return state.epoch + 1, dict(state.metrics)


def _curvature_term(model: MLP, reg: CurvatureRegularizer, y: torch.Tensor, t: torch.Tensor,
                    gamma: float) -> torch.Tensor | None:
    """K (B,) of the (y, t) margins: differentiable when γ > 0, measured without gradient (for the curves)
    otherwise; None for ReLU nets (no curvature bound)."""
    if model.activation_name == "relu":
        return None
    if gamma > 0:
        return reg(model, y, t)
    with torch.no_grad():
        return reg(model, y, t)


def _kind_loss(model: MLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, K: torch.Tensor | None,
               config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(loss without the γ term, its cross-entropy part, extra statistics) for the batch x (B, D), y (B,)."""
    if config.kind == "pgd":
        loss, s = pgd_training_loss(model, x, y, eps=config.adv_eps, steps=config.adv_steps,
                                    step_size=config.adv_step_size, random_start=config.adv_random_start,
                                    clamp=in_unit_box(config.dataset))
        return loss, loss, {"attack_accuracy": s["adv_acc"]}
    if config.kind == "trades":
        loss, s = trades_loss(model, x, y, beta=config.trades_beta, eps=config.adv_eps, steps=config.adv_steps,
                              step_size=config.adv_step_size, clamp=in_unit_box(config.dataset))
        ce = torch.tensor(s["natural_loss"])
        return loss, ce, {"attack_accuracy": s["adv_acc"], "robust_kl": s["robust_kl"]}
    x_in, extra = x, {}
    if config.kind == "crt":
        assert K is not None  # validate() refuses CRT for ReLU nets
        K_est = K.detach()
        attack = curvature_attack(model, x, y, t, config.crt_eps, m=-K_est, K=K_est,
                                  n_outer=config.attack_outer, n_inner=config.attack_inner)
        x_in = attack.x
        extra["attack_grads"] = float(attack.n_grad.float().mean())
    logits = model(x_in)
    ce = F.cross_entropy(logits, y)
    if config.kind == "crt":
        extra["attack_accuracy"] = float((logits.detach().argmax(1) == y).float().mean())
    return ce, ce, extra


def _train_step(model: MLP, opt: torch.optim.Optimizer, reg: CurvatureRegularizer, x: torch.Tensor,
                y: torch.Tensor, config: TrainConfig, gamma: float) -> dict[str, float]:
    """One optimizer step on a batch x (B, D), y (B,); returns scalar statistics for the logs (mean_K only for
    smooth activations)."""
    with torch.no_grad():
        clean_logits = model(x)
    t = runner_up(clean_logits, y)
    K = _curvature_term(model, reg, y, t, gamma)
    base, ce, extra = _kind_loss(model, x, y, t, K, config)
    loss = base + gamma * K.mean() if gamma > 0 and K is not None else base
    if not torch.isfinite(loss):
        k_text = f", mean K {float(K.detach().mean())}" if K is not None else ""
        raise CRCError(
            f"Training diverged: the loss became {float(loss.detach())} (cross-entropy {float(ce.detach())}"
            f"{k_text}). Lower the learning rate (now {config.lr:g}) or γ (now {gamma:g})."
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    stats = {"accuracy": float((clean_logits.argmax(1) == y).float().mean()), "loss": float(loss.detach()),
             "ce": float(ce.detach()), **extra}
    if K is not None:
        stats["mean_K"] = float(K.detach().mean())
    return stats


def parse_widths(spec: str | Sequence[int]) -> tuple[int, ...]:
    """"256" / "1024,1024" / "2x1024" (depth x width, the paper's "2x[1024]") / [256] -> hidden widths tuple."""
    if not isinstance(spec, str):
        return tuple(int(w) for w in spec)
    s = spec.strip().lower().replace("[", "").replace("]", "").replace(" ", "")
    try:
        if "x" in s:
            depth_text, width_text = s.split("x", 1)
            depth, width = int(depth_text), int(width_text)
        else:
            widths = tuple(int(w) for w in s.split(",") if w)
    except ValueError:
        raise CRCError(
            f"Cannot read widths {spec!r}: write hidden widths like '256' or '1024,1024', or depth x width "
            "like '2x1024' (the paper's 2x[1024])."
        ) from None
    if "x" not in s:
        return widths
    if depth < 2:
        raise CRCError(f"Depth in {spec!r} must be ≥ 2 (input layer + output layer).")
    return tuple([width] * (depth - 1))
