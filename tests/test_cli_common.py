"""The CLI package: one table of commands, choices from the library's constants, shared validators, tqdm progress,
and the only place in crc_core that prints or parses arguments."""

from __future__ import annotations

import argparse
import ast
import io
from pathlib import Path

import pytest

from crc_core import cli
from crc_core.certify import SOLVER_MODES, TARGET_MODES
from crc_core.cli import COMMANDS, Command, Progress, build_parser, main
from crc_core.cli.common import output_file, require_at_least_one
from crc_core.data import DATASET_NAMES
from crc_core.errors import CRCError
from crc_core.training_kinds import KINDS

REPO = Path(__file__).resolve().parent.parent
CRC_CORE = REPO / "crc_core"


def _choices(command: str, flag: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if flag in a.option_strings)
    return tuple(action.choices)


def test_every_command_registered_once() -> None:
    names = [c.name for c in COMMANDS]
    assert names[:3] == ["train", "info", "certify"] and len(set(names)) == len(names)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(names)


def test_choices_come_from_the_library() -> None:
    assert _choices("train", "--kind") == tuple(KINDS)
    assert _choices("train", "--eval-mode") == SOLVER_MODES
    assert _choices("train", "--dataset") == DATASET_NAMES
    assert _choices("certify", "--targets") == TARGET_MODES
    assert _choices("certify", "--mode") == SOLVER_MODES


def test_a_new_command_is_one_line_in_the_table(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    def add(sub: argparse._SubParsersAction) -> None:
        sub.add_parser("hello").add_argument("--n", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        require_at_least_one("--n", args.n)
        print("hello " * args.n)
        return 0

    monkeypatch.setattr(cli, "COMMANDS", [*COMMANDS, Command("hello", add, run)])
    assert main(["hello", "--n", "2"]) == 0 and "hello hello" in capsys.readouterr().out
    assert main(["hello", "--n", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --n must be at least 1 (a whole number ≥ 1), got 0."


def test_threads_message_is_the_same_for_every_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    errors = []
    for argv in (["train", "--dry-run", "--quiet", "--out", str(tmp_path / "x.pt"), "--threads", "0"],
                 ["certify", "--checkpoint", str(tmp_path / "none.pt"), "--threads", "0"]):
        assert main(argv) == 2
        errors.append(capsys.readouterr().err.strip())
    assert errors[0] == errors[1] == "error: --threads must be at least 1 (a whole number ≥ 1), got 0."


def test_train_out_is_checked_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["train", "--dry-run", "--quiet", "--out", str(blocker / "m.pt")]) == 2
    out, err = capsys.readouterr()
    assert "cannot create its folder" in err and "training" not in err and out == ""


def test_output_file_checks(tmp_path: Path) -> None:
    assert output_file(None, "x.csv") is None
    with pytest.raises(CRCError, match="is a folder"):
        output_file(str(tmp_path), "x.csv")
    out = output_file(str(tmp_path / "new" / "r.csv"), "x.csv", create_folder=True)
    assert out is not None and out.parent.is_dir()


def test_progress_in_a_log_is_plain_lines() -> None:
    buf = io.StringIO()
    p = Progress(4, "certifying", "img", stream=buf)
    p.update(2)
    p.write("a message")
    p.update(4)
    p.close()
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and len(lines) == 3
    assert lines[0].startswith("certifying:  50%|") and "2/4" in lines[0] and lines[1] == "a message"
    assert "4/4" in lines[2]


def _calls(tree: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            names.add(n.module.split(".")[0])
    return names


def test_only_the_cli_prints_or_parses_arguments() -> None:
    offenders = []
    for path in sorted(CRC_CORE.rglob("*.py")):
        rel = path.relative_to(CRC_CORE).as_posix()
        if rel.startswith("cli/") or rel == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        if "print" in _calls(tree) or "argparse" in _imports(tree):
            offenders.append(rel)
    assert offenders == []
