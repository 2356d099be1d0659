"""Re-evaluate a finished run's saved policy: ``kaleibench evaluate RUN_DIR``.

The agent is rebuilt from the run's ``spec.json`` (algorithm class path + resolved config, task,
seed), its policy (``final.pt`` or ``best.pt``) is loaded with ``torch.load(weights_only=True)``
(tensors and plain containers only, never pickled code), and greedy episodes are played on the
fixed evaluation seeds exactly as the training loop does: same backend, same number of batch
rows, same ``t_env``. So ``evaluate`` with the run's defaults reproduces its recorded final
evaluation returns bit for bit.

Every problem with the folder (missing, corrupt ``spec.json``, missing/corrupt policy file, a
policy whose tensor shapes do not fit the task) raises :class:`RunFolderError` naming the file.
When the run's ``status.json`` records checksums (runs completed by this version), the policy
file and ``final.json`` are verified against them first; a mismatch is refused, naming the file
and both digests, since ``torch.load`` itself does not notice flipped bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kaleibench.utils.seeding import eval_seeds

POLICIES = ("final", "best")
_SPEC_KEYS = ("algo", "config", "task", "seed", "variant", "n_envs", "eval_episodes")


class RunFolderError(Exception):
    """A run folder or one of its files cannot be used; the message names the file."""


@dataclass
class LoadedRun:
    """A run's agent rebuilt and holding one of its saved policies."""

    run_dir: Path
    spec: dict[str, Any]
    """The run's spec.json."""
    policy_path: Path
    """The policy file that was loaded."""
    algo: Any
    """The rebuilt :class:`~kaleibench.algos.base.Algorithm` with the policy loaded."""
    t_env: int
    """Env steps at which the policy was saved (passed to ``act``, as in the run)."""

    @property
    def task(self) -> str:
        """The run's task id."""
        return str(self.spec["task"])

    @property
    def eval_rows(self) -> int:
        """Batch rows of the run's evaluation env: ``min(4 * n_envs, eval_episodes)``."""
        return min(4 * int(self.spec["n_envs"]), int(self.spec["eval_episodes"]))


@dataclass
class EvalResult:
    """Greedy returns of ``E`` episodes."""

    seeds: list[int]
    returns: np.ndarray  # (E,) team return
    agent_returns: np.ndarray  # (E, N) per-agent return
    agent_names: list[str]

    @property
    def mean(self) -> float:
        """Mean team return."""
        return float(self.returns.mean())

    def interval(self, confidence: float = 0.95) -> tuple[float, float, float]:
        """Mean team return with a Student-t interval on ``E - 1`` dof (NaN bounds if E < 2)."""
        from kaleibench.analysis.significance import t_interval

        iv = t_interval(self.returns, confidence)
        return iv.point, iv.low, iv.high


def read_spec(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``spec.json``, validated enough to rebuild the agent.

    Raises:
        RunFolderError: If the folder or file is missing, not JSON, or lacks a needed key.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    path = run_dir / "spec.json"
    if not path.is_file():
        raise RunFolderError(f"{path}: missing (not a run folder?)")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: corrupt JSON ({exc})") from exc
    if not isinstance(spec, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    missing = [k for k in _SPEC_KEYS if k not in spec]
    if missing:
        raise RunFolderError(f"{path}: corrupt spec, missing key(s) {', '.join(missing)}")
    return spec


def _read_final(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "final.json"
    try:
        final = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        final = {}  # only used for t_env; the policy files are what matter
    return final if isinstance(final, dict) else {}


def read_policy(path: Path) -> dict[str, Any]:
    """The ``policy`` entry of a ``final.pt``/``best.pt`` file (safe loader: weights only).

    Raises:
        RunFolderError: If the file is missing or is not a policy file.
    """
    import torch

    if not path.is_file():
        raise RunFolderError(f"{path}: no such policy file (has the run completed?)")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    # torch.load raises many types on a damaged file (RuntimeError, UnpicklingError, EOFError,
    # BadZipFile, ...); every one of them means the same thing to the user.
    except Exception as exc:  # noqa: BLE001
        raise RunFolderError(
            f"{path}: corrupt policy file (torch.load with weights_only=True failed: "
            f"{type(exc).__name__})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("policy"), dict):
        raise RunFolderError(f"{path}: not a policy file (expected {{'policy': {{...}}}})")
    return payload["policy"]


def verify_run_files(run_dir: Path, policy_path: Path) -> None:
    """Check the policy file and final.json against the digests of the run's status.json.

    Raises:
        RunFolderError: Naming the file whose content does not match (or status.json, if it
            is unreadable).
    """
    from kaleibench.harness.integrity import CorruptFileError, verify_files

    status_path = run_dir / "status.json"
    if not status_path.is_file():
        return
    try:
        status = json.loads(status_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{status_path}: corrupt JSON ({exc})") from exc
    if not isinstance(status, dict):
        raise RunFolderError(f"{status_path}: expected a JSON object")
    try:
        verify_files(run_dir, status, (policy_path.name, "final.json"))
    except CorruptFileError as exc:
        raise RunFolderError(f"{exc}; refusing to use it") from exc


def _build_algo(spec: dict[str, Any], spec_path: Path) -> tuple[Any, Any]:
    """(env for evaluation, algorithm) rebuilt from a spec.json mapping."""
    from kaleibench.algos import variant_from_mapping
    from kaleibench.algos.base import EnvInfo
    from kaleibench.config import ConfigError
    from kaleibench.envs import make
    from kaleibench.registry import UnknownIdError

    rows = min(4 * int(spec["n_envs"]), int(spec["eval_episodes"]))
    try:
        variant = variant_from_mapping({"algo": spec["algo"], "config": spec["config"]},
                                       str(spec["variant"]), str(spec_path))
        env = make(str(spec["task"]), n_envs=rows, seed=int(spec["seed"]),
                   backend=str(spec.get("backend", "numpy")))
        algo = variant.build(EnvInfo.of(env, int(spec.get("t_max", 0))), int(spec["seed"]))
    except ConfigError as exc:
        raise RunFolderError(str(exc)) from exc
    except (UnknownIdError, ValueError, TypeError, KeyError) as exc:
        raise RunFolderError(f"{spec_path}: cannot rebuild the agent ({exc})") from exc
    return env, algo


def load_run(run_dir: str | Path, policy: str = "final") -> tuple[LoadedRun, Any]:
    """Rebuild a run's agent and load its ``final`` or ``best`` policy.

    Args:
        run_dir: A run folder (``.../<variant>/<task>/seed_<k>``) holding ``spec.json`` and the
            policy files.
        policy: ``"final"`` (``final.pt``) or ``"best"`` (``best.pt``, the best-evaluated one).

    Returns:
        The loaded run and the batched evaluation env (rows as in the run's evaluation).

    Raises:
        RunFolderError: Naming the file at fault; see the module docstring.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    env, algo = _build_algo(spec, run_dir / "spec.json")
    path = run_dir / f"{policy}.pt"
    verify_run_files(run_dir, path)
    state = read_policy(path)
    try:
        algo.load_policy_state(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[:3]
        raise RunFolderError(
            f"{path}: policy does not fit task {spec['task']} / variant {spec['variant']} "
            f"({' '.join(first)})") from exc
    final = _read_final(run_dir)
    key = "t_env" if policy == "final" else "best_eval_t_env"
    t_env = int(final.get(key, spec.get("t_max", 0)))
    return LoadedRun(run_dir, spec, path, algo, max(t_env, 0)), env


def play(env: Any, algo: Any, seeds: Sequence[int], t_env: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy episodes on ``seeds``, ``env.n_envs`` rows at a time (as ``rollout.evaluate``).

    Returns:
        Team returns ``(E,)`` and per-agent returns ``(E, N)``.
    """
    from kaleibench.train.rollout import collect

    b = env.n_envs
    padded = list(seeds) + [seeds[-1]] * ((-len(seeds)) % b)
    team, per_agent = [], []
    for k in range(0, len(padded), b):
        ro = collect(env, algo, t_env, explore=False, seeds=padded[k : k + b])
        team.append(ro.returns)  # (B,)
        per_agent.append(ro.agent_returns)  # (B, N)
    e = len(seeds)
    return np.concatenate(team)[:e], np.concatenate(per_agent)[:e]


def evaluate_run(
    run_dir: str | Path, policy: str = "final", episodes: int | None = None,
    seeds: Sequence[int] | None = None,
) -> EvalResult:
    """Play greedy episodes with a run's saved policy.

    Args:
        run_dir: The run folder.
        policy: ``"final"`` or ``"best"``.
        episodes: Number of episodes on the fixed eval seeds ``eval_seeds(episodes)``; default
            the run's ``eval_episodes`` (then ``policy="final"`` reproduces ``final_returns``).
        seeds: Explicit episode seeds instead (``episodes`` must then be None or match).

    Returns:
        The team and per-agent returns of every episode.
    """
    import torch

    run, env = load_run(run_dir, policy)
    if seeds is not None and episodes is not None and episodes != len(seeds):
        raise ValueError(f"--episodes {episodes} but {len(seeds)} seeds given")
    if seeds is None:
        seeds = eval_seeds(episodes if episodes is not None else int(run.spec["eval_episodes"]))
    if not seeds:
        raise ValueError("at least one episode is needed")
    with torch.no_grad():
        returns, agent_returns = play(env, run.algo, list(seeds), run.t_env)
    team = list(run.spec.get("task_spec", {}).get("team", [])) or [
        f"agent_{i}" for i in range(agent_returns.shape[1])]
    return EvalResult([int(s) for s in seeds], returns, agent_returns, team)


def format_result(result: EvalResult, run: str, policy: str) -> str:
    """Human-readable summary: mean team return with its 95% t-CI, then per-agent means."""
    mean, low, high = result.interval(0.95)
    n = len(result.returns)
    shown = ", ".join(str(s) for s in result.seeds[:3]) + (", ..." if n > 3 else "")
    lines = [
        f"{run} ({policy} policy): {n} greedy episode(s), seeds [{shown}]",
        f"team return: {mean:.4f}  95% t-CI [{low:.4f}, {high:.4f}]  "
        f"(std {result.returns.std():.4f})",
        "per-agent return (mean over episodes):",
    ]
    for name, value in zip(result.agent_names, result.agent_returns.mean(axis=0), strict=True):
        lines.append(f"  {name:<12} {value:.4f}")
    return "\n".join(lines)
