"""Sweep configurations: a declarative TOML grid, validated and expanded into trials before anything runs.

A sweep file has five sections (every key is checked; an unknown one is an error)::

    name = "table9"                        # optional; default: the file's stem
    description = "..."                    # optional, free text

    [train]                                # defaults for every trial: any TrainConfig field except device
    dataset = "fashion-mnist"
    epochs = 30
    batch_size = 64
    lr = 1e-3

    [grid]                                 # the Cartesian product of these lists; or several [[grid]] tables,
    widths = ["2x1024", "3x1024"]          # whose products are joined (keys override [train]); a scalar is a
                                           # one-value list; widths lists specs: 1024, "1024,1024", [1024, 1024]
    activation = ["softplus"]
    kind = ["crt"]
    gamma = [0.01]
    crt_eps = [0.5]
    seed = [0]

    [evaluate]                             # what each trial measures after training
    rho = [0.5, 1.58]
    targets = ["runner-up", "all"]
    methods = ["crc"]
    images = 1000

    [resources]                            # per trial; does not change results, so not part of the hash
    cpus_per_trial = 1
    gpus_per_trial = "auto"                # 1 when the Ray cluster has GPUs, else 0; fractions allowed

Every trial's :class:`~crc_core.train.TrainConfig` is built (and so validated) by :func:`load_sweep_config`: a
width 0, γ < 0 or an unknown training kind fails there, with the grid and values that produced it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..certify import SOLVER_MODES, TARGET_MODES
from ..compare import METHODS
from ..errors import CRCError
from ..safe_load import read_file
from ..train_config import TrainConfig, parse_widths
from ..training_kinds import KINDS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the standard library's TOML reader arrived in 3.11
    tomllib = None  # type: ignore[assignment]

__all__ = [
    "EvalSpec", "Resources", "SweepConfig", "Trial", "load_sweep_config", "parse_sweep_config",
]

TOP_KEYS = ("name", "description", "train", "grid", "evaluate", "resources")
# Fields a sweep may set per trial: every TrainConfig field but the device, which Ray's GPU assignment decides.
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name != "device")
FLOAT_KEYS = frozenset(f.name for f in fields(TrainConfig) if f.type in (float, "float"))
# Sweep defaults that differ from TrainConfig's: the sweep certifies after training, so the per-epoch
# certification sample is off (test accuracy is still logged every epoch).
TRAIN_DEFAULTS: dict[str, Any] = {"eval_samples": 0, "log_every": 50}

# Every bound a sweep file is checked against, in one place, before any work (docs/reliability.md says why): a
# shared config is input like any other; these keep a typo (or a hostile file) from costing hours or gigabytes.
LIMITS: dict[str, int | float] = {
    "file_bytes": 1 << 20,       # a sweep file is a few hundred bytes; 1 MiB is far past any real grid
    "trials": 10_000,            # trials over all grids, counted before any is built (the paper's tables: < 100)
    "axis_values": 10_000,       # values listed for one grid key
    "depth": 16,                 # hidden layers of one network (the paper: up to 4 layers)
    "width": 16_384,             # units of one hidden layer (the paper: 1024)
    "epochs": 10_000,
    "images": 70_000,            # images certified per trial (all of MNIST)
    "rho": 100.0,                # an L2 radius; a 28x28 image in [0, 1] has diameter 28
    "rho_values": 100,
    "seed": 2**32 - 1,
    "cpus_per_trial": 1024,
    "gpus_per_trial": 64,
    "max_concurrent": 10_000,
    "whole": 10**9,              # any other whole number (steps, batch size, limits)
    "number": 1e9,               # any other number's magnitude (γ, ε, learning rate)
}


@dataclass(frozen=True)
class EvalSpec:
    """What each trial measures after training (the ``[evaluate]`` table).

    rho: radii ρ > 0 of the certified accuracies; targets: certificate targets (crc_core.certify's modes);
    methods: certificate methods (keys of :data:`crc_core.compare.METHODS`); images: size of the fixed
    test sample that is certified (the same images for every trial); mode: CRC's solver; attacks: also run PGD and
    Algorithm 2 at every ρ (empirical robust accuracy, attack success rate); curvature: also K_lb / K_ub
    (App. H.1) over (prediction, runner-up) pairs with at least ``curvature_min_images`` sample images.
    """

    rho: tuple[float, ...] = (0.5,)
    targets: tuple[str, ...] = ("runner-up", "all")
    methods: tuple[str, ...] = ("crc",)
    images: int = 1000
    mode: str = "fast"
    attacks: bool = False
    pgd_steps: int = 50
    curvature: bool = False
    curvature_min_images: int = 10


@dataclass(frozen=True)
class Resources:
    """Ray resources per trial (the ``[resources]`` table). gpus_per_trial None: 1 when the cluster has GPUs."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True)
class Trial:
    """One point of the grid: ``trial_id`` (readable prefix + hash of the config), its TrainConfig, and the
    grid values that define it (``axes``) for labels."""

    trial_id: str
    config: TrainConfig
    axes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: its trials in grid order, the evaluation, the resources, and ``config_hash`` (SHA-256
    of what determines the results: every trial's settings and the evaluation; not name, text or resources)."""

    name: str
    description: str
    trials: tuple[Trial, ...]
    evaluate: EvalSpec
    resources: Resources
    config_hash: str
    text: str = ""
    source: str = ""


# ---- Small validators (each raises CRCError naming the key) --------------------------------------------------------
def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise CRCError(f"Unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {where}; "
                       f"allowed: {', '.join(allowed)}.")


def _table(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise CRCError(f"[{key}] must be a table, got {type(value).__name__}.")
    return dict(value)


def _shown(value: Any) -> str:
    """A value for an error message, at most 60 characters (a 400-digit number is not repeated in full)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text)} characters)"


def _number(value: Any, where: str, *, positive: bool = False, minimum: float | None = None,
            maximum: float = LIMITS["number"]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            isinstance(value, float) or abs(value) <= 10**300) or not math.isfinite(value):
        raise CRCError(f"{where} must be a finite number, got {_shown(value)}.")
    if positive and value <= 0:
        raise CRCError(f"{where} must be > 0, got {_shown(value)}.")
    if minimum is not None and value < minimum:
        raise CRCError(f"{where} must be ≥ {minimum:g}, got {_shown(value)}.")
    if abs(value) > maximum:
        raise CRCError(f"{where} must be at most {maximum:g} (the sweep limit), got {_shown(value)}.")
    return float(value)


def _whole(value: Any, where: str, minimum: int = 1, maximum: int | float = LIMITS["whole"]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CRCError(f"{where} must be a whole number ≥ {minimum}, got {_shown(value)}.")
    if value > maximum:
        raise CRCError(f"{where} must be at most {int(maximum):,} (the sweep limit), got {_shown(value)}.")
    return value


def _string_list(value: Any, where: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise CRCError(f"{where} is empty: list at least one of {', '.join(choices)}.")
    for v in items:
        if v not in choices:
            raise CRCError(f"{where}: unknown value {v!r}; choose from {', '.join(choices)}.")
    return tuple(dict.fromkeys(items))


def _one_of(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise CRCError(f"{where} must be one of {', '.join(choices)}, got {value!r}.")
    return value


# ---- Sections ------------------------------------------------------------------------------------------------------
def _normalise_train_value(key: str, value: Any, where: str) -> Any:
    """One [train] / grid value as TrainConfig wants it: widths parsed, TOML integers made floats where
    TrainConfig has a float (so γ = 0 and γ = 0.0 are the same trial)."""
    if key == "widths":
        return _widths(value, where)
    if isinstance(value, (list, dict)):
        raise CRCError(f"{where}: {key} must be a single value here, got {_shown(value)}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value  # strings and flags: TrainConfig checks them
    if isinstance(value, int) and key not in FLOAT_KEYS:
        top = LIMITS["epochs"] if key == "epochs" else LIMITS["seed"] if key == "seed" else LIMITS["whole"]
        return _whole(value, where, minimum=-int(LIMITS["whole"]), maximum=top)
    return _number(value, where)


def _widths(value: Any, where: str) -> tuple[int, ...]:
    """A widths spec ("2x1024", "1024,1024", [1024, 1024], 1024) within the depth and width limits, checked
    before it is expanded (``"100000000x64"`` is refused from its text, not built)."""
    text = str(value).lower() if isinstance(value, str) else ""
    if "x" in text:
        depth = text.replace("[", "").split("x", 1)[0].strip()
        if not depth.isdigit() or len(depth) > 4 or int(depth) - 1 > LIMITS["depth"]:
            raise CRCError(f"{where}: widths {_shown(value)} must have at most {LIMITS['depth']} hidden layers "
                           "(the sweep limit).")
    if (isinstance(value, list) and len(value) > LIMITS["depth"]) or text.count(",") >= LIMITS["depth"]:
        raise CRCError(f"{where}: widths {_shown(value)} has more than {LIMITS['depth']} hidden layers (the sweep "
                       "limit).")
    try:
        if isinstance(value, bool) or not isinstance(value, (str, list, int)):
            raise TypeError
        widths = (value,) if isinstance(value, int) else parse_widths(value)
    except CRCError as exc:
        raise CRCError(f"{where}: {exc}") from None
    except (TypeError, ValueError):
        raise CRCError(f"{where}: widths must be like \"2x1024\", \"1024,1024\" or [1024, 1024], got "
                       f"{_shown(value)}.") from None
    too_wide = [w for w in widths if isinstance(w, int) and w > LIMITS["width"]]  # w < 1: TrainConfig says so
    if too_wide:
        raise CRCError(f"{where}: a width of {_shown(too_wide[0])} is over the sweep limit of {LIMITS['width']:,}.")
    return widths


def _parse_grids(doc: Mapping[str, Any]) -> list[dict[str, list[Any]]]:
    """[grid] or [[grid]] -> list of {key: non-empty list of values}; a scalar is a one-value axis."""
    raw = doc.get("grid", {})
    grids = raw if isinstance(raw, list) else [raw]
    names = [f"[[grid]] #{i + 1}" for i in range(len(grids))] if isinstance(raw, list) else ["[grid]"]
    out = []
    for where, g in zip(names, grids, strict=True):
        if not isinstance(g, Mapping):
            raise CRCError(f"{where} must be a table of lists.")
        _check_keys(g, TRAIN_KEYS, where)
        axes: dict[str, list[Any]] = {}
        for key, values in g.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise CRCError(f"{where}: {key} = [] leaves the grid empty; give at least one value.")
            if len(values) > LIMITS["axis_values"]:
                raise CRCError(f"{where}: {key} lists {len(values):,} values, over the sweep limit of "
                               f"{LIMITS['axis_values']:,}.")
            axes[key] = values
        out.append(axes)
    n = sum(math.prod(len(v) for v in axes.values()) for axes in out)  # counted, never expanded
    if n > LIMITS["trials"]:
        raise CRCError(f"the grid has {n:,} trials, over the sweep limit of {LIMITS['trials']:,}; split it into "
                       "several sweeps.")
    return [{k: [_normalise_train_value(k, v, f"{where} {k}") for v in vs] for k, vs in axes.items()}
            for where, axes in zip(names, out, strict=True)]


def _parse_evaluate(table: dict[str, Any]) -> EvalSpec:
    _check_keys(table, tuple(f.name for f in fields(EvalSpec)), "[evaluate]")
    d = EvalSpec()
    rho = table.get("rho", list(d.rho))
    rho = rho if isinstance(rho, list) else [rho]
    if not rho:
        raise CRCError("[evaluate] rho is empty: give at least one radius, e.g. rho = [0.5].")
    if len(rho) > LIMITS["rho_values"]:
        raise CRCError(f"[evaluate] rho lists {len(rho):,} radii, over the sweep limit of {LIMITS['rho_values']}.")
    methods = _string_list(table.get("methods", list(d.methods)), "[evaluate] methods", tuple(METHODS))
    targets = _string_list(table.get("targets", list(d.targets)), "[evaluate] targets", TARGET_MODES)
    for m in methods:
        if not set(targets) & set(METHODS[m].targets):
            raise CRCError(f"[evaluate] method {m!r} certifies targets {', '.join(METHODS[m].targets)} only; "
                           f"none of {', '.join(targets)}.")
    spec = EvalSpec(
        rho=tuple(sorted({_number(r, "[evaluate] rho", positive=True, maximum=LIMITS["rho"]) for r in rho})),
        targets=targets, methods=methods,
        images=_whole(table.get("images", d.images), "[evaluate] images", maximum=LIMITS["images"]),
        mode=_one_of(table.get("mode", d.mode), "[evaluate] mode", SOLVER_MODES),
        attacks=table.get("attacks", d.attacks), pgd_steps=_whole(table.get("pgd_steps", d.pgd_steps),
                                                                   "[evaluate] pgd_steps"),
        curvature=table.get("curvature", d.curvature),
        curvature_min_images=_whole(table.get("curvature_min_images", d.curvature_min_images),
                                    "[evaluate] curvature_min_images"),
    )
    for key in ("attacks", "curvature"):
        if not isinstance(getattr(spec, key), bool):
            raise CRCError(f"[evaluate] {key} must be true or false, got {getattr(spec, key)!r}.")
    return spec


def _parse_resources(table: dict[str, Any]) -> Resources:
    _check_keys(table, tuple(f.name for f in fields(Resources)), "[resources]")
    cpus = _number(table.get("cpus_per_trial", 1), "[resources] cpus_per_trial", positive=True,
                   maximum=LIMITS["cpus_per_trial"])
    gpus = table.get("gpus_per_trial", "auto")
    gpus = None if gpus == "auto" else _number(gpus, "[resources] gpus_per_trial (a number or \"auto\")", minimum=0,
                                               maximum=LIMITS["gpus_per_trial"])
    conc = table.get("max_concurrent")
    conc = None if conc is None else _whole(conc, "[resources] max_concurrent", maximum=LIMITS["max_concurrent"])
    return Resources(cpus, gpus, conc)


# ---- Expansion and identity ----------------------------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# TrainConfig's fields when sweeps began: always part of a trial's identity. A field added to TrainConfig later
# counts only when it differs from its default, so adding a training option keeps every existing sweep folder (and
# trial id) valid and resumable.
HASHED_ALWAYS = frozenset({
    "dataset", "widths", "activation", "kind", "gamma", "crt_eps", "epochs", "lr", "batch_size", "seed",
    "attack_outer", "attack_inner", "eval_rho", "eval_samples", "eval_all_targets", "eval_mode", "eval_every",
    "log_every", "train_limit", "test_limit", "max_steps"})


def trial_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that identify a trial: the TrainConfig as a dict, without the device and the data folder
    (where the data lives does not change the experiment: fixing a wrong data_root keeps the sweep resumable)
    and without fields added since :data:`HASHED_ALWAYS` while they keep their default."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    d = config.to_dict()
    return {k: v for k, v in d.items()
            if k not in ("device", "data_root") and (k in HASHED_ALWAYS or v != defaults.get(k))}


def _gamma_in_id(kind: str | None) -> bool:
    """Whether a kind's γ is kept as given and named in trial ids: for curvature and adversarial kinds (PGD and TRADES
    ignore γ but their ids have always named it, and sweeps resume by id); not for the others (standard), whose γ is
    set to 0 so that kind x γ grids give one trial."""
    k = KINDS.get(kind) if isinstance(kind, str) else None
    return k is None or k.curvature or k.adversarial


def _slug(config: TrainConfig) -> str:
    w = config.widths
    arch = f"{len(w) + 1}x{w[0]}" if len(set(w)) == 1 else f"{len(w) + 1}x{'-'.join(map(str, w))}"
    parts = [config.dataset, arch, config.activation, config.kind]
    if _gamma_in_id(config.kind):
        parts.append(f"g{config.gamma:g}")
    if KINDS[config.kind].crt_attack:
        parts.append(f"e{config.crt_eps:g}")
    parts.append(f"s{config.seed}")
    return "-".join(parts)


def _expand(defaults: dict[str, Any], grids: list[dict[str, list[Any]]]) -> list[Trial]:
    trials: dict[str, Trial] = {}
    for gi, axes in enumerate(grids):
        keys = list(axes)
        for values in itertools.product(*(axes[k] for k in keys)):
            point = dict(zip(keys, values))
            settings = {**TRAIN_DEFAULTS, **defaults, **point, "device": "cpu"}
            if not _gamma_in_id(settings.get("kind", TrainConfig.kind)):
                settings["gamma"] = 0.0
            try:
                config = TrainConfig(**settings)
            except (CRCError, TypeError) as exc:
                shown = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "[train] alone"
                raise CRCError(f"grid #{gi + 1} ({shown}): {exc}") from None
            trial_id = f"{_slug(config)}-{_digest(trial_settings(config))[:8]}"
            trials.setdefault(trial_id, Trial(trial_id, config, point))  # a point listed twice runs once
    if not trials:
        raise CRCError("The grid is empty: add a [grid] table with at least one value per key.")
    return list(trials.values())


def parse_sweep_config(doc: Mapping[str, Any], *, name: str = "sweep", text: str = "", source: str = "") -> SweepConfig:
    """Validate a parsed TOML document and expand it into trials; raise :class:`CRCError` on any problem."""
    _check_keys(doc, TOP_KEYS, "the sweep file")
    for key in ("name", "description"):
        if key in doc and not isinstance(doc[key], str):
            raise CRCError(f"{key} must be a string, got {doc[key]!r}.")
    train = _table(doc, "train")
    _check_keys(train, TRAIN_KEYS, "[train]")
    if "grid" not in doc:
        raise CRCError("The sweep file has no [grid]: add one, e.g. [grid] seed = [0].")
    defaults = {k: _normalise_train_value(k, v, f"[train] {k}") for k, v in train.items()}
    trials = _expand(defaults, _parse_grids(doc))
    spec = _parse_evaluate(_table(doc, "evaluate"))
    resources = _parse_resources(_table(doc, "resources"))
    config_hash = _digest({"trials": [trial_settings(t.config) for t in trials], "evaluate": asdict(spec)})
    return SweepConfig(str(doc.get("name", name)), str(doc.get("description", "")), tuple(trials), spec, resources,
                       config_hash, text, source)


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML file (see the module docstring for the format)."""
    path = Path(path)
    if tomllib is None:
        raise CRCError("Reading sweep files needs Python ≥ 3.11 (tomllib).")
    data = read_file(path, int(LIMITS["file_bytes"]), what="sweep config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CRCError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): not a sweep file.") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CRCError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise CRCError(f"{path}: its values nest too deeply to be a sweep file.") from None
    try:
        return parse_sweep_config(doc, name=path.stem, text=text, source=str(path))
    except CRCError as exc:
        raise CRCError(f"{path}: {exc}") from None
