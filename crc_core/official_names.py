"""Official file names of the paper's checkpoints: ``<dataset>_<depth>_<activation>[_<NORM>_<eps>][_<REG>_<gamma>]``.

A state dict does not store its activation or dataset; an official name does (:func:`parse_official_name`), and
says how the model was trained (:func:`training_from_name`). Used by the importer (crc_core/importers.py).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .data import normalize_dataset_name

__all__ = ["NameHints", "model_stem", "normalize_dataset", "parse_official_name", "training_from_name"]

NAMED_DATASETS = ("mnist", "fashion-mnist", "cifar10")  # datasets an official file name may start with
MODEL_EXTENSIONS = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".tar", ".safetensors")


@dataclass(frozen=True)
class NameHints:
    """Fields of an official file name ``<dataset>_<depth>_<activation>[_<NORM>_<eps>][_<REG>_<gamma>]``.

    ``mnist_2_softplus_L2_1.58_EIGEN_0.005``: MNIST, L = 2 linear layers, softplus; trained with CRT against l2
    attacks of radius ε = 1.58 (the paper's ρ of Tables 3/4, ``attack_norm``/``attack_eps``); curvature (Hessian
    eigenvalue bound K) regularizer with γ = 0.005 (eq. 7, Table 16: ``regularizer``/``gamma``). The depth counts
    linear layers as the paper's "L x [1024]" does. This reading of the last two pairs follows the paper's
    notation; any other LABEL_value pair is kept in ``extra``.
    """

    stem: str
    dataset: str
    depth: int
    activation: str
    attack_norm: str | None = None
    attack_eps: float | None = None
    regularizer: str | None = None
    gamma: float | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra"] = [list(p) for p in self.extra]
        return d


_NAME_RE = re.compile(r"^(?P<dataset>[a-z0-9_-]+?)_(?P<depth>\d+)_(?P<activation>[a-z]+)(?:_(?P<rest>.+))?$",
                      re.IGNORECASE)


def model_stem(name: str) -> str:
    """The file name without a model extension (not Path.stem: ``..._0.005`` must keep its ``.005``)."""
    base = Path(name).name
    for ext in MODEL_EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def normalize_dataset(name: str) -> str:
    """The dataset a model is for: :func:`crc_core.data.normalize_dataset_name` ('MNIST' -> 'mnist', 'fmnist' ->
    'fashion-mnist'), with 'embedded' (the shipped Fashion-MNIST subset) -> 'fashion-mnist'."""
    key = normalize_dataset_name(name)
    return "fashion-mnist" if key == "embedded" else key


def parse_official_name(name: str | os.PathLike[str]) -> NameHints | None:
    """Parse an official file name (``fashion-mnist_3_sigmoid_L2_1.58_EIGEN_0.01``); None if it is not one."""
    stem = model_stem(str(name))
    m = _NAME_RE.match(stem)
    if m is None or int(m["depth"]) < 1 or normalize_dataset(m["dataset"]) not in NAMED_DATASETS:
        return None
    hints: dict[str, Any] = {"stem": stem, "dataset": normalize_dataset(m["dataset"]), "depth": int(m["depth"]),
                             "activation": m["activation"].lower()}
    tokens = m["rest"].split("_") if m["rest"] else []
    extra: list[tuple[str, str]] = []
    for label, value in itertools.zip_longest(tokens[::2], tokens[1::2], fillvalue=""):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            extra.append((label, value))
        elif re.fullmatch(r"L(\d+|INF)", label, re.IGNORECASE) and "attack_norm" not in hints:
            hints.update(attack_norm=label.upper(), attack_eps=number)
        elif label.upper() in ("EIGEN", "CURVATURE", "CRT") and "regularizer" not in hints:
            hints.update(regularizer=label.upper(), gamma=number)
        else:
            extra.append((label, value))
    return NameHints(**hints, extra=tuple(extra))



def training_from_name(hints: NameHints | None) -> tuple[str | None, float | None, float | None]:
    """(training kind, γ, CRT ε) an official file name states: ``..._L2_<eps>_EIGEN_<gamma>`` -> ("crt", gamma, eps)
    (curvature-regularized training against l2 attacks of radius eps, the paper's CRT); a regularizer alone ->
    ("gamma", gamma, None); anything else -> (None, None, None): unknown, never guessed as standard training."""
    if hints is None or hints.gamma is None:
        return None, None, None
    if hints.attack_norm == "L2" and hints.attack_eps is not None:
        return "crt", hints.gamma, hints.attack_eps
    return "gamma", hints.gamma, None

