"""Experiment sweeps: TOML grids of training runs (the paper's tables), run as Ray tasks, resumable.

- :func:`load_sweep_config` (config.py): TOML -> validated :class:`SweepConfig` (trials, evaluation, resources);
- :func:`run_sweep` (runner.py): run or resume it locally or on a Ray cluster -> :class:`SweepResult`;
- :func:`execute_trial` / :func:`evaluate_trial` (trial.py): one trial, no Ray (train, certify, measure);
- :data:`METHODS` (crc_core.compare, re-exported): the certificate methods a sweep can evaluate;
- :func:`results_markdown`, :func:`read_results` (results.py): the results table and its Markdown;
- :func:`sweep_overview`, :func:`is_sweep_folder` (folder.py): what a sweep folder holds, trial by trial (for
  readers such as the app; a sweep may still be running).

Ray is imported only when a sweep runs (it is an optional dependency).
"""

from ..compare import METHODS, Method, MethodResult
from .config import EvalSpec, Resources, SweepConfig, Trial, load_sweep_config, parse_sweep_config
from .folder import SweepFolder, is_sweep_folder, sweep_overview
from .results import read_results, results_markdown
from .runner import SweepProgress, SweepResult, run_sweep
from .trial import TrialOutput, cert_column, evaluate_trial, execute_trial

__all__ = [
    "METHODS", "EvalSpec", "Method", "MethodResult", "Resources", "SweepConfig", "SweepFolder",
    "SweepProgress", "SweepResult", "Trial", "TrialOutput", "cert_column", "evaluate_trial", "execute_trial",
    "is_sweep_folder", "load_sweep_config", "parse_sweep_config", "read_results", "results_markdown", "run_sweep",
    "sweep_overview",
]
