"""Issue 26: does our CRT training or our certificate differ from the authors' official code on the same model?

The official code (its `utils.py`, read; described in docs/reproduction.md "Table 4's gap") is re-stated here
in our terms, from that description, and run beside ours on one checkpoint of a 2-layer softplus net:

1. the training attack: official = 30 bisection steps on η ∈ [|m|, |m| + 1000] (|m|, M: Theorem 3 of the pair),
   10 MM steps each with majoriser M, the *last iterate* returned unprojected; ours = `curvature_attack` with
   majoriser max(|m|, M), η ∈ [|m|, 20 (1 + |m|)], the best iterate in the ball. Same training images, same
   (label, runner-up) pairs, same m and M (our training estimate).
2. the certificate: official `test_cert` = η ∈ [0, 1/|m|] with |m|, M from 50 power iterations from a random start,
   30 x 20 MM steps, d² = ‖x − x0‖² + 2η f(x), counted when d > ρ and ‖η∇f + x − x0‖ < 1e-5; ours =
   `crc_core.certify` (runner-up), on the same fixed sample of test images.
3. the penalty: official h‖W1‖² max|w_y − w_t| (exact spectral norm here) vs our `CurvatureRegularizer`.

Results are returned as rows and printed by the command line only:

    .venv/bin/python bench/official_code_check.py assets/models/table4-crt-2x1024-eps1.58.pt --dataset fashion-mnist
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crc_core.attack import curvature_attack
from crc_core.bounds import CurvatureRegularizer, theorem3
from crc_core.certify import certify
from crc_core.checkpoints import load_checkpoint
from crc_core.data import load_dataset
from crc_core.hessian import MarginOracle
from crc_core.metrics import fixed_eval_sample
from crc_core.models import MLP
from crc_core.solvers.mm import bisect_eta, mm_step
from crc_core.targets import runner_up


def official_attack(model: MLP, x0, y, t, eps: float, m_abs, M, outer: int = 30, inner: int = 10):
    """The official training attack on rows x0 (N, D): returns its last iterate (N, D), not projected."""
    oracle = MarginOracle(model, y, t)
    lo, hi = m_abs.clone(), m_abs + 1000
    eta, x, ones = (lo + hi) / 2, x0.clone(), torch.ones_like(m_abs)
    for _ in range(outer):
        for _ in range(inner):  # a fixed count, no stopping test (as the official code)
            x = mm_step(x, x0, oracle(x)[1], eta, ones, M)
        lo, hi, eta = bisect_eta(lo, hi, eta, (x - x0).norm(dim=1) > eps)
    return x


def official_certificate(model: MLP, x0, y, t, m_abs, M, outer: int = 30, inner: int = 20):
    """The official certificate: (lower bound d (N,), final residual ‖η∇f + x − x0‖ (N,))."""
    oracle = MarginOracle(model, y, t)
    lo, hi = torch.zeros_like(m_abs), 1 / m_abs
    eta, x, ones = (lo + hi) / 2, x0.clone(), torch.ones_like(m_abs)
    for _ in range(outer):
        for _ in range(inner):
            _, g = oracle(x)
            x = mm_step(x, x0, g, ones, eta, eta * M)
        f, _ = oracle(x)
        lo, hi, eta = bisect_eta(lo, hi, eta, f > 0)
    d2 = ((x - x0) ** 2).sum(dim=1) + 2 * eta * f
    return d2.clamp_min(0).sqrt(), (eta[:, None] * g + (x - x0)).norm(dim=1)


def power_iteration_theorem3(model: MLP, y, t, iters: int = 50, seed: int = 0):
    """|m| and M of Theorem 3 for the rows' pairs the official way: 50 power iterations from one random start."""
    W1, W2 = model.layers[0].weight.detach(), model.layers[-1].weight.detach()
    w = W2[y] - W2[t]
    h = model.activation.h_U

    def top(c):
        v = torch.randn(1, W1.shape[1], generator=torch.Generator().manual_seed(seed), dtype=W1.dtype)
        v = v / v.norm()
        for _ in range(iters):
            x = ((v @ W1.T) * c) @ W1
            norm = x.norm(dim=1, keepdim=True)
            v = x / norm
        return norm[:, 0]

    return h * top(w.clamp_max(0)), h * top(w.clamp_min(0))


def attack_rows(model: MLP, x0, y, eps: float) -> list[dict]:
    """Check 1 on training images x0 (N, D): one row per attack."""
    with torch.no_grad():
        t = runner_up(model(x0), y)
    m, M = CurvatureRegularizer().theorem3_estimate(model, y, t)
    with torch.no_grad():
        ours = curvature_attack(model, x0, y, t, eps, m=m, K=torch.maximum(-m, M), n_outer=30, n_inner=10).x
        theirs = official_attack(model, x0, y, t, eps, -m, M)
        theirs_max = official_attack(model, x0, y, t, eps, -m, torch.maximum(-m, M))
    rows = []
    for name, x in (("ours (best point in the ball)", ours), ("official (last iterate, majoriser M)", theirs),
                    ("official, majoriser max(|m|, M)", theirs_max)):
        d = (x - x0).norm(dim=1)
        with torch.no_grad():
            f = MarginOracle(model, y, t)(x)[0]
            acc = float((model(x).argmax(1) == y).float().mean())
        rows.append({"attack": name, "mean_distance": float(d.mean()),
                     "beyond_eps": float((d > eps * 1.01).float().mean()),
                     "at_eps": float(((d - eps).abs() <= 0.01 * eps).float().mean()), "accuracy": acc,
                     "mean_margin": float(f.mean()), "max_diff_to_ours": float((x - ours).norm(dim=1).max())})
    return rows


def certificate_rows(model: MLP, x0, y, rho: float) -> list[dict]:
    """Check 2 on test images x0 (N, D): certified accuracy at ρ (runner-up) of each certificate."""
    with torch.no_grad():
        logits = model(x0)
    ok, t = logits.argmax(1) == y, runner_up(logits, y)
    m_pi, M_pi = power_iteration_theorem3(model, y, t)
    m_ex, M_ex = theorem3(model, y, t)
    m_ex, M_ex = (-m_ex).to(x0.dtype), M_ex.to(x0.dtype)
    rows = [{"check": f"power-iteration {name} / exact", "mean": float(r.mean()), "min": float(r.min())}
            for name, r in (("|m|", m_pi / m_ex), ("M", M_pi / M_ex))]
    for name, (ma, MM) in (("official certificate (power iteration)", (m_pi, M_pi)),
                           ("official certificate (exact Theorem 3)", (m_ex, M_ex))):
        with torch.no_grad():
            d, res = official_certificate(model, x0, y, t, ma, MM)
        rows.append({"check": name, "certified": float((ok & (d > rho) & (res < 1e-5)).float().mean()),
                     "mean_radius_correct": float(d[ok].mean())})
    ours = certify(model, x0, y, targets="runner-up")
    rows.append({"check": "ours (crc_core.certify, runner-up)",
                 "certified": float((ours.correct & (ours.radius >= rho)).float().mean()),
                 "mean_radius_correct": float(ours.radius[ours.correct].mean())})
    return rows


def penalty_row(model: MLP, x0, y) -> dict:
    """Check 3: our penalty K against h‖W1‖² max|w_y − w_t| on the rows' (label, runner-up) pairs."""
    with torch.no_grad():  # 500 power iterations: converged, as the warm start is after many training steps
        t = runner_up(model(x0), y)
        K = CurvatureRegularizer(n_iter=500)(model, y, t)
    W1, W2 = model.layers[0].weight.detach(), model.layers[-1].weight.detach()
    official = model.activation.h_U * torch.linalg.matrix_norm(W1, ord=2) ** 2 * (W2[y] - W2[t]).abs().amax(dim=1)
    return {"ours_mean": float(K.mean()), "official_mean": float(official.mean()),
            "max_relative_difference": float(((K - official).abs() / official).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--eps", type=float, default=1.58, help="training attack radius (check 1)")
    ap.add_argument("--rho", type=float, default=1.58, help="certificate radius (check 2)")
    ap.add_argument("--train-images", type=int, default=256)
    ap.add_argument("--test-images", type=int, default=1000)
    args = ap.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    if model.depth != 2 or model.activation_name != "softplus":
        sys.exit(f"{args.checkpoint}: the official code's softplus Theorem 3 needs a 2-layer softplus net; this is "
                 f"{model.depth} layers, {model.activation_name}")
    model = model.float().eval()
    train = load_dataset(args.dataset, "train", limit=args.train_images)
    test = load_dataset(args.dataset, "test")
    idx = fixed_eval_sample(len(test.labels), args.test_images)
    for row in attack_rows(model, train.images.float(), train.labels, args.eps):
        print(row)
    for row in certificate_rows(model, test.images[idx].float(), test.labels[idx], args.rho):
        print(row)
    print(penalty_row(model, train.images.float(), train.labels))


if __name__ == "__main__":
    main()
