"""Soundness at scale: many certificates attacked hard, many exact Hessian spectra checked against every bound.

Models: the shipped checkpoints (assets/models/*.pt, 784 inputs), freshly trained 784-input models (depth 2-4, every
activation, standard / γ-regularized / CRT, trained with crc_core.train) and freshly trained 100-input models
(tests/helpers.py's downsampled images: exact spectra are cheap), also depth 2-4 x every activation x every kind.

1. Certificates: test images are certified against every other class (crc_core.certify, fast mode), then attacked
   inside their radius by crc_core.testing.attack_certificates: L2 PGD with 3 restarts, Algorithm 2 against every
   class, and bisection along random directions, every target's margin gradient and every target's reported
   boundary / dual point. A violation is a prediction change strictly inside a certified radius.
2. Bounds: at data points, uniform points in [0,1]^D, wide Gaussian points and curvature-ascent iterates, the exact
   spectrum of the margin Hessian (float64 eigvalsh) for every other class t (100-input models; 2 pairs on the
   784-input ones) is checked against every bound that applies: Theorem 3 [m, M] (depth 2), Theorem 4 K and the
   refined Theorem 4 K. A violation is an eigenvalue outside a bound beyond 1e-9 relative round-off (the criterion
   of crc_core.testing.check_bounds, which re-checks a sample to make sure both agree).

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/soundness_at_scale.py              # >= 10k / 100k
    .venv/bin/python scripts/soundness_at_scale.py --certificates 300 --eig-points 3000 --quick  # smoke run

Writes a JSON report (--out) and prints a Markdown summary for docs/reliability.md. Exit code 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crc_core.bounds import curvature_bounds  # noqa: E402
from crc_core.certify import certify  # noqa: E402
from crc_core.checkpoints import load_checkpoint  # noqa: E402
from crc_core.data import Dataset, load_dataset  # noqa: E402
from crc_core.hessian import margin_hessian_eigvals  # noqa: E402
from crc_core.models import MLP  # noqa: E402
from crc_core.testing import attack_certificates, check_bounds, curvature_ascent_points  # noqa: E402
from crc_core.train import TrainConfig, train  # noqa: E402

ACTS = ("softplus", "sigmoid", "tanh")
KINDS = ("standard", "gamma", "crt")
RTOL = 1e-9  # as crc_core.testing.check_bounds


def log(msg: str, t0: float = time.time()) -> None:
    print(f"[{time.time() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def downsample(images: torch.Tensor) -> torch.Tensor:
    """(N, 784) -> (N, 100): centre 20x20 crop, 2x2 average pooling (as tests/helpers.py)."""
    x = images.reshape(-1, 1, 28, 28)[:, :, 4:24, 4:24]
    return F.avg_pool2d(x, 2).reshape(x.shape[0], -1)


@dataclass
class Zoo:
    name: str
    model: MLP
    test: Dataset
    source: str  # shipped | fresh-784 | fresh-100
    kind: str = ""


@dataclass
class CertRow:
    model: str
    images: int
    correct: int
    certificates: int  # correct and radius > 0: attacked
    exact: int
    mean_radius: float
    violations: int
    closest_ratio: float
    attack_points: int
    seconds: float


@dataclass
class EigRow:
    model: str
    points: int
    spectra: int  # (point, pair) Hessians
    checks: int  # spectra x bounds
    violations: int
    worst: dict[str, float] = field(default_factory=dict)  # method -> max over spectra of |λ|/K (≤ 1 when sound)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------------------- models
def build_zoo(args: argparse.Namespace) -> list[Zoo]:
    zoo: list[Zoo] = []
    test784 = load_dataset("embedded", "test")
    train784 = load_dataset("embedded", "train")
    for path in sorted((REPO / "assets" / "models").glob(args.shipped)):
        try:
            model, meta = load_checkpoint(path)
        except Exception as exc:  # a checkpoint being written right now, etc.: report and go on
            log(f"skipping {path.name}: {exc}")
            continue
        zoo.append(Zoo(f"shipped:{path.stem} ({model.describe()})", model.eval(), test784, "shipped",
                       str(meta.get("kind") or "")))
    d100 = (Dataset(downsample(train784.images), train784.labels, train784.class_names, "embedded", "100-d", "train"),
            Dataset(downsample(test784.images), test784.labels, test784.class_names, "embedded", "100-d", "test"))
    plan = []  # (seed, depth, activation, kind, input size)
    for seed in range(0 if args.no_fresh else args.seeds):
        for depth in (2, 3, 4):
            for j, act in enumerate(ACTS):
                for kind in KINDS:
                    if not args.quick or (kind == "gamma" and depth < 4):
                        plan.append((seed, depth, act, kind, 100))
                # 784 inputs: one kind per (depth, activation), rotating with the seed
                if not args.quick or (depth == 2 and act == "softplus"):
                    plan.append((seed, depth, act, KINDS[(depth + j + seed) % 3], 784))
    for seed, depth, act, kind, dim in plan:
        cfg = TrainConfig(widths=(args.width,) * (depth - 1), activation=act, kind=kind, gamma=0.02,
                          crt_eps=0.5 if dim == 784 else 0.3, epochs=args.epochs,
                          lr=3e-3 if act != "sigmoid" else 1e-2, train_limit=args.train_limit, eval_samples=0,
                          device="cpu", seed=seed)
        t = time.time()
        model = train(cfg, data=d100 if dim == 100 else (train784, test784)).model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        test = d100[1] if dim == 100 else test784
        with torch.no_grad():
            acc = float((model(test.images[:1000]).argmax(1) == test.labels[:1000]).float().mean())
        name = f"fresh-{dim}:{cfg.describe()} seed {seed}"
        log(f"trained {name}: acc {acc:.1%} ({time.time() - t:.1f} s)")
        zoo.append(Zoo(name, model, test, f"fresh-{dim}", kind))
    return zoo


# ---------------------------------------------------------------------------------------------------------- part 1
def attack_model(z: Zoo, n_images: int, batch: int) -> CertRow:
    t = time.time()
    n = min(n_images, len(z.test))
    tot = CertRow(z.name, 0, 0, 0, 0, 0.0, 0, math.inf, 0, 0.0)
    rsum = 0.0
    bounds = curvature_bounds(z.model)
    for s in range(0, n, batch):
        x, lab = z.test.images[s:min(s + batch, n)], z.test.labels[s:min(s + batch, n)]
        c = certify(z.model, x, lab, targets="all", bounds=bounds)
        ok = c.correct & (c.radius > 0)
        towards_b = c.x_boundary_by_row - x[:, None, :]
        res = attack_certificates(z.model, x[ok], c.pred[ok], c.radius[ok], extra_dirs=towards_b[ok], pgd_restarts=3,
                                  seed=s)
        tot.images += x.shape[0]
        tot.correct += int(c.correct.sum())
        tot.certificates += res.n_pairs
        tot.exact += int((c.exact & ok).sum())
        rsum += float(c.radius[ok].sum())
        tot.violations += res.n_violations
        tot.closest_ratio = min(tot.closest_ratio, res.closest_ratio)
        tot.attack_points += res.n_attack_points
    tot.mean_radius = rsum / max(1, tot.certificates)
    tot.seconds = time.time() - t
    return tot


# ---------------------------------------------------------------------------------------------------------- part 2
def probe_points(z: Zoo, n: int, seed: int) -> list[torch.Tensor]:
    """~n points: 45% data, 20% uniform in [0,1]^D, 15% wide Gaussians, 20% curvature-ascent iterates."""
    g = torch.Generator().manual_seed(seed)
    D = z.model.in_dim
    n_data = min(int(0.45 * n), len(z.test))
    batches = [z.test.images[:n_data], torch.rand(int(0.2 * n), D, generator=g),
               0.5 + 3 * torch.randn(n - n_data - int(0.2 * n) - int(0.2 * n), D, generator=g)]
    n_iter = 4  # ascent: 3 objectives x n_iter iterates per start
    n_start = max(1, int(0.2 * n) // (3 * n_iter))
    x0 = z.test.images[-n_start:]
    with torch.no_grad():
        top2 = z.model(x0).topk(2, dim=1).indices
    for which in ("max", "min", "absmax"):
        x = x0
        for _ in range(n_iter):
            x = curvature_ascent_points(z.model, x, top2[:, 0], top2[:, 1], steps=3, lr=0.2, which=which)
            batches.append(x)
    return [b for b in batches if b.shape[0]]


def check_model_bounds(z: Zoo, n_points: int, seed: int, chunk: int) -> EigRow:
    t0 = time.time()
    methods = ["thm3", "thm4", "refined"] if z.model.depth == 2 else ["thm4", "refined"]
    tables = {m: curvature_bounds(z.model, method=m) for m in methods}
    C = z.model.n_classes
    big = z.model.in_dim > 200
    row = EigRow(z.name, 0, 0, 0, 0, dict.fromkeys(methods, 0.0))
    g = torch.Generator().manual_seed(seed + 1)
    cross_checked = False
    for xb in probe_points(z, n_points, seed):
        for s in range(0, xb.shape[0], chunk):
            x = xb[s:s + chunk]
            with torch.no_grad():
                logits = z.model(x)
            y = logits.argmax(1)
            if big:  # 784 inputs: runner-up and one random other class (a 784x784 spectrum is ~50 ms)
                ru = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
                rnd = (y + torch.randint(1, C, y.shape, generator=g)) % C
                T = torch.stack([ru, rnd], 1)
            else:  # every other class
                ar = torch.arange(C).expand(x.shape[0], C)
                T = ar[ar != y[:, None]].reshape(x.shape[0], C - 1)
            ev = margin_hessian_eigvals(z.model, x, y, T, chunk_size=8 if big else 32)  # (B, P, D)
            lo, hi = ev[..., 0].reshape(-1), ev[..., -1].reshape(-1)
            yy, tt = y.repeat_interleave(T.shape[1]), T.reshape(-1)
            absmax = torch.maximum(-lo, hi)
            for m in methods:
                b = tables[m].for_pairs(yy, tt)
                tol = RTOL * b.K.abs() + 1e-12
                bad = (lo < b.m - tol) | (hi > b.M + tol) | (absmax > b.K + tol)
                row.violations += int(bad.sum())
                row.checks += int(bad.numel())
                row.worst[m] = max(row.worst[m], float((absmax / b.K.clamp_min(1e-300)).max()))
                if not cross_checked:  # the library's checker must agree on a sample
                    ref = check_bounds(z.model, x[:4], y[:4], T[:4, 0], tables[m])
                    mine = int(bad.reshape(x.shape[0], -1)[:4, 0].sum())
                    assert ref.n_violations == mine, (m, ref, mine)
            cross_checked = True
            row.points += x.shape[0]
            row.spectra += int(lo.numel())
    row.seconds = time.time() - t0
    return row


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--certificates", type=int, default=10_000, help="target number of attacked certificates")
    p.add_argument("--eig-points", type=int, default=100_000, help="target number of points with exact spectra")
    p.add_argument("--shipped-images", type=int, default=600, help="test images certified per shipped model")
    p.add_argument("--big-eig-points", type=int, default=150, help="spectra points per 784-input model")
    p.add_argument("--seeds", type=int, default=1, help="fresh models per (depth, activation, kind) and input size")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=5000)
    p.add_argument("--batch", type=int, default=250, help="images per certify/attack call")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a few models only (smoke test)")
    p.add_argument("--shipped", default="*.pt", metavar="GLOB", help="which files of assets/models to include")
    p.add_argument("--no-fresh", action="store_true", help="shipped models only")
    p.add_argument("--out", default=str(REPO / "runs" / "soundness_at_scale.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t_start = time.time()
    zoo = build_zoo(args)
    big = [z for z in zoo if z.model.in_dim > 200]
    small = [z for z in zoo if z.model.in_dim <= 200]
    log(f"{len(zoo)} models: {len([z for z in zoo if z.source == 'shipped'])} shipped, "
        f"{len(big) - len([z for z in zoo if z.source == 'shipped'])} fresh 784-input, {len(small)} fresh 100-input")

    # part 1: certificates. Shipped models: --shipped-images each; the rest shares what is left of the target.
    cert_rows: list[CertRow] = []
    for z in [z for z in zoo if z.source == "shipped"]:
        cert_rows.append(attack_model(z, args.shipped_images, args.batch))
        log(f"certificates {z.name}: {asdict(cert_rows[-1])}")
    fresh = [z for z in zoo if z.source != "shipped"]
    for i, z in enumerate(fresh):
        left = args.certificates - sum(r.certificates for r in cert_rows)
        per_model = max(100, min(len(z.test), math.ceil(left / max(1, len(fresh) - i) / 0.55)))
        cert_rows.append(attack_model(z, per_model, args.batch))
        log(f"certificates {z.name}: {asdict(cert_rows[-1])}")

    # part 2: spectra. 784-input models: --big-eig-points each; 100-input models share the rest of the target.
    eig_rows: list[EigRow] = []
    for i, z in enumerate(big):
        eig_rows.append(check_model_bounds(z, args.big_eig_points, seed=i, chunk=16))
        log(f"bounds {z.name}: {asdict(eig_rows[-1])}")
    for i, z in enumerate(small):
        left = args.eig_points - sum(r.points for r in eig_rows)
        eig_rows.append(check_model_bounds(z, max(200, math.ceil(left / (len(small) - i))), seed=100 + i, chunk=128))
        log(f"bounds {z.name}: {asdict(eig_rows[-1])}")

    totals = {
        "models": len(zoo),
        "certificates": sum(r.certificates for r in cert_rows),
        "images_certified": sum(r.images for r in cert_rows),
        "exact_certificates": sum(r.exact for r in cert_rows),
        "certificate_violations": sum(r.violations for r in cert_rows),
        "closest_flip_over_radius": min(r.closest_ratio for r in cert_rows),
        "attack_points": sum(r.attack_points for r in cert_rows),
        "eig_points": sum(r.points for r in eig_rows),
        "spectra": sum(r.spectra for r in eig_rows),
        "bound_checks": sum(r.checks for r in eig_rows),
        "bound_violations": sum(r.violations for r in eig_rows),
        "worst_ratio_by_method": {m: max(r.worst.get(m, 0.0) for r in eig_rows) for m in ("thm3", "thm4", "refined")
                                  if any(m in r.worst for r in eig_rows)},
        "seconds": round(time.time() - t_start, 1),
    }
    report = {"command": " ".join(sys.argv), "machine": f"{platform.node()} {platform.processor()} "
              f"{torch.get_num_threads()} thread(s)", "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "totals": totals,
              "certificates": [asdict(r) for r in cert_rows], "bounds": [asdict(r) for r in eig_rows]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(markdown(report))
    log(f"report written to {out}")
    return 1 if totals["certificate_violations"] or totals["bound_violations"] else 0


def markdown(report: dict) -> str:
    t = report["totals"]
    lines = [f"Soundness at scale ({report['date']}, {report['machine']}, torch {report['torch']}, "
             f"{t['seconds'] / 60:.0f} min): `{report['command']}`", "",
             "| part | count | violations | margin |", "|---|---:|---:|---|",
             f"| (image, model) certificates attacked | {t['certificates']:,} (of {t['images_certified']:,} images; "
             f"{t['exact_certificates']:,} exact) | {t['certificate_violations']} | closest flip at "
             f"{t['closest_flip_over_radius']:.6f} x radius, {t['attack_points']:,} attack points |",
             f"| points with exact Hessian spectra | {t['eig_points']:,} ({t['spectra']:,} spectra, "
             f"{t['bound_checks']:,} spectrum-bound checks) | {t['bound_violations']} | max λ/K: "
             + ", ".join(f"{m} {v:.3f}" for m, v in t["worst_ratio_by_method"].items()) + " |", "",
             "| model | images | certificates | exact | mean radius | violations | closest ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["certificates"]:
        lines.append(f"| {r['model']} | {r['images']} | {r['certificates']} | {r['exact']} | {r['mean_radius']:.3f} | "
                     f"{r['violations']} | {r['closest_ratio']:.6f} |")
    lines += ["", "| model | points | spectra | checks | violations | max λ/K per bound |",
              "|---|---:|---:|---:|---:|---|"]
    for r in report["bounds"]:
        lines.append(f"| {r['model']} | {r['points']} | {r['spectra']} | {r['checks']} | {r['violations']} | "
                     + ", ".join(f"{m} {v:.3f}" for m, v in r["worst"].items()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
