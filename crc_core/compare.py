"""CRC beside the certificates it competes with, per image, in one result shape.

:func:`compare_certificates` runs any of CRC (:func:`crc_core.certify.certify`), CROWN, the first-order
(Lipschitz) bound and randomized smoothing on the same images and adds an attack's upper bound: the distance of the
closest point found where the prediction changes. For a deterministic method the true distance to the decision
boundary lies in [radius, attack_upper]; the best sound radius is the largest deterministic one.

Randomized smoothing certifies a *different* classifier (the smoothed one) and holds with probability ≥ 1 - α: its
radius is reported beside the others, flagged ``deterministic=False``, and never enters ``best_sound``.

2-layer ReLU networks get the App. G quadratic certificate ("relu-quadratic",
:func:`crc_core.baselines.relu_quadratic.certify_relu`) in CRC's place; :func:`refusal` says why a method does not
apply to a model (CRC on ReLU: no curvature bound), and ``skip_unsupported=True`` runs the methods that do apply,
recording the others' reasons in :attr:`ComparisonResult.refused`.

:data:`METHODS` is THE method registry (CLI, app and sweeps read it): one :class:`Method` per certificate, with
the check that it applies to a model, its runner inside :func:`compare_certificates` and its batched radii for a
sweep (:meth:`Method.radii`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch

from .attack import pgd_attack
from .baselines.common import as_net64
from .baselines.crown import crown_radius
from .baselines.lipschitz import hidden_lipschitz, lipschitz_radius
from .baselines.relu_quadratic import certify_relu, require_two_layer_relu
from .baselines.smoothing import SMOOTHING_GUARANTEE, Smooth, check_smoothing_args
from .bounds import curvature_bounds
from .certify import SolverMode, certify
from .checks import check_images, check_labels
from .errors import CRCError
from .models import MLP, require_curvature_model
from .targets import TARGET_MODES, TargetMode, choose_targets

__all__ = ["ALL_METHODS", "DEFAULT_METHODS", "METHODS", "RELU_METHOD", "ComparisonResult", "Method", "MethodResult",
           "applicable_methods", "attack_upper_bound", "compare_certificates", "default_methods",
           "refusal"]

DEFAULT_METHODS: tuple[str, ...] = ("crc", "crown", "lipschitz", "smoothing")  # issue 11's comparison (any activation)
RELU_METHOD = "relu-quadratic"  # App. G: 2-layer ReLU nets only
Targets = Literal["all", "runner-up"]
COMPARED_TARGETS: tuple[str, ...] = ("all", "runner-up")  # the target modes compare_certificates supports
CERTIFY_BATCH = 256  # images per call in Method.radii: bounds the (B · targets, D) working set
_GUARANTEE = "deterministic: no point closer than the radius changes the model's prediction (float64 model)"


@dataclass
class MethodResult:
    """One method on B images: radius (B,) (0 where the label is not certified: misclassified or abstained;
    float64 on the CPU from :func:`compare_certificates`), seconds (the wall time of the whole batch),
    deterministic (False for smoothing), guarantee (one line), flags (name -> (B,) tensor, e.g. CRC's ``exact``,
    smoothing's ``abstain`` and ``smoothed_pred``), extras (name -> scalar, e.g. CRC's ``certificate_success``
    in a sweep), image_seconds ((B,) float64: each image's own wall time when every image was certified alone,
    ``time_each_image``; None when the batch was timed as a whole)."""

    name: str
    radius: torch.Tensor
    seconds: float
    deterministic: bool
    guarantee: str
    flags: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, float] = field(default_factory=dict)
    image_seconds: torch.Tensor | None = None

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, self.radius.shape[0])

    def time_column(self) -> list[float]:
        """Seconds per image (B values): each image's own time when timed alone, else the batch's mean."""
        if self.image_seconds is not None:
            return self.image_seconds.tolist()
        return [self.seconds_per_image] * len(self.radius)


@dataclass
class ComparisonResult:
    """Per image (B,): pred, label, correct; ``methods`` name -> :class:`MethodResult`; attack_upper (distance of
    the closest prediction change found, inf if none: an upper bound on the true distance; with targets
    "runner-up", of the closest point where the runner-up class reaches the prediction); best_sound (largest
    deterministic radius); violation (a deterministic radius above attack_upper: a bug, never expected); refused
    (method -> why it does not apply to the model, for the methods skipped with ``skip_unsupported``);
    timed_each_image (every image was certified and timed alone: ``time_<method>`` is its own time)."""

    pred: torch.Tensor
    label: torch.Tensor
    correct: torch.Tensor
    methods: dict[str, MethodResult]
    attack_upper: torch.Tensor
    best_sound: torch.Tensor
    violation: torch.Tensor
    targets: str
    refused: dict[str, str] = field(default_factory=dict)
    timed_each_image: bool = False

    def radius(self, name: str) -> torch.Tensor:
        return self.methods[name].radius

    def mean_certificate(self, name: str) -> float:
        """Mean radius of ``name`` over correctly classified images (the paper's Table 5b number)."""
        r = self.radius(name)[self.correct]
        return float(r.mean()) if r.numel() else float("nan")

    def certified_accuracy(self, name: str, rho: float) -> float:
        """Fraction of all images that are correctly classified with radius ≥ ρ for ``name``."""
        return float((self.correct & (self.radius(name) >= rho)).double().mean())

    def to_frame(self):
        """One row per image (pandas DataFrame): radius_<method>, time_<method> (s per image: the image's own time
        when ``timed_each_image``, else the batch's mean), flags, bracket."""
        import pandas as pd

        cols = {"pred": self.pred.numpy(), "label": self.label.numpy(), "correct": self.correct.numpy()}
        for name, m in self.methods.items():
            cols[f"radius_{name}"] = m.radius.numpy()
            cols[f"time_{name}"] = m.time_column()
            for flag, v in m.flags.items():
                cols[f"{name}_{flag}"] = v.numpy()
        cols.update(best_sound=self.best_sound.numpy(), attack_upper=self.attack_upper.numpy(),
                    violation=self.violation.numpy())
        return pd.DataFrame(cols)


def _refusal_error(model: MLP, method: str) -> CRCError | None:
    """The error (its own type, e.g. UnsupportedActivationError) saying why ``method`` cannot certify ``model``."""
    if method not in METHODS:
        return CRCError(f"Unknown method {method!r}; use {', '.join(ALL_METHODS)}.")
    try:
        METHODS[method].check(model)
    except CRCError as exc:
        if method == "crc" and getattr(model, "activation_name", None) == "relu":
            hint = (f"use {RELU_METHOD} (App. G) for this 2-layer net" if model.depth == 2 else
                    "crown, lipschitz and smoothing still apply")
            return type(exc)(f"CRC needs a smooth activation (a bounded second derivative); ReLU's curvature is "
                             f"unbounded at 0, so no curvature bound exists: {hint}.")
        return exc
    return None


def refusal(model: MLP, method: str) -> str | None:
    """Why ``method`` cannot certify ``model`` (one sentence), or None when it applies. Checks only the model."""
    err = _refusal_error(model, method)
    return None if err is None else str(err)


def applicable_methods(model: MLP, methods: Sequence[str] | None = None) -> tuple[str, ...]:
    """The subset of ``methods`` (default: every registered one) that :func:`refusal` accepts for ``model``
    (order kept)."""
    return tuple(m for m in (ALL_METHODS if methods is None else methods) if refusal(model, m) is None)


def default_methods(model: MLP) -> tuple[str, ...]:
    """The main certificate of a model: App. G for a 2-layer ReLU net, CRC otherwise (refused for deeper ReLU)."""
    return (RELU_METHOD,) if refusal(model, RELU_METHOD) is None else ("crc",)


def _check_methods(model: MLP, methods: Sequence[str], targets: str, smoothing: dict, skip_unsupported: bool
                   ) -> tuple[tuple[str, ...], dict[str, str]]:
    """(methods to run, refused name -> reason); raises CRCError for bad input or (unless ``skip_unsupported``)
    a method that does not apply, before any work."""
    methods = tuple(dict.fromkeys(str(m).strip().lower() for m in methods))
    if not methods:
        raise CRCError(f"Choose at least one method of {', '.join(ALL_METHODS)}.")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise CRCError(f"Unknown method(s) {', '.join(unknown)}; use {', '.join(ALL_METHODS)}.")
    if targets not in COMPARED_TARGETS:
        raise CRCError(f"Unknown target mode {targets!r}; use 'all' or 'runner-up'.")
    if not isinstance(model, MLP):
        raise CRCError(f"Comparing certificates needs a crc_core.models.MLP, got {type(model).__name__}.")
    refused: dict[str, str] = {}
    for m in methods:
        if (err := _refusal_error(model, m)) is not None:
            if not skip_unsupported:
                raise err
            refused[m] = str(err)
    methods = tuple(m for m in methods if m not in refused)
    if not methods:
        raise CRCError("No chosen method applies to this model: " + " ".join(f"{m}: {w}" for m, w in refused.items()))
    if "smoothing" in methods:
        check_smoothing_args(smoothing.get("sigma", 0.25), smoothing.get("n0", 100), smoothing.get("n", 10_000),
                             smoothing.get("alpha", 0.001))
    return methods, refused


@dataclass
class _Batch:
    """What every method's runner gets: images x0 (B, D) on the model's device, label, pred, correct (B,), the
    targets T (B, T) and the target mode."""

    model: MLP
    x0: torch.Tensor
    label: torch.Tensor
    pred: torch.Tensor
    correct: torch.Tensor
    T: torch.Tensor
    targets: str

    def image(self, i: int) -> _Batch:
        """Image i alone, as a batch of one."""
        s = slice(i, i + 1)
        return _Batch(self.model, self.x0[s], self.label[s], self.pred[s], self.correct[s], self.T[s], self.targets)


def _run_each_image(name: str, b: _Batch, options: dict) -> MethodResult:
    """Method ``name`` on every image of ``b`` alone (one call per image): the same result as one batched call up
    to float rounding of the kernels, with each image's own wall time in ``image_seconds``."""
    parts = [METHODS[name].run(b.image(i), dict(options)) for i in range(b.x0.shape[0])]
    secs = torch.tensor([p.seconds for p in parts], dtype=torch.float64)
    return MethodResult(name, torch.cat([p.radius for p in parts]), float(secs.sum()), parts[0].deterministic,
                        parts[0].guarantee, {k: torch.cat([p.flags[k] for p in parts]) for k in parts[0].flags},
                        image_seconds=secs)


def _timed(fn, dev: torch.device):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, time.perf_counter() - t0


def _run_crc(b: _Batch, options: dict) -> MethodResult:
    res, sec = _timed(lambda: certify(b.model, b.x0, b.label, targets=b.targets, refine="minimum", **options),
                      b.x0.device)
    return MethodResult("crc", res.radius.double().cpu(), sec, True, _GUARANTEE,
                        {"exact": res.exact.cpu(), "upper": res.upper.double().cpu()})


def _run_lipschitz(b: _Batch, options: dict) -> MethodResult:
    def run() -> torch.Tensor:
        B, nT = b.T.shape
        rows = torch.arange(B, device=b.x0.device).repeat_interleave(nT)
        r = lipschitz_radius(b.model, b.x0[rows], b.pred[rows], b.T.reshape(-1), hidden=hidden_lipschitz(b.model))
        return r.reshape(B, nT).min(1).values

    r, sec = _timed(run, b.x0.device)
    return MethodResult("lipschitz", torch.where(b.correct, r, 0).cpu(), sec, True, _GUARANTEE)


def _run_crown(b: _Batch, options: dict) -> MethodResult:
    res, sec = _timed(lambda: crown_radius(b.model, b.x0, b.pred, b.T, **options), b.x0.device)
    r = torch.where(b.correct, res.radius, 0).cpu()
    return MethodResult("crown", r, sec, True, _GUARANTEE, {"n_bounds": res.n_bounds.cpu()})


def _run_relu(b: _Batch, options: dict) -> MethodResult:
    res, sec = _timed(lambda: certify_relu(b.model, b.x0, b.label, targets=b.targets, **options), b.x0.device)
    guarantee = _GUARANTEE + "; App. G quadratic bounds, last ρ proved by bisection (< ρ_high)"
    return MethodResult(RELU_METHOD, res.radius.double().cpu(), sec, True, guarantee, {"target": res.target.cpu()})


def _run_smoothing(b: _Batch, options: dict) -> MethodResult:
    opts = {"sigma": 0.25, "n0": 100, "n": 10_000, "alpha": 0.001, "binary": False, **options}
    smooth = Smooth(b.model, opts.pop("sigma"))
    binary = opts.pop("binary")
    run = smooth.certify_binary if binary else smooth.certify
    c, sec = _timed(lambda: run(b.x0, opts.pop("n0"), opts.pop("n"), opts.pop("alpha"), **opts), b.x0.device)
    ok = c.pred == b.label.cpu()
    flags = {"smoothed_pred": c.pred, "abstain": c.abstain, "p_lower": c.p_lower}
    if binary:
        flags["target"] = c.target
    return MethodResult("smoothing", torch.where(ok, c.radius, 0), sec, False,
                        f"{SMOOTHING_GUARANTEE} (σ = {c.sigma:g}, α = {c.alpha:g}"
                        f"{', binary y-vs-t' if binary else ''})", flags)


RadiusFn = Callable[[MLP, torch.Tensor, torch.Tensor, str, str], MethodResult]


def _crc_radii(model: MLP, images: torch.Tensor, labels: torch.Tensor, target: str, mode: str) -> MethodResult:
    """CRC (Algorithm 1 with the certification-grade curvature bounds, computed once) in batches; radius in the
    model's dtype. extras: ``certificate_success`` = fraction of correctly classified images whose certificate is
    exact (primal = dual: the closest boundary point was found; paper Table 2)."""
    bounds = curvature_bounds(model)  # all ordered pairs, computed once for every batch
    radii, exact, correct = [], [], []
    t0 = time.perf_counter()
    for s in range(0, images.shape[0], CERTIFY_BATCH):
        c = certify(model, images[s:s + CERTIFY_BATCH], labels[s:s + CERTIFY_BATCH],
                    targets=cast(TargetMode, target), mode=cast(SolverMode, mode), bounds=bounds,  # validated
                    refine="minimum")
        radii.append(torch.where(c.correct, c.radius, torch.zeros_like(c.radius)))
        exact.append(c.exact & c.correct)
        correct.append(c.correct)
    n_ok = max(1, int(torch.cat(correct).sum()))
    return MethodResult("crc", torch.cat(radii), time.perf_counter() - t0, True, _GUARANTEE,
                        extras={"certificate_success": float(torch.cat(exact).sum()) / n_ok})


def _compared_radii(name: str) -> RadiusFn:
    """The radii of one :func:`compare_certificates` method (no attack), in batches; ``mode`` is CRC's solver and
    is ignored. Smoothing runs with its defaults (σ = 0.25, n0 = 100, n = 10,000, α = 0.001)."""

    def radii(model: MLP, images: torch.Tensor, labels: torch.Tensor, target: str, mode: str) -> MethodResult:
        parts = [compare_certificates(model, images[s:s + CERTIFY_BATCH], labels[s:s + CERTIFY_BATCH],
                                      methods=(name,), targets=cast(Targets, target), attack=False).methods[name]
                 for s in range(0, images.shape[0], CERTIFY_BATCH)]  # target validated by the caller
        return MethodResult(name, torch.cat([p.radius for p in parts]).to(images.device),
                            sum(p.seconds for p in parts), parts[0].deterministic, parts[0].guarantee)

    return radii


@dataclass(frozen=True)
class Method:
    """One entry of THE method registry.

    check(model): raises CRCError (its own subtype) when the method cannot certify the model; run(batch, options):
    its part of :func:`compare_certificates`; radii(model, images (N, D), labels (N,), target, mode): its radii in
    batches for a sweep, 0 wherever the label is not certified, so that "certified at ρ" is ``radius ≥ ρ``;
    deterministic: its radius is a proof about the model itself (False for randomized smoothing, which certifies
    the smoothed classifier with probability 1 − α); targets: the target modes it certifies.
    """

    name: str
    check: Callable[[MLP], object]
    run: Callable[[_Batch, dict], MethodResult]
    radii: RadiusFn
    deterministic: bool = True
    targets: tuple[str, ...] = COMPARED_TARGETS


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("crc", require_curvature_model, _run_crc, _crc_radii, targets=TARGET_MODES),
    Method("crown", as_net64, _run_crown, _compared_radii("crown")),
    Method("lipschitz", as_net64, _run_lipschitz, _compared_radii("lipschitz")),
    Method("smoothing", lambda model: None, _run_smoothing, _compared_radii("smoothing"), deterministic=False),
    Method(RELU_METHOD, require_two_layer_relu, _run_relu, _compared_radii(RELU_METHOD)),
)}
ALL_METHODS: tuple[str, ...] = tuple(METHODS)


def attack_upper_bound(model: MLP, x0: torch.Tensor, pred: torch.Tensor, *, target: torch.Tensor | None = None,
                       start: torch.Tensor | float = 0.5, grow_steps: int = 6, bisect_steps: int = 8,
                       pgd_steps: int = 50, seed: int = 0) -> torch.Tensor:
    """Distance (B,) float64 of the closest point found whose float64 prediction differs from ``pred`` (inf if
    none): an upper bound on the true distance to the decision boundary, in R^D (no box constraint). With
    ``target`` (B,), the closest point found where z_target ≥ z_pred instead (the boundary a targeted certificate,
    e.g. the paper's runner-up one, is about).

    Untargeted L2 PGD (:func:`crc_core.attack.pgd_attack`) at ρ = start, doubled until a flip is found (at most
    ``grow_steps`` times), then ``bisect_steps`` bisections of ρ below the closest flip. Call it with gradients
    enabled (PGD differentiates the model).
    """
    net = as_net64(model)
    B = x0.shape[0]
    dev = x0.device
    upper = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    hi = torch.as_tensor(start, dtype=torch.float64, device=dev).reshape(-1).expand(B).clamp_min(1e-3).clone()
    lo = torch.zeros_like(hi)

    def attack(rows: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        tg = None if target is None else target[rows]
        xa, _ = pgd_attack(model, x0[rows], pred[rows], rho.to(x0.dtype), target=tg, steps=pgd_steps, clamp=False,
                           seed=seed)
        with torch.no_grad():
            z = net.forward(xa.double())
            if tg is None:
                flipped = z.argmax(1) != pred[rows]
            else:
                flipped = z.gather(1, tg[:, None])[:, 0] >= z.gather(1, pred[rows, None])[:, 0]
        d = torch.where(flipped, (xa.double() - x0[rows].double()).norm(dim=1), torch.inf)
        upper[rows] = torch.minimum(upper[rows], d)
        return flipped

    for _ in range(grow_steps):
        rows = torch.nonzero(~torch.isfinite(upper)).reshape(-1)
        if rows.numel() == 0:
            break
        attack(rows, hi[rows])
        hi[rows] = 2 * hi[rows]
    for _ in range(bisect_steps):
        rows = torch.nonzero(torch.isfinite(upper) & (upper > lo * (1 + 1e-3))).reshape(-1)
        if rows.numel() == 0:
            break
        mid = (lo[rows] + upper[rows]) / 2
        flipped = attack(rows, mid)
        lo[rows] = torch.where(flipped, lo[rows], mid)
    return upper


def compare_certificates(model: MLP, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                         methods: Sequence[str] = DEFAULT_METHODS, targets: Targets = "all", attack: bool = True,
                         crc_options: dict | None = None, crown_options: dict | None = None,
                         smoothing_options: dict | None = None, attack_options: dict | None = None,
                         relu_options: dict | None = None, skip_unsupported: bool = False,
                         time_each_image: bool = False) -> ComparisonResult:
    """Every method's radius for images x (B, D) (or (B, 1, 28, 28)) in [0, 1], beside the attack's upper bound.

    labels (B,): a misclassified image gets radius 0 from every method (without labels the prediction is
    certified). targets: "all" (the classifier's radius: min over every t ≠ y) or "runner-up" (the paper's).
    Options go to :func:`~crc_core.certify.certify`, :func:`~crc_core.baselines.crown.crown_radius`,
    :meth:`~crc_core.baselines.smoothing.Smooth.certify` (keys sigma, n0, n, alpha, binary, batch_size, seed;
    defaults σ = 0.25, n0 = 100, n = 10,000, α = 0.001), :func:`attack_upper_bound` and (``relu_options``)
    :func:`~crc_core.baselines.relu_quadratic.certify_relu`. A method that does not apply to the model (CRC on
    ReLU, "relu-quadratic" on anything but a 2-layer ReLU net) raises CRCError before any work, or with
    ``skip_unsupported`` is left out and its reason kept in ``refused``. ``time_each_image``: every method
    certifies each image alone, so ``time_<method>`` of :meth:`ComparisonResult.to_frame` is that image's own cost
    (slower; deterministic radii equal the batched ones up to float rounding; smoothing draws other noise, within its
    guarantee). The attack always runs batched and is not timed. Computation follows the model's device; results
    are on the CPU.
    """
    smoothing_options = dict(smoothing_options or {})
    methods, refused = _check_methods(model, methods, targets, smoothing_options, skip_unsupported)
    dev, dtype = model.layers[0].weight.device, model.layers[0].weight.dtype
    x0 = check_images(model, x, dtype=dtype, device=dev)
    with torch.no_grad():
        logits = model(x0)
    pred = logits.argmax(1)
    label = pred.clone() if labels is None else check_labels(labels, x0.shape[0], model.n_classes, dev)
    correct = pred == label
    T = choose_targets(logits, pred, targets)  # (B, C - 1) or the runner-up (B, 1)
    batch = _Batch(model, x0, label, pred, correct, T, targets)
    options = {"crc": crc_options, "crown": crown_options, "smoothing": smoothing_options, RELU_METHOD: relu_options}
    out = {name: _run_each_image(name, batch, options.get(name) or {}) if time_each_image
           else METHODS[name].run(batch, options.get(name) or {}) for name in methods}
    sound = [out[m].radius for m in methods if out[m].deterministic]
    best = torch.stack(sound).max(0).values if sound else torch.zeros(x0.shape[0], dtype=torch.float64)
    upper = torch.full_like(best, float("inf"))
    if attack:
        opts = {"start": (1.5 * best).clamp_min(0.1).to(dev), "target": T[:, 0] if targets == "runner-up" else None,
                **(attack_options or {})}
        upper = attack_upper_bound(model, x0, pred, **opts).cpu()
        if "crc" in out:
            upper = torch.minimum(upper, out["crc"].flags["upper"])
    upper = torch.where(correct.cpu(), upper, torch.zeros_like(upper))
    violation = torch.stack(sound).gt(upper).any(0) if sound else torch.zeros_like(best, dtype=torch.bool)
    return ComparisonResult(pred.cpu(), label.cpu(), correct.cpu(), out, upper, best, violation, targets, refused,
                            time_each_image)
