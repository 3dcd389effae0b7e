"""Sweeps (crc_core.sweep): config validation, a two-trial sweep on a local 2-CPU Ray, resume, folder ownership,
and no Ray processes left behind."""

from __future__ import annotations

import copy
import hashlib
import json
import socket
import time
from pathlib import Path

import pytest
import ray_helpers

from crc_core.data import load_dataset, write_idx
from crc_core.errors import CRCError
from crc_core.sweep import (
    METHODS,
    SweepFolder,
    cert_column,
    load_sweep_config,
    parse_sweep_config,
    read_results,
    results_markdown,
    run_sweep,
)
from crc_core.sweep.folder import sweep_overview
from crc_core.sweep.runner import check_address
from crc_core.training_kinds import KINDS

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent

TINY = {
    "name": "tiny",
    "train": {"dataset": "embedded", "widths": "2x16", "activation": "softplus", "kind": "standard", "epochs": 1,
              "batch_size": 64, "train_limit": 300, "test_limit": 100},
    "grid": {"seed": [0, 1]},
    "evaluate": {"rho": [0.1, 0.5], "targets": ["runner-up", "all"], "images": 20},
}


def tiny(**changes) -> dict:
    doc = copy.deepcopy(TINY)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            doc[section][name] = value
        else:
            doc[section] = value
    return doc


# ----------------------------------------------------------------------------------------------------------------
# Validation: clear errors before anything runs
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc, match", [
    (tiny(colour="red"), "Unknown key 'colour' in the sweep file"),
    (tiny(train__learning_rate=0.1), "Unknown key 'learning_rate' in \\[train\\]"),
    (tiny(grid={"seeds": [0]}), "Unknown key 'seeds' in \\[grid\\]"),
    (tiny(evaluate__rhos=[0.5]), "Unknown key 'rhos' in \\[evaluate\\]"),
    (tiny(resources={"gpus": 1}), "Unknown key 'gpus' in \\[resources\\]"),
    (tiny(train__device="cuda"), "Unknown key 'device'"),
    (tiny(grid={"seed": []}), "grid empty"),
    (tiny(grid=[]), "grid is empty"),
    ({k: v for k, v in TINY.items() if k != "grid"}, "no \\[grid\\]"),
    (tiny(grid={"gamma": [0.01, -0.1]}, train__kind="crt"), "gamma=-0.1.*must be ≥ 0"),
    (tiny(grid={"widths": [[16], [16, 0]]}), "widths=\\(16, 0\\).*width ≥ 1"),
    (tiny(grid={"widths": [0]}), "width ≥ 1"),
    (tiny(grid={"widths": [["a"]]}), "widths must be like"),
    (tiny(grid={"widths": ["1x16"]}), "widths.*'1x16'"),
    (tiny(grid={"kind": ["standard", "adversarial"]}), "Unknown training kind 'adversarial'"),
    (tiny(grid={"activation": ["relu"]}, train__kind="crt"), "needs a smooth activation"),
    (tiny(grid={"activation": ["swish"]}), "Activation 'swish' cannot be trained"),
    (tiny(train__epochs=0), "epochs must be"),
    (tiny(evaluate__rho=[]), "rho is empty"),
    (tiny(evaluate__rho=[0.5, -1]), "rho must be > 0"),
    (tiny(evaluate__methods=["crc", "magic"]), "unknown value 'magic'"),
    (tiny(evaluate__targets=["nearest"]), "unknown value 'nearest'"),
    (tiny(evaluate__images=0), "images must be a whole number ≥ 1"),
    (tiny(evaluate__attacks="yes"), "attacks must be true or false"),
    (tiny(evaluate__mode=["fast", "paper"]), "mode must be one of"),
    (tiny(resources={"cpus_per_trial": 0}), "cpus_per_trial must be > 0"),
    (tiny(resources={"gpus_per_trial": -0.5}), "gpus_per_trial"),
])
def test_bad_configs_are_refused_with_a_clear_message(doc, match):
    with pytest.raises(CRCError, match=match):
        parse_sweep_config(doc)


def test_bad_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[grid\nseed = [0]\n")
    with pytest.raises(CRCError, match="not valid TOML"):
        load_sweep_config(path)
    with pytest.raises(CRCError, match="not found"):
        load_sweep_config(tmp_path / "missing.toml")


def test_grid_expansion_ids_and_hash():
    doc = tiny(grid=[{"widths": ["2x16", "3x16"], "kind": ["standard", "crt"], "gamma": [0.0, 0.01]},
                     {"widths": 32, "seed": [0, 1]}])
    cfg = parse_sweep_config(doc)
    # grid 1: 2 widths x (standard once, since it ignores γ, + crt x 2 γ) = 6; grid 2: 2 seeds
    assert len(cfg.trials) == 6 + 2
    assert len({t.trial_id for t in cfg.trials}) == len(cfg.trials)
    assert parse_sweep_config(tiny(train__lr=1)).config_hash == parse_sweep_config(tiny(train__lr=1.0)).config_hash
    assert {t.config.widths for t in cfg.trials} == {(16,), (16, 16), (32,)}
    assert all(t.config.epochs == 1 and t.config.eval_samples == 0 for t in cfg.trials)  # [train] + sweep defaults
    same = parse_sweep_config({**doc, "name": "renamed", "resources": {"cpus_per_trial": 2}})
    assert same.config_hash == cfg.config_hash  # name and resources do not change results
    moved = parse_sweep_config(tiny(train__dataset="fashion-mnist", train__data_root="/elsewhere"))
    assert moved.config_hash == parse_sweep_config(tiny(train__dataset="fashion-mnist")).config_hash
    other = parse_sweep_config(tiny(evaluate__images=21))
    assert other.config_hash != parse_sweep_config(tiny()).config_hash


# Trial ids computed on main (bfa88ae) before _slug read the kind table: sweeps resume by id, so they must not move.
ID_PIN_DOC = {"train": {"dataset": "embedded", "epochs": 1}, "grid": [
    {"widths": ["2x64", [32, 16]], "activation": ["softplus"], "kind": ["standard", "gamma", "crt", "pgd", "trades"],
     "gamma": [0, 0.01], "crt_eps": [0.5, 1.58]},
    {"widths": [64], "activation": ["relu"], "kind": ["standard", "pgd", "trades"], "adv_eps": [0.5, 1.0],
     "seed": [0, 3]},
    {"widths": ["3x128"], "activation": ["tanh"], "kind": ["crt"], "gamma": [0.1],
     "keep": ["last", "best-test-accuracy"]}]}


def test_trial_ids_are_pinned():
    ids = [t.trial_id for t in parse_sweep_config(ID_PIN_DOC).trials]
    assert len(ids) == 50
    for pinned in ("embedded-2x64-softplus-standard-s0-5ac7de49", "embedded-2x64-softplus-gamma-g0.01-s0-5c6c3a99",
                   "embedded-3x32-16-softplus-crt-g0.01-e1.58-s0-9f5c2df3", "embedded-2x64-softplus-pgd-g0-s0-0373a02d",
                   "embedded-3x32-16-softplus-trades-g0.01-s0-5612230c", "embedded-2x64-relu-pgd-g0.01-s3-e2a7243e",
                   "embedded-2x64-relu-standard-s3-56d7e4c5", "embedded-3x128-tanh-crt-g0.1-e0.5-s0-4710234d"):
        assert pinned in ids
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == (
        "6b7b7f768d5df6523b1a970e03ac039ed879cf791594463f595066f5ad9bb4b8")


def test_a_training_option_added_later_keeps_existing_sweeps_valid(monkeypatch):
    from crc_core.sweep import config as config_mod

    old = parse_sweep_config(tiny())
    # as if max_steps had been added to TrainConfig after sweeps began: at its default it is not part of the identity
    monkeypatch.setattr(config_mod, "HASHED_ALWAYS", config_mod.HASHED_ALWAYS - {"max_steps"})
    assert "max_steps" not in config_mod.trial_settings(old.trials[0].config)
    assert config_mod.trial_settings(parse_sweep_config(tiny(train__max_steps=5)).trials[0].config)["max_steps"] == 5
    assert parse_sweep_config(tiny(train__max_steps=5)).config_hash != parse_sweep_config(tiny()).config_hash


def test_presets_are_valid_or_name_what_is_missing():
    presets = sorted((REPO / "configs").glob("*.toml"))
    assert {p.stem for p in presets} >= {"smoke", "table2-mnist", "table4-table9-fashion-mnist",
                                         "table14-training-kinds", "table16-gamma"}
    for path in presets:
        text = path.read_text()
        try:
            cfg = load_sweep_config(path)
        except CRCError as exc:  # a preset may name kinds / methods other modules add later
            missing = [k for k in ("pgd", "trades") if k not in KINDS and f'"{k}"' in text]
            missing += [m for m in ("crown", "lipschitz", "smoothing") if m not in METHODS and f'"{m}"' in text]
            assert missing and any(repr(m) in str(exc) for m in missing), f"{path.name}: {exc}"
            continue
        assert cfg.trials and cfg.evaluate.rho
    smoke = load_sweep_config(REPO / "configs" / "smoke.toml")
    assert {t.config.dataset for t in smoke.trials} == {"embedded"} and len(smoke.trials) <= 4
    t9 = load_sweep_config(REPO / "configs" / "table4-table9-fashion-mnist.toml")
    first = t9.trials[0].config
    assert (first.epochs, first.batch_size, first.lr) == (30, 64, 1e-3)  # the official code's schedule


def test_results_markdown_format():
    import pandas as pd

    df = pd.DataFrame([{"trial_id": "a", "widths": "1024", "activation": "softplus", "kind": "crt", "gamma": 0.01,
                        "crt_eps": 0.5, "epochs": 30, "seed": 0, "dataset": "fashion-mnist", "test_accuracy": 0.8845,
                        cert_column("crc", "runner-up", 0.5): 0.7845, cert_column("crc", "all", 0.5): 0.78,
                        "K_lb": 1.23456, "K_ub": None}])
    md = results_markdown(df, title="Table 9")
    assert "| 2×[1024] softplus, CRT γ=0.01 ε=0.5 | 30 | 88.45% | 78.45% | 78.00% | 1.2346 | — |" in md
    assert md.splitlines()[2].startswith("| model | epochs | std acc | cert@0.5 runner-up | cert@0.5 all | K_lb")
    assert "No finished trials" in results_markdown(df.iloc[0:0])


# ----------------------------------------------------------------------------------------------------------------
# One trial's evaluation, without Ray
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    from crc_core.train import TrainConfig, train

    config = TrainConfig(widths=(16,), kind="standard", epochs=1, batch_size=64, train_limit=400, test_limit=60,
                         eval_samples=0, device="cpu")
    return train(config).model, load_dataset("embedded", "test", limit=60)


def test_evaluation_agrees_with_crc_core_evaluate(small_model):
    from crc_core.evaluate import evaluate
    from crc_core.metrics import fixed_eval_sample
    from crc_core.sweep import EvalSpec, evaluate_trial

    model, test = small_model
    spec = EvalSpec(rho=(0.05, 0.3), targets=("runner-up", "all"), images=25, attacks=True, pgd_steps=10,
                    curvature=True, curvature_min_images=2)
    row = evaluate_trial(model, test, spec)
    idx = fixed_eval_sample(len(test), 25)
    for target in spec.targets:  # the same numbers computed the other way
        for rho in spec.rho:
            ref = evaluate(model, test.images[idx], test.labels[idx], rho=rho, targets=target, attacks=False)
            assert row[cert_column("crc", target, rho)] == pytest.approx(ref.summary["certified_accuracy"])
    for rho in spec.rho:
        assert row[cert_column("crc", "all", rho)] <= row[cert_column("crc", "runner-up", rho)]
        assert row[cert_column("crc", "all", rho)] <= row[f"empirical_robust_{rho:g}"] <= 1
        assert row[f"violations_crc_{rho:g}"] == 0
    assert row[cert_column("crc", "all", 0.3)] <= row[cert_column("crc", "all", 0.05)]
    assert 0 < row["K_lb"] <= row["K_ub"] and row["curvature_pairs"] >= 1 and row["n_images"] == 25


def test_an_inflated_method_is_caught_by_the_attacks(small_model, monkeypatch):
    import dataclasses

    from crc_core.sweep import EvalSpec, evaluate_trial

    crc = METHODS["crc"]

    def inflated(model, x, y, target, mode):  # 100x CRC's radii: certifies what attacks break
        res = crc.radii(model, x, y, target, mode)
        return dataclasses.replace(res, name="inflated", radius=res.radius * 100)

    monkeypatch.setitem(METHODS, "inflated", dataclasses.replace(crc, name="inflated", radii=inflated,
                                                                 targets=("all",)))
    spec = EvalSpec(rho=(1.0,), targets=("all",), methods=("crc", "inflated"), images=25, attacks=True,
                    pgd_steps=10)
    row = evaluate_trial(*small_model, spec)
    assert row["violations_crc_1"] == 0 and row["violations_inflated_1"] > 0
    assert "violations (inflated @1)" in results_markdown(results_frame_of(row))


def results_frame_of(row):
    import pandas as pd

    return pd.DataFrame([{"widths": "16", "activation": "softplus", "kind": "standard", "epochs": 1, **row}])


# ----------------------------------------------------------------------------------------------------------------
# Output folder and address: refused before Ray starts
# ----------------------------------------------------------------------------------------------------------------
def test_other_configs_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    SweepFolder(out, parse_sweep_config(tiny())).claim()
    moved = parse_sweep_config(tiny(train__dataset="fashion-mnist", train__data_root="/elsewhere"))
    assert moved.config_hash == parse_sweep_config(tiny(train__dataset="fashion-mnist")).config_hash
    other = parse_sweep_config(tiny(evaluate__images=21))
    for resume in (False, True):
        with pytest.raises(CRCError, match="another sweep config"):
            run_sweep(other, out=out, resume=resume)
    with pytest.raises(CRCError, match=r"already holds this sweep.*resume"):
        run_sweep(parse_sweep_config(tiny()), out=out)
    with SweepFolder(out, parse_sweep_config(tiny())).lock(), pytest.raises(CRCError, match="Another process"):
        run_sweep(parse_sweep_config(tiny()), out=out, resume=True)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(CRCError, match="not a sweep folder"):
        run_sweep(parse_sweep_config(tiny()), out=stranger)
    assert sorted(p.name for p in stranger.iterdir()) == ["notes.txt"]  # nothing written into a refused folder
    assert not ray.is_initialized()


def test_unreachable_address_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(CRCError, match="Cannot reach the Ray cluster"):
        run_sweep(parse_sweep_config(tiny()), out=tmp_path / "o", address=f"ray://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 30  # generous: the probe's own timeout is 5 s
    with pytest.raises(CRCError, match="HOST:PORT"):
        check_address("no-port-here")
    assert not (tmp_path / "o").exists() and not ray.is_initialized()


class _FakeRay:
    def __init__(self, **resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


@pytest.mark.parametrize("resources, cluster, expect", [
    ({}, {"CPU": 16}, (1.0, 0.0, 16)),  # no GPU: none requested
    ({}, {"CPU": 16, "GPU": 2}, (1.0, 1.0, 2)),  # "auto": one GPU per trial
    ({"gpus_per_trial": 0.25}, {"CPU": 16, "GPU": 2}, (1.0, 0.25, 8)),  # fractions pack trials on a GPU
    ({"cpus_per_trial": 4, "gpus_per_trial": 0}, {"CPU": 16, "GPU": 2}, (4.0, 0.0, 4)),
    ({"max_concurrent": 3}, {"CPU": 16}, (1.0, 0.0, 3)),
])
def test_resources_per_trial(resources, cluster, expect):
    from crc_core.sweep.runner import trial_slots

    assert trial_slots(_FakeRay(**cluster), parse_sweep_config(tiny(resources=resources))) == expect


def test_resources_the_cluster_cannot_give_are_refused():
    from crc_core.sweep.runner import trial_slots

    with pytest.raises(CRCError, match=r"asks for 1 GPU\(s\) but the Ray cluster has 0"):
        trial_slots(_FakeRay(CPU=4), parse_sweep_config(tiny(resources={"gpus_per_trial": 1})))
    with pytest.raises(CRCError, match=r"asks for 8 CPU\(s\)"):
        trial_slots(_FakeRay(CPU=4), parse_sweep_config(tiny(resources={"cpus_per_trial": 8})))


def test_progress_counts_and_eta(monkeypatch):
    from crc_core.sweep import runner

    clock = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])
    seen = []
    tr = runner.ProgressTracker(total=6, skipped=1, callback=seen.append)
    tr.slots = 2
    tr.start("a")
    tr.start("b")
    assert seen[-1].eta_seconds is None and (seen[-1].done, seen[-1].running, seen[-1].pending) == (1, 2, 3)
    clock[0] = 10.0
    tr.end("a")  # a took 10 s; b has run 10 s, so it should end now; 3 pending on 2 slots: 15 s
    assert (seen[-1].done, seen[-1].running, seen[-1].pending) == (2, 1, 3) and seen[-1].eta_seconds == 15.0
    tr.start("c")
    clock[0] = 14.0
    tr.end("b", error="boom")  # mean 12 s; c (4 s old) has 8 s left; 2 pending on 2 slots: 12 s
    assert (seen[-1].failed, seen[-1].event, seen[-1].error) == (1, "trial_failed", "boom")
    assert seen[-1].eta_seconds == 12.0 + 8.0


# ----------------------------------------------------------------------------------------------------------------
# Real sweeps on a local 2-CPU Ray
# ----------------------------------------------------------------------------------------------------------------
local_ray = pytest.fixture(scope="module")(ray_helpers.local_ray)


def _embedded_as_idx(folder: Path) -> None:
    """A small IDX copy of the embedded subset, laid out like Fashion-MNIST's files."""
    for split, prefix, n in (("train", "train", 300), ("test", "t10k", 100)):
        ds = load_dataset("embedded", split, limit=n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", (ds.images * 255).round().byte().reshape(-1, 28, 28).numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", ds.labels.byte().numpy())


def test_two_trial_sweep_interrupt_failure_and_resume(local_ray, tmp_path):
    data = tmp_path / "fm"  # empty at first: the second trial raises in its worker
    doc = tiny(grid=[{"seed": 0}, {"dataset": "fashion-mnist", "data_root": str(data)}])
    path = tmp_path / "two.toml"
    path.write_text(_toml(doc))
    cfg = load_sweep_config(path)
    ok, bad = (t.trial_id for t in cfg.trials)
    folder, out = SweepFolder(tmp_path / "out", cfg), tmp_path / "out"

    def interrupt(p):  # Ctrl-C as soon as the first trial is running: its worker is killed
        if p.event == "trial_started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, out=out, progress=interrupt)
    assert folder.status(cfg.trials[0])["state"] == "interrupted" and not folder.is_finished(cfg.trials[0])

    events = []
    r1 = run_sweep(path, out=out, resume=True, progress=events.append)
    assert r1.finished == [ok] and list(r1.failed) == [bad] and "DataError" in r1.failed[bad]
    assert events[0].event == "start" and events[-1].event == "done"
    assert (events[-1].done, events[-1].failed, events[-1].running, events[-1].total) == (1, 1, 0, 2)
    assert any(e.event == "trial_failed" and e.trial_id == bad for e in events)
    assert folder.status(cfg.trials[1])["state"] == "failed"
    table = read_results(out)
    assert list(table["trial_id"]) == [ok] and (out / "results.csv").is_file()
    assert (out / table["checkpoint"][0]).is_file()
    assert 0 <= table[cert_column("crc", "all", 0.5)][0] <= table[cert_column("crc", "runner-up", 0.5)][0] <= 1
    from crc_core.checkpoints import load_checkpoint
    _, meta = load_checkpoint(out / "trials" / ok / "model.pt")
    assert meta["sweep"]["trial_id"] == ok and meta["run_record"]["history"]["epochs"]
    ok_mtime = (out / "trials" / ok / "model.pt").stat().st_mtime_ns

    _embedded_as_idx(data)  # the data appears: resuming reruns only the failed trial
    events.clear()
    r2 = run_sweep(path, out=out, resume=True, progress=events.append)
    assert r2.skipped == [ok] and r2.finished == [bad] and not r2.failed
    assert events[0].skipped == 1 and events[-1].done == 2
    assert (out / "trials" / ok / "model.pt").stat().st_mtime_ns == ok_mtime
    assert list(read_results(out)["trial_id"]) == [ok, bad]

    # a sweep killed without cleanup leaves status "running" and no result.json: resume reruns that trial only
    (out / "trials" / bad / "result.json").unlink()
    (out / "trials" / bad / "status.json").write_text(json.dumps({"state": "running"}))
    r3 = run_sweep(path, out=out, resume=True)
    assert r3.skipped == [ok] and r3.finished == [bad]
    assert len(r3.table) == 2 and (out / "results.md").read_text().count("2×[16] softplus, standard") == 2
    r4 = run_sweep(path, out=out, resume=True)  # nothing left: no trial runs
    assert r4.finished == [] and r4.skipped == [ok, bad]


def _toml(doc: dict) -> str:
    """Just enough TOML for the test documents (tables, [[grid]] arrays, scalars and lists)."""
    def value(v):
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in doc.items() if not isinstance(v, (dict, list))]
    for key, v in doc.items():
        for table in ([v] if isinstance(v, dict) else v if isinstance(v, list) else []):
            lines.append(f"[{key}]" if isinstance(v, dict) else f"[[{key}]]")
            lines += [f"{k} = {value(x)}" for k, x in table.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Issue 25: every field bounded (crc_core.sweep.config.LIMITS), checked fast, before any work
# ----------------------------------------------------------------------------------------------------------------
BIG = 10**400


@pytest.mark.parametrize("doc, match", [
    (tiny(grid={"seed": list(range(1000)), "gamma": [0.01 * i for i in range(1000)]}),
     "1,000,000 trials, over the sweep limit of 10,000"),
    (tiny(grid={"seed": list(range(1000)), "gamma": [0.01 * i for i in range(1000)],
                "lr": [1e-3 * (i + 1) for i in range(1000)]}), "1,000,000,000 trials"),
    (tiny(grid=[{"seed": list(range(10))}] * 2000), "the grid has 20,000 trials"),
    (tiny(grid={"seed": list(range(20_000))}), "20,000 values, over the sweep limit"),
    (tiny(grid={"widths": ["100000000x64"]}), "at most 16 hidden layers"),
    (tiny(grid={"widths": [10**30]}), "over the sweep limit of 16,384"),
    (tiny(grid={"widths": [[10**30, 4]]}), "over the sweep limit of 16,384"),
    (tiny(grid={"widths": [",".join(["8"] * 100)]}), "more than 16 hidden layers"),
    (tiny(train__epochs=10**30), "epochs must be at most 10,000"),
    (tiny(train__epochs=BIG), "epochs must be at most"),
    (tiny(grid={"seed": [2**40]}), "seed must be at most"),
    (tiny(train__gamma=BIG), "must be a finite number"),
    (tiny(train__lr=1e300), "must be at most"),
    (tiny(evaluate__images=10**30), "images must be at most 70,000"),
    (tiny(evaluate__rho=[BIG]), "rho must be a finite number"),
    (tiny(evaluate__rho=[1000.0]), "rho must be at most 100"),
    (tiny(evaluate__rho=[0.01 * i for i in range(1, 500)]), "over the sweep limit of 100"),
    (tiny(resources={"cpus_per_trial": BIG}), "cpus_per_trial must be a finite number"),
    (tiny(resources={"cpus_per_trial": 10**6}), "cpus_per_trial must be at most 1024"),
    (tiny(resources={"gpus_per_trial": 1000}), "gpus_per_trial.*at most 64"),
    (tiny(resources={"max_concurrent": 10**30}), "max_concurrent must be at most"),
])
def test_every_sweep_field_is_bounded_and_checked_fast(doc, match):
    t0 = time.perf_counter()
    with pytest.raises(CRCError, match=match) as info:
        parse_sweep_config(doc)
    assert time.perf_counter() - t0 < 2.0
    assert len(str(info.value)) < 400  # a 400-digit number is not repeated in full


@pytest.mark.parametrize("content, match", [
    (b'name = "\xff\xfe"\n', "not UTF-8"),
    (b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nest too deeply|not valid TOML"),
    (b"# " + b"x" * (2 << 20) + b"\n", "over the limit of 1,048,576 bytes"),
])
def test_sweep_files_that_are_not_sweeps_are_one_error(tmp_path, content, match):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(CRCError, match=match):
        load_sweep_config(path)
    with pytest.raises(CRCError, match="is a folder"):
        load_sweep_config(tmp_path)


@pytest.mark.parametrize("content, match", [(b"\xff\xfe not utf-8", "UnicodeDecodeError"),
                                            (b"[1, 2]", "JSON list, not a sweep's record"),
                                            (b"{" * 100_000, "unreadable")])
def test_a_broken_sweep_json_is_one_error(tmp_path, content, match):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_bytes(content)
    with pytest.raises(CRCError, match=match):
        SweepFolder(out, parse_sweep_config(tiny())).check(resume=True)
    with pytest.raises(CRCError, match=match):
        sweep_overview(out)


def test_the_lock_file_and_new_folders_go_on_every_exit(tmp_path):
    out = tmp_path / "new" / "out"
    folder = SweepFolder(out, parse_sweep_config(tiny()))
    with pytest.raises(RuntimeError, match="boom"), folder.lock():
        assert (out / ".lock").exists()
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()  # a refused run leaves nothing
    with folder.lock():
        folder.claim()
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "sweep.json"]


def test_damaged_trial_files_count_as_unfinished(tmp_path):
    config = parse_sweep_config(tiny())
    folder = SweepFolder(tmp_path / "out", config)
    folder.claim()
    first, second = config.trials
    for trial, name, content in ((first, "status.json", b"\xff\xfe"), (second, "status.json", b"[1, 2]")):
        folder.trial_dir(trial).mkdir(parents=True)
        (folder.trial_dir(trial) / name).write_bytes(content)
    assert [folder.status(t) for t in config.trials] == [{"state": "pending"}] * 2
    assert [t["state"] for t in sweep_overview(folder.root)["trials"]] == ["pending", "pending"]
    assert folder.rows() == []


def test_damaged_result_files_are_skipped_when_the_table_is_rebuilt(tmp_path):
    """read_results rebuilds the table from trials/*/result.json: a non-UTF-8, non-JSON or non-object file is
    skipped (the trial counts as not finished), never a traceback."""
    for name, content in (("a", b"\xff\xfe not utf-8"), ("b", b"[1, 2]"), ("c", b'{"trial_id": "c", "x": 1}')):
        (tmp_path / "trials" / name).mkdir(parents=True)
        (tmp_path / "trials" / name / "result.json").write_bytes(content)
    assert list(read_results(tmp_path)["trial_id"]) == ["c"]
