"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): CERTIFY, batched over images.

The smoothed classifier is g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), for the base classifier f (the model).
:meth:`Smooth.certify` returns g's prediction and an L2 radius σ·Φ⁻¹(p_A), p_A a one-sided Clopper–Pearson lower
bound at level α on the top class's probability (n0 samples choose the class, n fresh samples estimate it).

**What it certifies.** The radius is a certificate of the *smoothed* classifier g, not of the model, and it holds
with probability at least 1 - α over the sampling (a wrong answer is possible, with probability ≤ α). It is not
comparable one-to-one with the deterministic radii of CRC, CROWN or the first-order bound.

:meth:`Smooth.certify_binary` is the paper's App. H.3 variant: after selecting y and a false target t with n0
samples, the base classifier is the binary "z_y > z_t", and the radius certifies the smoothed y-vs-t classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_images, check_labels, check_targets
from ..errors import CRCError

__all__ = ["SMOOTHING_GUARANTEE", "Smooth", "SmoothingCertificate", "check_smoothing_args"]

SMOOTHING_GUARANTEE = ("certificate of the smoothed classifier (Gaussian noise σ), not of the model; "
                       "holds with probability ≥ 1 − α over the sampling")

# Noise samples per forward pass (images × samples): bounds memory at batch_size · D floats.
DEFAULT_BATCH = 4096


@dataclass
class SmoothingCertificate:
    """Per image (B,): pred (the smoothed prediction, -1 when abstaining), radius (0 when abstaining),
    p_lower (the Clopper–Pearson lower bound on p_A), abstain (bool), target (the false class t of the binary
    variant, -1 otherwise). The radius is a certificate of the smoothed classifier with probability ≥ 1 - α."""

    pred: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    abstain: torch.Tensor
    target: torch.Tensor
    sigma: float
    alpha: float
    n0: int
    n: int
    binary: bool = False
    guarantee: str = SMOOTHING_GUARANTEE


def check_smoothing_args(sigma: float, n0: int, n: int, alpha: float, batch_size: int = DEFAULT_BATCH) -> None:
    """Raise CRCError unless σ > 0 finite, 1 ≤ n0 ≤ n, 0 < α < 1 and batch_size ≥ 1."""
    if not (isinstance(sigma, (int, float)) and 0 < float(sigma) < float("inf")):
        raise CRCError(f"The smoothing noise σ must be a positive finite number, got {sigma!r}.")
    if int(n0) != n0 or int(n) != n or n0 < 1 or n < 1:
        raise CRCError(f"The sample counts n0 and n must be positive integers, got n0={n0!r}, n={n!r}.")
    if n < n0:
        raise CRCError(f"The estimation samples n ({n}) must be at least the selection samples n0 ({n0}).")
    if not (isinstance(alpha, (int, float)) and 0 < float(alpha) < 1):
        raise CRCError(f"The failure probability α must lie strictly between 0 and 1, got {alpha!r}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise CRCError(f"batch_size must be a positive integer, got {batch_size!r}.")


def clopper_pearson_lower(k: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """One-sided (1 - α) Clopper–Pearson lower bound on a binomial p from k successes in n trials (scipy)."""
    from scipy.stats import beta

    k_np = k.detach().cpu().double().numpy()
    lo = beta.ppf(alpha, k_np, n - k_np + 1)
    return torch.as_tensor(lo, dtype=torch.float64).nan_to_num(0.0)  # k = 0 gives nan: the bound is 0


class Smooth:
    """The smoothed version of ``model`` (a classifier x (B, D) -> logits (B, C)) with Gaussian noise σ."""

    ABSTAIN = -1

    def __init__(self, model: nn.Module, sigma: float) -> None:
        check_smoothing_args(sigma, 1, 1, 0.5)
        self.model, self.sigma = model, float(sigma)
        p = next(model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.dtype = p.dtype if p is not None else torch.float32

    def _noisy_logits(self, x: torch.Tensor, num: int, batch_size: int, gen: torch.Generator):
        """Yield logits (B, k, C) of x (B, D) under k fresh noise draws, k summing to ``num``."""
        B, D = x.shape
        per = max(1, batch_size // B)
        done = 0
        while done < num:
            k = min(per, num - done)
            noise = torch.randn((B, k, D), generator=gen, device=self.device, dtype=self.dtype) * self.sigma
            yield self.model((x[:, None, :] + noise).reshape(B * k, D)).reshape(B, k, -1)
            done += k

    def _counts(self, x: torch.Tensor, num: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """Class counts (B, C) of the base prediction under ``num`` noise draws."""
        counts = None
        for z in self._noisy_logits(x, num, batch_size, gen):
            c = nn.functional.one_hot(z.argmax(2), z.shape[2]).sum(1)
            counts = c if counts is None else counts + c
        return counts

    def _prepare(self, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Generator]:
        if isinstance(x, torch.Tensor) and x.dim() != 2:  # one image (D,) or images (B, *image)
            x = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
        x = check_images(self.model, x, dtype=self.dtype, device=self.device)
        return x, torch.Generator(self.device).manual_seed(seed)

    @torch.no_grad()
    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, *, batch_size: int = DEFAULT_BATCH,
                seed: int = 0) -> SmoothingCertificate:
        """Cohen et al.'s CERTIFY for x (B, D): the class chosen from n0 samples, p_A bounded from n others."""
        check_smoothing_args(self.sigma, n0, n, alpha, batch_size)
        x, gen = self._prepare(x, seed)
        c_hat = self._counts(x, n0, batch_size, gen).argmax(1)
        n_a = self._counts(x, n, batch_size, gen).gather(1, c_hat[:, None])[:, 0]
        return self._finish(c_hat, n_a, n0, n, alpha, torch.full_like(c_hat, -1), binary=False)

    @torch.no_grad()
    def certify_binary(self, x: torch.Tensor, n0: int, n: int, alpha: float, *, y: torch.Tensor | None = None,
                       t: torch.Tensor | None = None, batch_size: int = DEFAULT_BATCH, seed: int = 0
                       ) -> SmoothingCertificate:
        """App. H.3: y and the false target t chosen from n0 samples (the two most frequent classes, ties broken
        by the model's logits at x) unless both are given; then the binary base classifier "z_y > z_t" is
        smoothed and certified from n samples. The radius certifies the smoothed y-vs-t classifier."""
        check_smoothing_args(self.sigma, n0, n, alpha, batch_size)
        x, gen = self._prepare(x, seed)
        if (y is None) != (t is None):
            raise CRCError("Give both y and t, or neither (then they are chosen from n0 samples).")
        if y is None:
            counts = self._counts(x, n0, batch_size, gen).double()
            score = counts + 0.5 * torch.softmax(self.model(x).double(), 1)  # < 1 added: only breaks ties
            y = score.argmax(1)
            t = score.scatter(1, y[:, None], float("-inf")).argmax(1)
        y = check_labels(y, x.shape[0], getattr(self.model, "n_classes", None), self.device)
        t = check_targets(y, torch.as_tensor(t).reshape(-1), getattr(self.model, "n_classes", None))
        n_a = torch.zeros_like(y)
        for z in self._noisy_logits(x, n, batch_size, gen):
            n_a += (z.gather(2, y[:, None, None].expand(-1, z.shape[1], 1))
                    > z.gather(2, t[:, None, None].expand(-1, z.shape[1], 1)))[..., 0].sum(1)
        return self._finish(y, n_a, n0, n, alpha, t, binary=True)

    def _finish(self, c_hat, n_a, n0: int, n: int, alpha: float, target, *, binary: bool) -> SmoothingCertificate:
        from scipy.stats import norm

        p_lo = clopper_pearson_lower(n_a, n, alpha)
        abstain = p_lo <= 0.5
        radius = torch.as_tensor(self.sigma * norm.ppf(p_lo.clamp(0.5, 1).numpy()), dtype=torch.float64)
        radius = torch.where(abstain, torch.zeros_like(radius), radius)
        pred = torch.where(abstain, torch.full_like(c_hat.cpu(), self.ABSTAIN), c_hat.cpu())
        return SmoothingCertificate(pred, radius, p_lo, abstain, target.cpu(), self.sigma, float(alpha), int(n0),
                                    int(n), binary)
