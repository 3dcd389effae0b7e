"""``python -m crc_core import``: bring your own model (the paper's official checkpoints, any PyTorch MLP) in as ours.

The work is :func:`crc_core.importers.import_checkpoint`; this module checks the flags (one ``error:`` line, exit
status 2, nothing written) and prints the importer's summary. (The module is ``import_`` because ``import`` is a
Python keyword.)
"""

from __future__ import annotations

import argparse
import shlex

from ..activations import CURVATURE_ACTIVATIONS
from ..checkpoints import sidecar_path
from ..errors import CRCError
from ..importers import DATASET_SHAPES, normalize_dataset
from ..models import FORWARD_ONLY_ACTIVATIONS
from .common import PROG, output_file

# What --activation / --dataset accept: the library's constants (forward-only activations import, but cannot be
# certified; the importer says so).
ACTIVATION_CHOICES: tuple[str, ...] = (*CURVATURE_ACTIVATIONS, *FORWARD_ONLY_ACTIVATIONS)
DATASET_CHOICES: tuple[str, ...] = tuple(DATASET_SHAPES)
MAX_NAME_CHARS = 120  # a display name, not an essay
CHECKPOINT_SUFFIX = ".pt"  # the app and `info` look for *.pt files

EPILOG = f"""\
examples:
  # an official checkpoint of the paper: its name gives dataset (mnist), depth (2) and activation (softplus)
  {PROG} import mnist_2_softplus_L2_1.58_EIGEN_0.005 --out runs/official-mnist-2.pt
  # the same with everything spelled out, and a display name
  {PROG} import mnist_2_softplus_L2_1.58_EIGEN_0.005 --activation softplus --dataset mnist \\
      --name official-mnist-2 --out runs/official-mnist-2.pt
  # your own nn.Sequential MLP (torch.save(model.state_dict(), "my_mlp.pth"))
  {PROG} import my_mlp.pth --activation tanh --dataset fashion-mnist --out runs/my-mlp.pt
  # then: where it came from, and certificates
  {PROG} info runs/official-mnist-2.pt

accepted: a file written by torch.save, or a .safetensors file, holding the weights of a chain of Linear layers,
  any depth: fc1..fcN (the official layout), an nn.Sequential (0.weight, 2.weight, ...), layers.N, a prefix such
  as model. or module., or a dict wrapping them under state_dict / model_state_dict. 784 inputs and 10 classes
  (28x28 images, 10 labels).
refused (nothing is run, nothing written): a pickle carrying code or a whole pickled model object, TorchScript, a
  CNN, a missing bias, shapes that do not chain, a size that is not the dataset's, oversized tensors or views
  (limits: docs/reliability.md, "Hostile files and configs"), other formats.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="import a foreign MLP (e.g. the paper's official checkpoints) as a checkpoint",
        description="Read a PyTorch MLP written by another program (safely: weights only, nothing executed), "
                    "recognise its Linear layers, check it fits the dataset and write it as a CRC Explorer "
                    "checkpoint whose metadata says where it came from (file name, SHA-256, original keys).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE",
                   help="the foreign model file (a state dict saved with torch.save, or a .safetensors file)")
    p.add_argument("--activation", default=None, metavar="ACT",
                   help=f"the network's activation: {', '.join(CURVATURE_ACTIVATIONS)} (certifiable) or "
                        f"{', '.join(FORWARD_ONLY_ACTIVATIONS)} (evaluation only); default: from an official "
                        "file name, required otherwise (a state dict does not store it)")
    p.add_argument("--dataset", default=None, metavar="DATASET",
                   help=f"what the model classifies: {', '.join(DATASET_CHOICES)}; default: from an official "
                        "file name, required otherwise")
    p.add_argument("--name", default=None,
                   help="display name stored in the checkpoint; default: the file name without extension")
    p.add_argument("--out", required=True, metavar="MODEL.pt",
                   help="the checkpoint to write (e.g. runs/official-mnist-2.pt: files in runs/ appear in the app)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def check_args(args: argparse.Namespace) -> None:
    """Every flag checked before the file is read: one CRCError per mistake."""
    if args.activation is not None and args.activation.strip().lower() not in ACTIVATION_CHOICES:
        raise CRCError(f"--activation {args.activation}: choose one of {', '.join(ACTIVATION_CHOICES)}.")
    if args.dataset is not None and normalize_dataset(args.dataset) not in DATASET_CHOICES:
        raise CRCError(f"--dataset {args.dataset}: choose one of {', '.join(DATASET_CHOICES)}.")
    if args.name is not None and not (args.name.strip() and args.name.isprintable()):
        raise CRCError("--name must be a non-empty, printable name (or leave it out to use the file name).")
    if args.name is not None and len(args.name) > MAX_NAME_CHARS:
        raise CRCError(f"--name is {len(args.name)} characters long; keep it under {MAX_NAME_CHARS}.")
    out = output_file(args.out, "model.pt")
    assert out is not None  # --out is required
    if out.suffix != CHECKPOINT_SUFFIX:
        raise CRCError(f"--out {out}: a checkpoint's name ends in {CHECKPOINT_SUFFIX} (the app and `info` look for "
                       f"*{CHECKPOINT_SUFFIX}), e.g. {out.with_name(out.name + CHECKPOINT_SUFFIX)}.")
    for taken in (out, sidecar_path(out)):
        if (taken.exists() or taken.is_symlink()) and not args.force:
            raise CRCError(f"--out {out}: {taken} already exists; choose another path or pass --force to replace it.")


def run(args: argparse.Namespace) -> int:
    from ..importers import import_checkpoint

    check_args(args)
    result = import_checkpoint(
        args.file, args.out, activation=args.activation.strip().lower() if args.activation else None,
        dataset=args.dataset, name=args.name.strip() if args.name else None,
        metadata={"command": f"{PROG} {shlex.join(args.argv)}"}, overwrite=args.force)
    print("\n".join(result.summary_lines()))
    return 0
