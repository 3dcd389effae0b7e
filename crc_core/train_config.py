"""What defines a training run: :class:`TrainConfig` (validated when built, stored in checkpoints' run records)
and :func:`parse_widths` (the architecture as text). The kinds and their settings are :mod:`crc_core.training_kinds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from .adversarial import validate_adversarial_options
from .data import DATASET_NAMES
from .device import default_device
from .errors import CRCError
from .models import format_architecture
from .training_kinds import KINDS, RELU_KINDS, TRAIN_ACTIVATIONS

__all__ = ["ATTACK_BOUNDS", "KEEP_RULES", "KEEP_SCORES", "TrainConfig", "parse_widths"]

# Which weights a run returns: the last epoch's, or those of the evaluated epoch with the best score of the rule
# (the earliest on ties). KEEP_SCORES: rule -> (the epoch metric it maximizes, what that is in words).
# "best-test-accuracy" is the official code's model selection and selects on the test set; "best-train-certified"
# reads no test image: certified accuracy at eval_rho (runner-up) on the last select_images *training* images.
KEEP_SCORES: dict[str, tuple[str, str]] = {
    "best-test-accuracy": ("test_accuracy", "best standard test accuracy"),
    "best-train-certified": ("train_certified_accuracy", "best certified accuracy on training images"),
}
KEEP_RULES: tuple[str, ...] = ("last", *KEEP_SCORES)
ATTACK_BOUNDS: tuple[str, ...] = ("regularizer", "theorem3")  # TrainConfig.attack_bounds


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
            (L2 PGD adversarial training) or "trades" (TRADES); see crc_core.training_kinds.
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
        attack_bounds: the curvature bounds the CRT attack's MM steps and η range use: "regularizer" (m = -K and K,
            K the penalty's Theorem 4 estimate: its η ≥ K keeps the attack well inside ε, at 0.73 of ε = 1.58 on
            average, docs/reproduction.md) or "theorem3" (Theorem 3's m and M by warm-started power iteration,
            2-layer nets: the authors' code; the attack reaches ε).
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
        keep: which weights the run returns and saves: "last" (the final epoch's), "best-test-accuracy" (those
            of the evaluated epoch with the best standard test accuracy) or "best-train-certified" (those of the
            evaluated epoch with the best certified accuracy at ``eval_rho`` against the runner-up on the last
            ``select_images`` training images); the earliest epoch on ties; only epochs that ``eval_every``
            evaluates are candidates. "best-test-accuracy" is the paper's selection; it uses the test set (the
            authors' code evaluates after every epoch and keeps the checkpoint with the best test accuracy), so
            the test accuracy it reports is optimistic. "best-train-certified" reads no test image; its images
            are trained on (not a held-out split). No rule changes the training itself.
        select_images: how many training images (the last ones) "best-train-certified" certifies after each
            evaluated epoch (ignored by the other rules); 10,000 take ~25 s for a 2x[1024] net on one CPU thread.
        select_held_out: hold those images out of training (a validation split: the run trains on the others);
            only with keep="best-train-certified".
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
    keep: str = "last"
    attack_bounds: str = "regularizer"
    select_images: int = 10_000
    select_held_out: bool = False

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
        for name in ("epochs", "batch_size", "attack_outer", "attack_inner", "log_every", "eval_every",
                     "select_images"):
            positive_int(name, getattr(self, name))
        positive_int("eval_samples", self.eval_samples, allow_zero=True)
        positive_int("seed", self.seed, allow_zero=True)
        for name in ("train_limit", "test_limit", "max_steps"):
            positive_int(name, getattr(self, name), allow_none=True)
        if self.keep not in KEEP_RULES:
            raise CRCError(f"keep must be 'last' (the final epoch's weights), 'best-test-accuracy' (the epoch with "
                           "the best standard test accuracy) or 'best-train-certified' (the epoch with the best "
                           f"certified accuracy on training images), got {self.keep!r}.")
        if not isinstance(self.select_held_out, bool):
            raise CRCError(f"select_held_out must be True or False, got {self.select_held_out!r}.")
        if self.select_held_out and self.keep != "best-train-certified":
            raise CRCError("select_held_out holds the images keep='best-train-certified' certifies out of training; "
                           f"it needs that rule, not keep={self.keep!r}.")
        if self.keep == "best-train-certified" and self.activation == "relu" and len(self.widths) != 1:
            raise CRCError("keep 'best-train-certified' needs a certificate: a smooth activation, or a 2-layer ReLU "
                           f"net (App. G); this ReLU net has {len(self.widths) + 1} layers.")
        if self.attack_bounds not in ATTACK_BOUNDS:
            raise CRCError(f"attack_bounds must be 'regularizer' or 'theorem3', got {self.attack_bounds!r}.")
        if self.attack_bounds == "theorem3" and len(self.widths) != 1 and KINDS[self.kind].crt_attack:
            raise CRCError("attack_bounds 'theorem3' needs a 2-layer network (one hidden layer): Theorem 3 bounds "
                           f"only those; this one has {len(self.widths) + 1} layers (use 'regularizer').")
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
        if self.activation == "relu" and not KINDS[self.kind].relu:
            raise CRCError(f"Training kind {self.kind!r} needs a smooth activation (softplus, sigmoid or tanh): its "
                           "curvature penalty bounds the Hessian, and ReLU's Hessian is zero almost everywhere and "
                           f"undefined at its kinks; train relu with {', '.join(RELU_KINDS)}.")

    @property
    def gamma_used(self) -> float:
        """γ actually applied: 0 unless the kind uses the curvature penalty (gamma, crt)."""
        return float(self.gamma) if KINDS[self.kind].curvature else 0.0

    @property
    def crt_eps_used(self) -> float | None:
        """The CRT attack radius ε actually applied: None unless the kind trains on Algorithm 2's points (crt)."""
        return self.crt_eps if KINDS[self.kind].crt_attack else None

    def kind_settings(self) -> dict[str, Any]:
        """The hyperparameters of this kind only (for run records and labels), e.g. {"gamma": 0.01, "eps": 0.5}."""
        return KINDS[self.kind].settings(self)

    def describe(self) -> str:
        """e.g. ``"2x[256] softplus, CRT γ=0.01 ε=0.5"`` or ``"2x[256] relu, PGD ε=0.5"``."""
        return f"{format_architecture(self.widths, self.activation)}, {KINDS[self.kind].label(self)}"

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
