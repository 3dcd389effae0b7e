"""Certificates compared, for the Certify and Compare pages: computed and cached here (the pages only lay it out).

- :func:`image_methods`: every method's radius for the picked image, beside the attack's upper bound (Certify).
- :func:`main_certificate_note` / :func:`relu_certificate`: the ReLU routing: a 2-layer ReLU model's certificate
  is App. G's (:func:`crc_core.baselines.relu_quadratic.certify_relu`); for a deeper one, why CRC does not apply.
- :class:`TestSetJob`: certified accuracy against ρ per method on N test images, in a worker thread (chunks, a stop
  flag, the heavy-job lock), so the page can show progress, a stop button and the table so far.
- :func:`models_table`: the paper's Table 5b view, mean certificate per method across the picked models.

Randomized smoothing certifies a *different* classifier (the smoothed one) with probability ≥ 1 − α; every view
model keeps that apart from the deterministic radii.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from app_lib import catalogue, heavy_jobs, state, ui
from crc_core.baselines.smoothing import SMOOTHING_GUARANTEE
from crc_core.compare import ALL_METHODS, RELU_METHOD, applicable_methods, compare_certificates, refusal
from crc_core.models import MLP

SMOOTHING = {"sigma": 0.25, "n0": 100, "n": 10_000, "alpha": 0.001}  # Cohen et al.'s defaults (docs/comparison.md)
CHUNK = 8  # test images per compare_certificates call in the test-set job: a stop takes effect within one chunk
EACH_IMAGE_HELP = ("On: every method certifies each image alone, so the table's time columns (time_…_s_this_image) "
                   "are that image's own cost, as the paper's time per image; slower. Off: images run in chunks of "
                   f"{CHUNK} and a time column is the chunk's mean per image (…_mean_of_chunk). The deterministic "
                   "radii are the same either way (up to float rounding); smoothing draws other noise.")
LABELS = {"crc": "CRC (curvature)", "crown": "CROWN", "lipschitz": "first-order (Lipschitz)",
          "smoothing": "randomized smoothing", RELU_METHOD: "App. G quadratic (ReLU)"}
SMOOTHING_NOTE = (f"Randomized smoothing: a {SMOOTHING_GUARANTEE.replace('σ', 'σ = ' + str(SMOOTHING['sigma']))}, "
                  f"1 − α = {1 - SMOOTHING['alpha']:g}. It is not a radius of this model.")
SMOOTHING_CAP = SMOOTHING["sigma"] * NormalDist().inv_cdf(SMOOTHING["alpha"] ** (1 / SMOOTHING["n"]))
SMOOTHING_NOTE += (f" Its radius can never exceed {SMOOTHING_CAP:.3f} here: that is σ·Φ⁻¹(α^(1/n)), what it gives "
                   f"when all n = {SMOOTHING['n']:,} noisy samples agree; so a confidently classified image shows "
                   "exactly this cap.")
# The paper's Table 5b (MNIST, mean certificate over correctly classified images), quoted for reference
PAPER_TABLE_5B = pd.DataFrame(
    [("2×[1024] sigmoid", "standard", 0.28395, 0.48500), ("2×[1024] sigmoid", "γ = 0.01", 0.32548, 0.84719),
     ("2×[1024] sigmoid", "CRT, 0.01", 0.43061, 1.54673), ("3×[1024] sigmoid", "standard", 0.24644, 0.06874),
     ("3×[1024] sigmoid", "γ = 0.01", 0.39799, 1.07842), ("3×[1024] sigmoid", "CRT, 0.01", 0.39799, 1.07842),
     ("4×[1024] sigmoid", "standard", 0.19501, 0.00454), ("4×[1024] sigmoid", "γ = 0.01", 0.40620, 1.05323),
     ("4×[1024] sigmoid", "CRT, 0.01", 0.40327, 1.06208)],
    columns=["network", "training", "CROWN", "CRC"])
PAPER_TABLE_5B["note"] = ["", "", "", "", "as printed (= next row)",
                          "as printed (= row above)", "", "", ""]


def label(method: str) -> str:
    return LABELS.get(method, method)


def short_model_label(text: str) -> str:
    """A picker label "name · architecture · training · acc (source)" -> "name<br>architecture" (chart ticks)."""
    parts = text.split(" · ")
    return "<br>".join(parts[:2])


# ------------------------------------------------------------------------------------------------ one image
@dataclass(frozen=True)
class ImageMethods:
    """One image: radius per method that applies (0 when misclassified), the attack's upper bound (inf if no
    change was found; 0 when misclassified), seconds per method, refused method -> reason, correct, the
    prediction, and the arg-min class per method that reports one (-1 when misclassified)."""

    radii: dict[str, float]
    seconds: dict[str, float]
    attack_upper: float
    refused: dict[str, str]
    correct: bool
    pred: int = -1
    targets: dict[str, int] = field(default_factory=dict)

    @property
    def deterministic(self) -> dict[str, float]:
        return {m: r for m, r in self.radii.items() if m != "smoothing"}

    @property
    def smoothing(self) -> float | None:
        return self.radii.get("smoothing")


@st.cache_resource(show_spinner="Running CROWN, the first-order bound, smoothing and an attack…", max_entries=64)
def _image_methods(key: str, image_key: str, device: str, _model: MLP, _x: torch.Tensor, label: int | None
                   ) -> ImageMethods:
    labels = None if label is None else torch.tensor([label])
    res = compare_certificates(_model, _x[None].to(device), labels, methods=ALL_METHODS, skip_unsupported=True,
                               smoothing_options=SMOOTHING)
    return ImageMethods({m: float(r.radius[0]) for m, r in res.methods.items()},
                        {m: r.seconds for m, r in res.methods.items()}, float(res.attack_upper[0]),
                        dict(res.refused), bool(res.correct[0]), int(res.pred[0]),
                        {m: int(r.flags["target"][0]) for m, r in res.methods.items() if "target" in r.flags})


def image_methods(ctx: catalogue.Ctx, picked: state.Picked) -> ImageMethods:
    """Every method that applies to the model, on the picked image (all targets), beside the attack's upper bound."""
    return _image_methods(ctx.key, picked.key, str(ctx.device), ctx.model, picked.x, picked.label)


def caption(im: ImageMethods) -> str:
    """What the chart shows, in a sentence or two (and why a method is missing)."""
    det = im.deterministic
    best = max(det, key=det.get) if det else None
    text = ("Deterministic radii are proofs about this model: the true distance to the decision boundary lies "
            f"between the best of them ({label(best)}, {det[best]:.4f}) and the upper end {im.attack_upper:.4f}, the "
            "distance of the closest point the attack found where another class wins (on the Certify page of a smooth "
            "model: of x_b, the closest over the certifier and the attack, the same number as in section 2). "
            if best is not None and np.isfinite(im.attack_upper) else "")
    if im.smoothing is not None:
        text += SMOOTHING_NOTE + " "
    text += " ".join(f"{label(m)} does not apply: {why}" for m, why in im.refused.items() if m != RELU_METHOD)
    return text.strip()


# ------------------------------------------------------------------------------------------------ ReLU routing
def main_certificate_note(model: MLP) -> str | None:
    """None when CRC certifies ``model``; else why not and what the Certify page shows instead (one paragraph)."""
    why = refusal(model, "crc")
    if why is None:
        return None
    if refusal(model, RELU_METHOD) is None:
        return f"{why} The certificate below is App. G's quadratic bound for 2-layer ReLU networks."
    return f"{why} Only the other certificates below (CROWN, first-order, smoothing) apply."


@dataclass(frozen=True)
class ReluMain:
    """App. G's certificate of one image: radius (0 when misclassified), target (its arg-min class, −1), pred."""

    radius: float
    target: int
    pred: int
    correct: bool


def relu_certificate(ctx: catalogue.Ctx, picked: state.Picked) -> ReluMain | None:
    """The main certificate of a 2-layer ReLU model (App. G, all targets); None for any other model. Taken from
    :func:`image_methods` (App. G is one of its methods), so the page runs App. G once per image."""
    if refusal(ctx.model, RELU_METHOD) is not None:
        return None
    im = image_methods(ctx, picked)
    return ReluMain(im.radii[RELU_METHOD], im.targets.get(RELU_METHOD, -1), im.pred, im.correct)


# ------------------------------------------------------------------------------------------------ test set
@dataclass
class TestSetJob:
    """Certified radii per method on ``images`` (N, 784) with ``labels`` (N,), CHUNK images at a time in a worker
    thread holding the heavy-job lock; with ``each_image`` every image is certified (and timed) alone. ``frames``
    grows as chunks finish; ``stop()`` ends it after the current chunk, and so does its session staying gone
    (``alive()`` False) for ``orphan_after`` seconds. No Streamlit inside: the page polls :meth:`frame` and
    :attr:`done`."""

    model: MLP
    images: torch.Tensor
    labels: torch.Tensor
    methods: tuple[str, ...]
    lock: threading.Lock
    each_image: bool = False
    frames: list[pd.DataFrame] = field(default_factory=list)  # given: chunks done before (the job goes on after them)
    error: str | None = None
    status: str = "waiting"
    alive: Callable[[], bool] = lambda: True
    orphan_after: float = 120.0
    _gone_since: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TestSetJob:
        self._thread = threading.Thread(target=self._work, daemon=True, name="crc-compare")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def done(self) -> bool:
        return self.status in ("done", "stopped", "failed")

    @property
    def n_done(self) -> int:
        return sum(len(f) for f in self.frames)

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done

    def frame(self) -> pd.DataFrame:
        """The per-image table so far: index, label, pred, correct, radius_<m>, time_<m>, attack_upper, …"""
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()

    def _stopping(self) -> bool:
        """A stop was asked for, or the session has been gone for ``orphan_after`` seconds."""
        if self.alive():
            self._gone_since = None
        elif self._gone_since is None:
            self._gone_since = time.monotonic()
        return self._stop.is_set() or (self._gone_since is not None
                                       and time.monotonic() - self._gone_since > self.orphan_after)

    def _work(self) -> None:
        while not self.lock.acquire(timeout=0.2):  # another heavy job (training, a survey) has the machine
            if self._stopping():
                self.status = "stopped"
                return
        try:
            self.status = "running"
            dev = self.model.layers[0].weight.device
            for s in range(self.n_done, self.images.shape[0], CHUNK):
                if self._stopping():
                    self.status = "stopped"
                    return
                res = compare_certificates(self.model, self.images[s:s + CHUNK].to(dev), self.labels[s:s + CHUNK],
                                           methods=self.methods, smoothing_options=SMOOTHING,
                                           time_each_image=self.each_image)
                df = res.to_frame()
                df.insert(0, "index", range(s, s + len(df)))
                self.frames.append(df)
            self.status = "done"
        except Exception as exc:  # shown on the page; the lock is released below
            self.error, self.status = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            self.lock.release()


JOB_KEY = "crc_compare_job"


def current_job(ctx: catalogue.Ctx) -> TestSetJob | None:
    """This session's test-set job for the current model (None if none or it was for another model)."""
    job = st.session_state.get(JOB_KEY)
    return job[1] if job is not None and job[0] == (ctx.key, ctx.dataset) else None


def reusable_frames(old: TestSetJob | None, methods: tuple[str, ...], n_images: int, each_image: bool = False
                    ) -> list[pd.DataFrame]:
    """The chunks of a previous job (same model and dataset) that a new one with ``methods`` on the first
    ``n_images`` images can keep: whole chunks, same methods and timing, within the new N (N = 30 -> 100 certifies
    only the 70 new images)."""
    if old is None or tuple(old.methods) != tuple(methods) or old.each_image != each_image:
        return []
    return [f for f in list(old.frames) if int(f["index"].max()) < n_images and len(f) == CHUNK]


def start_job(ctx: catalogue.Ctx, n_images: int, methods: tuple[str, ...], each_image: bool = False) -> TestSetJob:
    """Start certifying the first ``n_images`` test images with ``methods``, each image alone and timed on its own
    when ``each_image`` (stops this session's previous job; the chunks it finished are kept when they still
    apply)."""
    old = st.session_state.get(JOB_KEY)
    if old is not None:
        old[1].stop()
        old[1].wait(60)
    kept = reusable_frames(current_job(ctx), methods, n_images, each_image)
    ds = ctx.test_set()
    job = TestSetJob(ctx.model, ds.images[:n_images].reshape(-1, 784), ds.labels[:n_images], methods,
                     heavy_jobs.heavy_lock(), each_image, frames=kept, alive=heavy_jobs.session_alive(),
                     orphan_after=heavy_jobs.orphan_after()).start()
    st.session_state[JOB_KEY] = ((ctx.key, ctx.dataset), job)
    return job


def csv_frame(frame: pd.DataFrame, class_names: list[str], each_image: bool = False) -> pd.DataFrame:
    """The per-image table as shown and downloaded: class names beside the class numbers, and the time columns
    named for what they are: with ``each_image`` the seconds this image took alone (``time_<m>_s_this_image``),
    else a method's mean seconds per image over the chunk of CHUNK images the row was certified in."""
    out = frame.copy()
    for col in ("label", "pred"):
        if col in out:
            out.insert(out.columns.get_loc(col) + 1, f"{col}_name", [class_names[int(c)] for c in out[col]])
    suffix = "_s_this_image" if each_image else "_s_per_image_mean_of_chunk"
    return out.rename(columns={c: f"{c}{suffix}" for c in out.columns if c.startswith("time_")})


def accuracy_curves(frame: pd.DataFrame, methods: tuple[str, ...], rhos: np.ndarray) -> dict[str, np.ndarray]:
    """Certified accuracy (correct and radius ≥ ρ, over all images so far) per method at each ρ."""
    ok = frame["correct"].to_numpy().astype(bool)
    return {m: np.array([(ok & (frame[f"radius_{m}"].to_numpy() >= r)).mean() for r in rhos]) for m in methods
            if f"radius_{m}" in frame}


# ------------------------------------------------------------------------------------------------ Table 5b
TABLE_CHUNK = 4  # test images per Table 5b step: progress moves and a stop takes effect within one step
TABLE_METHODS = ("crc", RELU_METHOD, "crown", "lipschitz")
Progress = Callable[[int, int, str], None]  # (steps done, steps in all, what runs now)


@st.cache_resource(show_spinner=False, max_entries=1024)
def _table_chunk(key: str, dataset: str, start: int, stop: int, device: str, _model: MLP) -> pd.DataFrame:
    """Per-image runner-up radii of test images [start, stop) (one Table 5b step; cached, so a larger N or a
    stopped run goes on from what is done)."""
    ds = catalogue.cached_test_set(dataset)
    t0 = time.perf_counter()
    res = compare_certificates(_model, ds.images[start:stop].reshape(-1, 784).to(device), ds.labels[start:stop],
                               methods=applicable_methods(_model, TABLE_METHODS), targets="runner-up", attack=False)
    df = res.to_frame()
    df["seconds"] = time.perf_counter() - t0
    return df


def _row(frame: pd.DataFrame) -> dict[str, Any]:
    """One Table 5b row from per-image radii: accuracy, mean certificate per method (over correctly classified
    images, NaN where the method does not apply), CRC / CROWN, seconds."""
    ok = frame["correct"].to_numpy().astype(bool)
    row: dict[str, Any] = {"accuracy": float(ok.mean())}
    for m in TABLE_METHODS:
        col = f"radius_{m}"
        row[label(m)] = float(frame.loc[ok, col].mean()) if col in frame and ok.any() else float("nan")
    crc = row[label("crc")] if "radius_crc" in frame else row[label(RELU_METHOD)]
    row["CRC / CROWN"] = crc / row[label("crown")] if row[label("crown")] > 0 else float("nan")
    row["seconds"] = float(frame["seconds"].drop_duplicates().sum())
    return row


def model_row(key: str, dataset: str, n_images: int, device: torch.device, model: MLP,
              progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One model's Table 5b row over the first ``n_images`` test images, TABLE_CHUNK at a time (each step cached);
    ``progress(images done)`` after each step. The caller holds the heavy-job lock."""
    frames = []
    for s in range(0, int(n_images), TABLE_CHUNK):
        frames.append(_table_chunk(key, dataset, s, min(s + TABLE_CHUNK, int(n_images)), str(device), model))
        if progress is not None:
            progress(min(s + TABLE_CHUNK, int(n_images)))
    return _row(pd.concat(frames, ignore_index=True))


def models_table(model_ids: list[str], names: dict[str, str], dataset: str, n_images: int,
                 device: torch.device, progress: Progress | None = None) -> pd.DataFrame:
    """Mean certificate (runner-up target, over correctly classified images among the first ``n_images``) per
    method, one row per model: the paper's Table 5b on the models picked. ``progress(done, total, what)`` after
    every step of TABLE_CHUNK images. Holds the heavy-job lock."""
    rows = []
    steps = -(-int(n_images) // TABLE_CHUNK)
    total = steps * len(model_ids)
    with heavy_jobs.heavy_lock():
        for k, mid in enumerate(model_ids):
            ref, model, _meta = catalogue.model_by_id(mid, device)
            name = names.get(mid, mid).split(" · ")[0]

            def step(done: int, k: int = k, name: str = name) -> None:
                if progress is not None:
                    progress(k * steps + -(-done // TABLE_CHUNK), total,
                             f"model {k + 1} of {len(model_ids)} ({name}): {done} of {n_images} images")

            rows.append({"model": names.get(mid, mid), **model_row(ref.key, dataset, n_images, device, model, step)})
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """Table 5b for display: numbers with 4 decimals (accuracy as %), "—" where a method does not apply (never a
    literal None or NaN)."""
    fmts = {c: "{:.0%}" if c == "accuracy" else "{:.1f}" if c == "seconds" else "{:.4f}" for c in table.columns
            if c != "model"}
    return ui.readable_table(table, fmts)
