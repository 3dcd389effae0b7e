"""``python -m crc_core import``: a foreign MLP file becomes our checkpoint; each refusal: one line, exit 2, no file."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from crc_core.activations import CURVATURE_ACTIVATIONS
from crc_core.checkpoints import load_checkpoint
from crc_core.cli import COMMANDS, main
from crc_core.cli.import_ import ACTIVATION_CHOICES, DATASET_CHOICES
from crc_core.importers import DATASET_SHAPES, IMPORTED_KIND
from crc_core.models import FORWARD_ONLY_ACTIVATIONS, MLP

REPO = Path(__file__).resolve().parent.parent
OFFICIAL = "fashion-mnist_3_sigmoid_L2_1.58_EIGEN_0.01"  # an official file name: dataset, depth, activation


def official_state_dict(dims: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights in the official layout: fc1.weight, fc1.bias, ... (torch.save(model.state_dict()))."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(dims), start=1):
        sd[f"fc{i}.weight"] = torch.randn(n_out, n_in, generator=g) / n_in**0.5
        sd[f"fc{i}.bias"] = torch.randn(n_out, generator=g) * 0.1
    return sd


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_official_file_imports_with_defaults_from_its_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sd = official_state_dict([784, 24, 24, 10])
    src = tmp_path / OFFICIAL
    torch.save(sd, src)
    out = tmp_path / "models" / "official.pt"
    assert main(["import", str(src), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "from the file name" in stdout and f"Wrote {out}" in stdout
    model, meta = load_checkpoint(out)
    assert model.config() == {"in_dim": 784, "widths": [24, 24], "n_classes": 10, "activation": "sigmoid"}
    for i in range(3):
        assert torch.equal(model.layers[i].weight, sd[f"fc{i + 1}.weight"])
    # the record has a trained model's keys (what pickers and `info` read) and says where the weights came from
    assert meta["kind"] == IMPORTED_KIND and meta["trained_kind"] == "crt"
    assert (meta["dataset"], meta["gamma"], meta["crt_eps"], meta["epochs"], meta["metrics"]) == (
        "fashion-mnist", 0.01, 1.58, None, {})
    assert meta["name"] == OFFICIAL and "CRT γ=0.01 ε=1.58" in meta["label"] and "imported" in meta["label"]
    assert meta["command"].startswith("python -m crc_core import ") and meta["command"].endswith(str(out))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["source"]["sha256"] == sha and meta["source"]["file"] == OFFICIAL
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert f"imported from    {OFFICIAL}" in info and sha in info and "fc1.weight" in info
    assert "test accuracy" not in info  # never evaluated: no row of n/a's


def test_own_sequential_mlp_with_flags_and_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 10))
    src = tmp_path / "my_mlp.pth"
    torch.save(net.state_dict(), src)
    out = tmp_path / "mine.pt"
    assert main(["import", str(src), "--activation", "Tanh", "--dataset", "FashionMNIST", "--out", str(out)]) == 0
    model, meta = load_checkpoint(out)
    x = torch.rand(5, 784)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x))
    assert meta["name"] == "my_mlp" and meta["dataset"] == "fashion-mnist"  # name defaults to the file stem
    assert (meta["trained_kind"], meta["gamma"], meta["crt_eps"]) == (None, None, None)  # unknown, not "standard"
    assert "training unknown" in meta["label"]
    out2 = tmp_path / "named.pt"
    assert main(["import", str(src), "--activation", "tanh", "--dataset", "mnist", "--name", " my net ",
                 "--out", str(out2)]) == 0
    assert load_checkpoint(out2)[1]["name"] == "my net"
    # --force replaces an existing output
    assert main(["import", str(src), "--activation", "softplus", "--dataset", "mnist", "--out", str(out2),
                 "--force"]) == 0
    assert load_checkpoint(out2)[0].activation_name == "softplus"
    capsys.readouterr()


def _cnn() -> dict[str, torch.Tensor]:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).state_dict()


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# (source file name, what it holds, extra flags, expected message): each must be refused with one line
REFUSALS = {
    "activation": (OFFICIAL, "ok", ["--activation", "swish"], "--activation swish: choose one of softplus"),
    "dataset": (OFFICIAL, "ok", ["--dataset", "cifar10"], "--dataset cifar10: choose one of mnist, fashion-mnist"),
    "empty name": (OFFICIAL, "ok", ["--name", " "], "--name must be a non-empty"),
    "long name": (OFFICIAL, "ok", ["--name", "x" * 200], "keep it under"),
    "no activation": ("weights.pt", "ok", ["--dataset", "mnist"], "the activation is not stored"),
    "no dataset": ("weights.pt", "ok", ["--activation", "tanh"], "the dataset is not stored"),
    "depth": ("mnist_2_softplus", "ok", [], "the file name says 2 layers but the weights have 3"),
    "classes": ("five.pt", "five", ["--activation", "tanh", "--dataset", "mnist"], "5 outputs but mnist has 10"),
    "missing": ("missing.pt", None, ["--activation", "tanh", "--dataset", "mnist"], "not found"),
    "cnn": ("cnn.pt", "cnn", ["--activation", "tanh", "--dataset", "mnist"], "this is a CNN"),
    "input size": ("small.pt", "small", ["--activation", "tanh", "--dataset", "mnist"], "takes 100 inputs"),
    "code": (OFFICIAL, "code", [], "Nothing in it was executed"),
    "text": ("notes.pt", "text", ["--activation", "tanh", "--dataset", "mnist"], "is a text file"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_are_one_line_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        case: str) -> None:
    name, content, flags, match = REFUSALS[case]
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    src, marker = src_dir / name, tmp_path / "executed"
    if content == "ok":
        torch.save(official_state_dict([784, 16, 16, 10]), src)
    elif content == "cnn":
        torch.save(_cnn(), src)
    elif content == "five":
        torch.save(official_state_dict([784, 16, 5]), src)
    elif content == "small":
        torch.save(official_state_dict([100, 16, 10]), src)
    elif content == "code":
        torch.save({**official_state_dict([784, 16, 16, 10]), "hook": Payload(marker)}, src)
    elif content == "text":
        src.write_text("fc1.weight = [[0.1, 0.2]]\n")
    before = written(src_dir)
    assert main(["import", str(src), *flags, "--out", str(out_dir / "model.pt")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert match in err, err
    assert written(out_dir) == [] and written(src_dir) == before and not marker.exists()


def test_output_refusals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "mnist_2_softplus.pt"
    torch.save(official_state_dict([784, 16, 10]), src)
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"keep")
    cases = {
        str(tmp_path): "is a folder",
        str(tmp_path / "model.pth"): "ends in .pt",
        str(taken): "already exists; choose another path or pass --force",
    }
    for out, match in cases.items():
        assert main(["import", str(src), "--out", out]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    assert taken.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == [src.name, "taken.pt"]
    assert main(["import", str(src), "--out", str(src), "--force"]) == 2
    assert "is the file being imported" in capsys.readouterr().err


def test_choices_come_from_the_library() -> None:
    assert (*CURVATURE_ACTIVATIONS, *FORWARD_ONLY_ACTIVATIONS) == ACTIVATION_CHOICES
    assert DATASET_CHOICES == tuple(DATASET_SHAPES) == ("mnist", "fashion-mnist")
    for act in ACTIVATION_CHOICES:  # every choice builds a model
        assert MLP(4, [3], 2, act).activation_name == act
    assert [c.name for c in COMMANDS].count("import") == 1


def test_help_shows_an_official_example() -> None:
    res = subprocess.run([sys.executable, "-m", "crc_core", "import", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "import mnist_2_softplus_L2_1.58_EIGEN_0.005 --out" in res.stdout
    assert "--activation" in res.stdout and "refused" in res.stdout


# ---------------------------------------------------------------------------------------------- issue 25
def test_an_existing_metadata_copy_is_not_overwritten_without_force(tmp_path: Path, capsys) -> None:
    src = tmp_path / "mnist_2_softplus.pt"
    torch.save(official_state_dict([784, 16, 10]), src)
    out = tmp_path / "x.pt"
    (tmp_path / "x.pt.json").write_text("mine")
    assert main(["import", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "x.pt.json already exists" in err and err.count("\n") == 1, err
    assert (tmp_path / "x.pt.json").read_text() == "mine" and not out.exists()
    assert main(["import", str(src), "--out", str(out), "--force"]) == 0
    assert (tmp_path / "x.pt.json").read_text() != "mine"


def _with_extra_entry(sd: dict[str, torch.Tensor], ops: bytes) -> bytes:
    """torch.save(sd) with ``"x": <the object the pickle opcodes ``ops`` build>`` added to its top dict."""
    import io

    import hostile_files

    buf = io.BytesIO()
    torch.save(sd, buf)
    # the top dict is on the stack before STOP: push "x", the object, SETITEM, STOP
    return hostile_files.replace_pickle(buf.getvalue(), lambda old: old[:-1] + b"X\x01\x00\x00\x00x" + ops + b"s.")


@pytest.mark.parametrize(("case", "says"), [("5000-digit layer number", None), ("5000 nested lists", "nests more than"),
                                            ("100000 nested lists", "nests more than")])
def test_odd_structures_are_one_line_not_a_traceback(tmp_path: Path, capsys, case: str, says: str | None) -> None:
    sd = official_state_dict([784, 16, 10])
    src = tmp_path / "odd.pt"
    if case.startswith("5000-digit"):  # the layer order compares such numbers without int()
        sd = {k.replace("fc1", "fc1" + "0" * 5000).replace("fc2", "fc2" + "0" * 5000): v for k, v in sd.items()}
        torch.save(sd, src)
    else:
        depth = 5000 if case.startswith("5000") else 100_000
        src.write_bytes(_with_extra_entry(sd, b"]" * depth + b"a" * (depth - 1)))
    rc = main(["import", str(src), "--activation", "softplus", "--dataset", "mnist", "--out",
               str(tmp_path / "out" / "m.pt")])
    err = capsys.readouterr().err
    if says is None:
        assert rc == 0, err
        assert load_checkpoint(tmp_path / "out" / "m.pt")[0].describe() == "2x[16] softplus"
    else:
        assert rc == 2 and says in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()


def test_a_safetensors_mlp_imports_with_the_same_weights(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    sd = official_state_dict([784, 16, 16, 10], seed=3)
    src = tmp_path / "fashion-mnist_3_tanh.safetensors"
    save_file(sd, src)
    out = tmp_path / "m.pt"
    assert main(["import", str(src), "--out", str(out)]) == 0, capsys.readouterr().err
    model, meta = load_checkpoint(out)
    assert model.config() == {"in_dim": 784, "widths": [16, 16], "n_classes": 10, "activation": "tanh"}
    for i in range(3):
        assert torch.equal(model.layers[i].weight, sd[f"fc{i + 1}.weight"])
        assert torch.equal(model.layers[i].bias, sd[f"fc{i + 1}.bias"])
    assert meta["source"]["container"] == "safetensors"
    assert meta["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
