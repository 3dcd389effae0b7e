"""GPU benchmarks of issue 9, every number appended to one results file (bench/gpu_check.sh runs this).

    python bench/gpu_bench.py --results FILE [--checkpoint PATH] [--smoke]

1. certificates for 10,000 MNIST-size test images of a 2x[1024] softplus net, runner-up and all classes (fast),
   and of the shipped crt-3x256 net (runner-up, all classes with refine="minimum": the row-space solver on a GPU);
2. curvature bounds (all pairs) for a 4x[1024] softplus net;
3. exact Hessian spectra (float64 eigvalsh, runner-up margin) for 100 images of the 2x[1024] net.
The net is --checkpoint, else runs/bench/softplus-2x1024-*.pt, else trained here (γ = 0.01, 2 epochs, embedded
subset; seconds on a GPU). Images: MNIST test, else Fashion-MNIST test, else the embedded test subset repeated
to 10,000 (the file says which). ``--smoke``: tiny sizes on the CPU, to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crc_core.bounds import curvature_bounds  # noqa: E402
from crc_core.certify import certify  # noqa: E402
from crc_core.checkpoints import load_checkpoint  # noqa: E402
from crc_core.data import load_dataset  # noqa: E402
from crc_core.errors import CRCError  # noqa: E402
from crc_core.hessian import margin_hessian_eigvals  # noqa: E402
from crc_core.models import MLP  # noqa: E402
from crc_core.targets import runner_up  # noqa: E402


class Results:
    """Appends ``key = value`` lines to one file (and echoes them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, key: str, value: object) -> None:
        line = f"{key} = {value}"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        print(line, flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: torch.device):
    sync(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t0, out


def get_model(checkpoint: str | None, dev: torch.device, rec: Results, smoke: bool) -> MLP:
    found = sorted((ROOT / "runs" / "bench").glob("softplus-2x1024-*.pt"))
    path = Path(checkpoint) if checkpoint else (found[0] if found else None)
    if path is not None:
        model, _ = load_checkpoint(path)
        rec("model", f"{path.name} ({model.describe()})")
        return model.to(dev).eval()
    from crc_core.train import TrainConfig, train

    cfg = TrainConfig(dataset="embedded", widths=(1024,), activation="softplus", kind="gamma", gamma=0.01,
                      epochs=1 if smoke else 2, eval_samples=0, seed=0, device=str(dev),
                      max_steps=5 if smoke else None)
    s, res = timed(lambda: train(cfg), dev)
    rec("model", f"trained here: 2x[1024] softplus, γ = 0.01, {cfg.epochs} epochs on the embedded subset "
                 f"({s:.1f} s), test accuracy {res.metrics.get('test_accuracy')}")
    return res.model.to(dev).eval()


def get_images(n: int, dev: torch.device, rec: Results) -> tuple[torch.Tensor, torch.Tensor]:
    for name in ("mnist", "fashion-mnist"):
        try:
            ds = load_dataset(name, "test", limit=n)
        except (CRCError, OSError):
            continue
        if len(ds) >= n:
            rec("images", f"{n} test images of {ds.source}")
            return ds.images.reshape(n, -1).to(dev), ds.labels.to(dev)
    ds = load_dataset("embedded", "test")
    reps = -(-n // len(ds))
    rec("images", f"{n} images: the embedded test subset ({len(ds)}) repeated {reps}x (no MNIST/Fashion-MNIST found)")
    return ds.images.reshape(len(ds), -1).repeat(reps, 1)[:n].to(dev), ds.labels.repeat(reps)[:n].to(dev)


SETTINGS = (("runner-up", "every-target"), ("all", "minimum"), ("all", "every-target"))


def bench_certificates(rec: Results, model: MLP, x: torch.Tensor, y: torch.Tensor, dev: torch.device, name: str,
                       prefix: str, settings: tuple[tuple[str, str], ...] = SETTINGS) -> None:
    """Curvature bounds (all pairs), then certificates of all images x (n, D) per (targets, refine) setting:
    seconds, ms/image, gradient evaluations, certified accuracy at ρ = 0.5, exact fraction."""
    n = x.shape[0]
    s, bounds = timed(lambda: curvature_bounds(model), dev)
    rec(f"bounds_{name}_all_pairs_s", f"{s:.3f} ({bounds.method})")
    certify(model, x[:64], y[:64], bounds=bounds, targets="runner-up")  # warm-up (kernels, allocator)
    for targets, refine in settings:
        s, c = timed(lambda t=targets, r=refine: certify(model, x, y, targets=t, bounds=bounds, refine=r), dev)
        key = f"certify_{prefix}{targets}_{n}" if targets == "runner-up" else f"certify_{prefix}{targets}_{refine}_{n}"
        rec(f"{key}_s", f"{s:.3f}")
        rec(f"{key}_ms_per_image", f"{1000 * s / n:.4f}")
        rec(f"{key}_grad_evals_per_image", f"{float(c.n_grad.double().mean()):.1f}")
        rec(f"{key}_certified_acc_rho0.5", f"{float(c.certified(0.5).double().mean()):.4f}")
        rec(f"{key}_exact_fraction", f"{float(c.exact[c.correct].double().mean()):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks the script, no GPU numbers)")
    a = ap.parse_args()
    rec = Results(Path(a.results))
    if not a.smoke and not torch.cuda.is_available():
        rec("error", "no CUDA device: GPU benchmarks not run (use --smoke to check the script on a CPU)")
        sys.exit(2)
    dev = torch.device("cpu" if a.smoke else "cuda")
    rec("device", torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (smoke run)")
    rec("torch", torch.__version__)
    n_cert, n_hess, width4 = (20, 2, 64) if a.smoke else (10_000, 100, 1024)
    model = get_model(a.checkpoint, dev, rec, a.smoke)
    x, y = get_images(n_cert, dev, rec)
    bench_certificates(rec, model, x, y, dev, "2x1024", "")
    crt, _ = load_checkpoint(ROOT / "assets" / "models" / "crt-3x256.pt")  # the fast solver in its row space
    rec("model_3x256", f"crt-3x256.pt ({crt.describe()}), the same images")
    bench_certificates(rec, crt.to(dev).eval(), x, y, dev, "3x256", "3x256_", SETTINGS[:2])
    torch.manual_seed(0)
    m4 = MLP(784, [width4] * 3, 10, "softplus").to(dev)
    for method in ("thm4", "auto"):
        s, b4 = timed(lambda meth=method: curvature_bounds(m4, method=meth), dev)
        rec(f"bounds_4x{width4}_{method}_s", f"{s:.3f} ({b4.method})")
    xh = x[:n_hess]
    with torch.no_grad():
        logits = model(xh)
    pred = logits.argmax(1)
    s, ev = timed(lambda: margin_hessian_eigvals(model, xh, pred, runner_up(logits, pred)), dev)
    rec(f"hessian_spectra_{n_hess}_images_s", f"{s:.3f}")
    rec(f"hessian_spectra_{n_hess}_min_eig_range", f"[{float(ev[:, 0].min()):.4e}, {float(ev[:, 0].max()):.4e}]")
    rec("done", "yes")


if __name__ == "__main__":
    main()
