"""train(spec): one run from scratch or from its last checkpoint, to final.json.

Files (all atomic): spec.json, status.json (heartbeat), metrics.jsonl (append-only; cut back to
the checkpoint's cursor on resume so a resumed run writes exactly the rows an uninterrupted one
would), checkpoint.pt (full state), best.pt / final.pt (policies), final.json.

Integrity (see :mod:`kaleibench.harness.integrity`): the checkpoint carries a digest of its
payload and of metrics.jsonl up to its cursor. A checkpoint that fails either check is never
resumed from: it is moved aside to ``checkpoint.pt.corrupt`` and the run restarts from scratch
(deterministic, so the result is the same), with a warning that names the file and the problem.
A completed run's status.json records the digests of final.json, the policies and metrics.jsonl.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from kaleibench.algos.base import Algorithm, EnvInfo
from kaleibench.envs import make
from kaleibench.harness.integrity import (
    SEAL_KEY,
    CorruptFileError,
    file_digests,
    load_sealed,
    seal,
    sha256_file,
)
from kaleibench.harness.lock import my_identity
from kaleibench.train.metrics import IntervalStats
from kaleibench.train.rollout import collect, evaluate
from kaleibench.train.spec import RunSpec
from kaleibench.train.timing import RunClock
from kaleibench.utils import io
from kaleibench.utils.fingerprint import numerics_fingerprint
from kaleibench.utils.interrupt import GracefulStop
from kaleibench.utils.memory import keep_freed_memory
from kaleibench.utils.provenance import git_sha, package_versions, platform_string
from kaleibench.utils.seeding import eval_seeds, numpy_stream
from kaleibench.utils.threads import use_one_thread

HEARTBEAT_SECONDS = 5.0
log = logging.getLogger(__name__)


class MetricsSink(Protocol):
    """Somewhere else the metrics rows go (e.g. TensorBoard); metrics.jsonl stays the record."""

    def write(self, row: dict[str, Any]) -> None:
        """Take one metrics row (the dict just appended to metrics.jsonl)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


@dataclass
class LoopState:
    """Counters of the loop itself (checkpointed with the learner)."""

    t_env: int = 0
    episodes: int = 0
    next_eval: int = 0
    next_log: int = 0
    next_checkpoint: int = 0
    best_return: float = -math.inf
    best_t_env: int = -1
    last_eval_t: int = -1
    last_eval_return: float = math.nan
    metrics_bytes: int = 0
    metrics_sha256: str = ""
    """SHA-256 of metrics.jsonl's first ``metrics_bytes`` bytes (verified on resume)."""
    wall_time: float = 0.0
    cpu_time: float = 0.0
    """CPU seconds of the run's processes up to the checkpoint, over all (re)starts."""
    train_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    """Sums of the learner's metrics since the last train row (:class:`IntervalStats`)."""


def write_status(run_dir: Path, state: str, t_env: int, error: str | None = None,
                 **extra: Any) -> None:
    """status.json: pending / running (+heartbeat) / completed / failed (+error) / interrupted.

    ``host``, ``pid`` and ``pid_start`` let a later invocation on the same host tell a live run
    from a dead one at once (even if the pid was reused), instead of waiting for the heartbeat
    to go stale.
    """
    io.atomic_write_json(run_dir / "status.json", {
        "state": state, "t_env": t_env, "heartbeat": time.time(), "error": error,
        **my_identity(), **extra})


def spec_json(spec: RunSpec) -> dict[str, Any]:
    """The resolved, provenance-carrying description of a run."""
    return {
        "run_id": spec.run_id, "suite": spec.suite, "variant": spec.variant.name,
        "task": spec.task, "seed": spec.seed, "t_max": spec.t_max, "n_envs": spec.n_envs,
        "eval_interval": spec.eval_interval, "eval_episodes": spec.eval_episodes,
        "log_interval": spec.log_interval, "backend": spec.backend,
        "config": spec.variant.to_json()["config"], "algo": spec.variant.algo,
        "task_spec": spec.identity()["task"], "config_hash": spec.config_hash,
        "versions": package_versions(), "git_sha": git_sha(), "platform": platform_string(),
        "python": platform_string().split("-py")[-1], "numerics": numerics_fingerprint(),
        **({"base_variant": spec.variant.base, "overrides": dict(spec.variant.overrides)}
           if spec.variant.overrides else {}),
    }


def note_resume_numerics(run_dir: Path) -> None:
    """Record in spec.json when a run resumes under another numerics fingerprint.

    Such a run is a valid result but no longer bit-reproducible on either machine alone, so the
    regression check must not compare it exactly; ``numerics_history`` lists every fingerprint
    hash the run has trained under.
    """
    path = run_dir / "spec.json"
    try:
        spec = io.read_json(path)
    except (OSError, ValueError):
        return
    now = numerics_fingerprint()["hash"]
    history = spec.get("numerics_history") or [(spec.get("numerics") or {}).get("hash")]
    if now not in history:
        spec["numerics_history"] = [*history, now]
        io.atomic_write_json(path, spec)


class Run:
    """One training run; ``run()`` resumes from ``checkpoint.pt`` when present."""

    def __init__(self, spec: RunSpec, root: str | Path, progress: bool = True) -> None:
        self.spec, self.dir, self.progress = spec, spec.run_dir(root), progress
        self.env = make(spec.task, n_envs=spec.n_envs, seed=spec.seed, backend=spec.backend)
        n_eval = min(spec.n_envs * 4, spec.eval_episodes)
        self.eval_env = make(spec.task, n_envs=n_eval, seed=spec.seed, backend=spec.backend)
        if not spec.variant.needs_subtasks:  # nothing reads the entity view: skip building it
            self.env.entity_view = self.eval_env.entity_view = False
        self.algo: Algorithm = spec.variant.build(EnvInfo.of(self.env, spec.t_max), spec.seed)
        self.seed_rng = numpy_stream(spec.seed, "env")
        self.state = LoopState()
        self.best_policy: dict[str, Any] | None = None
        self.train_returns: list[float] = []
        self.metrics_sink: MetricsSink | None = None
        self.notes: list[str] = []
        """Loud, named explanations of a restart (corrupt checkpoint, metrics out of step)."""
        self.clock: RunClock | None = None

    # ---------------------------------------------------------------- persistence
    def save_checkpoint(self) -> None:
        """Full state: learner (nets, targets, optimiser, buffer, RNGs), loop, seed stream."""
        metrics = self.dir / "metrics.jsonl"
        self.state.metrics_sha256 = sha256_file(metrics, self.state.metrics_bytes)
        payload = seal({
            "algo": self.algo.state_dict(), "loop": asdict(self.state),
            "seed_rng": self.seed_rng.bit_generator.state, "best_policy": self.best_policy,
            "train_returns": self.train_returns, "run_id": self.spec.run_id,
        })
        io.atomic_save(self.dir / "checkpoint.pt", lambda p: torch.save(payload, p))

    def load_checkpoint(self) -> bool:
        """Resume from checkpoint.pt (safe loader: no pickled code); False if none.

        A checkpoint that fails its checksum, or whose metrics.jsonl prefix is missing, short or
        altered, is moved aside and False is returned: the run restarts from scratch, loudly.
        """
        path = self.dir / "checkpoint.pt"
        if not path.exists():
            return False
        try:
            payload = load_sealed(path)
            loop = LoopState(**payload["loop"])
            self._check_metrics(loop)
        except (CorruptFileError, KeyError, TypeError) as exc:
            self._reject_checkpoint(path, exc)
            return False
        if payload["run_id"] != self.spec.run_id:
            raise ValueError(f"{path}: checkpoint of {payload['run_id']}, not {self.spec.run_id}")
        self.algo.load_state_dict(payload["algo"])
        self.state = loop
        self.seed_rng.bit_generator.state = payload["seed_rng"]
        self.best_policy = payload["best_policy"]
        self.train_returns = list(payload["train_returns"])
        io.truncate_file(self.dir / "metrics.jsonl", self.state.metrics_bytes)
        return True

    def _check_metrics(self, loop: LoopState) -> None:
        """metrics.jsonl must hold, byte for byte, the rows the checkpoint's cursor covers."""
        metrics = self.dir / "metrics.jsonl"
        if not metrics.is_file():
            raise CorruptFileError(metrics, f"missing, but the checkpoint covers "
                                            f"{loop.metrics_bytes} bytes of it")
        size = metrics.stat().st_size
        if size < loop.metrics_bytes:
            raise CorruptFileError(metrics, f"{size} bytes, shorter than the checkpoint's "
                                            f"cursor ({loop.metrics_bytes} bytes)")
        found = sha256_file(metrics, loop.metrics_bytes)
        if found != loop.metrics_sha256:
            raise CorruptFileError(metrics, f"first {loop.metrics_bytes} bytes differ from "
                                            "what the checkpoint recorded",
                                   loop.metrics_sha256 or "(none recorded)", found)

    def _reject_checkpoint(self, path: Path, exc: Exception) -> None:
        """Never resume from an untrusted state: move it aside and say so."""
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        note = (f"restarted from scratch: {exc}" if isinstance(exc, CorruptFileError)
                else f"restarted from scratch: {path}: malformed checkpoint ({exc!r})")
        note += f"; the checkpoint was moved to {aside.name}"
        self.notes.append(note)
        log.warning("%s", note)

    def log(self, row: dict[str, Any]) -> None:
        """Append a metrics row and advance the cursor; mirror it to the sink, if any."""
        if self.clock is not None:
            row.update(self.clock.fields(str(row.get("kind")), int(row.get("t_env", 0))))
        self.state.metrics_bytes = io.append_jsonl(self.dir / "metrics.jsonl", row)
        if self.metrics_sink is not None:
            self.metrics_sink.write(row)

    # ---------------------------------------------------------------- phases
    def run_eval(self, n_episodes: int, offset: int = 0) -> np.ndarray:
        """Greedy returns on the fixed eval seeds (from ``offset`` on)."""
        return evaluate(self.eval_env, self.algo, eval_seeds(n_episodes, offset),
                        self.state.t_env)

    def eval_and_log(self) -> None:
        """Periodic greedy evaluation; keeps the best-evaluated policy."""
        st = self.state
        returns = self.run_eval(self.spec.eval_episodes)
        mean = float(returns.mean())
        n = self.env.n_agents
        self.log({"kind": "eval", "t_env": st.t_env, "return_mean": mean,
                  "return_std": float(returns.std()), "return_per_agent_mean": mean / n,
                  "returns": [float(r) for r in returns], "n_episodes": len(returns)})
        st.last_eval_t, st.last_eval_return = st.t_env, mean
        if mean > st.best_return:
            st.best_return, st.best_t_env = mean, st.t_env
            self.best_policy = self.algo.policy_state()

    def train_step(self) -> dict[str, float]:
        """Collect one episode per row (ε-greedy) and let the learner update."""
        seeds = [int(s) for s in self.seed_rng.integers(0, 2**31 - 1, size=self.spec.n_envs)]
        ro = collect(self.env, self.algo, self.state.t_env, explore=True, seeds=seeds)
        self.state.t_env += ro.steps
        self.state.episodes += self.spec.n_envs
        self.train_returns.extend(float(r) for r in ro.returns)
        stats = self.algo.train_on(ro.batch, self.state.t_env)
        IntervalStats(self.state.train_stats).add(stats)
        return stats

    # ---------------------------------------------------------------- driver
    def _maybe_log_train(self, stats: dict[str, float]) -> None:
        st = self.state
        if st.t_env < st.next_log:
            return
        row: dict[str, Any] = {"kind": "train", "t_env": st.t_env, "episodes": st.episodes}
        if self.train_returns:
            row["return_mean"] = float(np.mean(self.train_returns))
        interval = IntervalStats(self.state.train_stats)
        row.update(interval.summary())  # means over the interval's updates, sums of counts
        interval.clear()
        self.log(row)
        self.train_returns = []
        st.next_log = st.t_env + self.spec.log_interval

    def _finish(self, clock: RunClock) -> dict[str, Any]:
        st, spec = self.state, self.spec
        if st.last_eval_t != st.t_env:
            self.eval_and_log()
        final_rows = [r for r in io.read_jsonl(self.dir / "metrics.jsonl")
                      if r.get("kind") == "eval" and r.get("t_env") == st.t_env]
        final_returns = final_rows[-1]["returns"]
        io.atomic_save(self.dir / "final.pt",
                       lambda p: torch.save({"policy": self.algo.policy_state()}, p))
        if self.best_policy is not None:
            self.algo.load_policy_state(self.best_policy)
            best = self.best_policy
            io.atomic_save(self.dir / "best.pt", lambda p: torch.save({"policy": best}, p))
        # the best policy was selected on the first eval_episodes seeds: re-evaluate it on the
        # next 10x seeds, disjoint from those, so that the selection does not bias the score
        absolute = self.run_eval(10 * spec.eval_episodes, offset=spec.eval_episodes)
        n = self.env.n_agents
        wall, cpu = clock.totals()
        final = {
            "run_id": spec.run_id, "suite": spec.suite, "variant": spec.variant.name,
            "task": spec.task, "seed": spec.seed, "t_env": st.t_env, "n_agents": n,
            "final_return": float(np.mean(final_returns)),
            "final_return_per_agent": float(np.mean(final_returns)) / n,
            "final_returns": final_returns,
            "absolute_return": float(absolute.mean()),
            "absolute_return_per_agent": float(absolute.mean()) / n,
            "absolute_returns": [float(r) for r in absolute], "best_eval_t_env": st.best_t_env,
            "steps_per_second": st.t_env / wall if wall > 0 else 0.0, "wall_time_s": wall,
            "cpu_time_s": cpu,
        }
        io.atomic_write_json(self.dir / "final.json", final)
        extra: dict[str, Any] = {SEAL_KEY: file_digests(self.dir)}
        if self.notes:
            extra["notes"] = self.notes
        write_status(self.dir, "completed", st.t_env, **extra)
        (self.dir / "checkpoint.pt").unlink(missing_ok=True)
        return final

    def run(self) -> dict[str, Any]:
        """Train to ``t_max`` (learners) or just evaluate (reference policies); write final.json."""
        try:
            return self._run()
        finally:
            if self.metrics_sink is not None:
                self.metrics_sink.close()
                self.metrics_sink = None

    def _prepare_files(self, resumed: bool) -> None:
        """A fresh start writes spec.json and empties the outputs; a resume keeps them (and
        rewrites an unreadable spec.json, or notes a change of numerics fingerprint)."""
        if not resumed:
            io.atomic_write_json(self.dir / "spec.json", spec_json(self.spec))
            (self.dir / "metrics.jsonl").write_bytes(b"")
            for stale in ("final.json", "final.pt", "best.pt"):
                (self.dir / stale).unlink(missing_ok=True)
        elif not _readable_object(self.dir / "spec.json"):
            io.atomic_write_json(self.dir / "spec.json", spec_json(self.spec))  # provenance
        else:
            note_resume_numerics(self.dir)

    def _run(self) -> dict[str, Any]:
        """The body of :meth:`run` (which closes the metrics sink however this ends)."""
        from tqdm import tqdm

        self.dir.mkdir(parents=True, exist_ok=True)
        use_one_thread()
        keep_freed_memory()  # no page faults on the learner's work tensors; same values
        resumed = self.load_checkpoint()
        self._prepare_files(resumed)
        st, spec = self.state, self.spec
        if spec.tensorboard:
            from kaleibench.utils.tensorboard import TB_DIR, TensorBoardSink

            self.metrics_sink = TensorBoardSink(
                self.dir / TB_DIR, replay=io.read_jsonl(self.dir / "metrics.jsonl"))
        if spec.sinks:
            from kaleibench.utils.sinks import open_sinks

            self.metrics_sink = open_sinks(spec.sinks, spec_json(spec), self.dir,
                                           self.metrics_sink,
                                           io.read_jsonl(self.dir / "metrics.jsonl"))
        beat = 0.0
        clock = self.clock = RunClock(st.wall_time, st.cpu_time, st.t_env)
        notes: dict[str, Any] = {"notes": self.notes} if self.notes else {}
        write_status(self.dir, "running", st.t_env, resumed=resumed, **notes)
        t_max = spec.t_max if self.algo.learns else 0
        stop = GracefulStop()
        bar = tqdm(total=t_max, initial=min(st.t_env, t_max), disable=not self.progress,
                   desc=f"{spec.variant.name} {spec.task} s{spec.seed}", unit="step",
                   dynamic_ncols=True, leave=False)
        try:
            while True:
                if st.t_env >= st.next_eval:
                    self.eval_and_log()
                    st.next_eval += spec.eval_interval
                    bar.set_postfix(eval_return=f"{st.last_eval_return:.2f}")
                if st.t_env >= t_max:
                    break
                before = st.t_env
                stats = self.train_step()
                self._maybe_log_train(stats)
                bar.update(st.t_env - before)
                if st.t_env >= st.next_checkpoint and st.t_env < t_max:
                    st.next_checkpoint = st.t_env + spec.checkpoint_interval
                    st.wall_time, st.cpu_time = clock.totals()
                    self.save_checkpoint()
                    beat = 0.0  # report the checkpointed progress in status.json right away
                if stop.requested:
                    raise KeyboardInterrupt
                if time.time() - beat > HEARTBEAT_SECONDS:
                    beat = time.time()
                    write_status(self.dir, "running", st.t_env, resumed=resumed, **notes)
        except KeyboardInterrupt:
            st.wall_time, st.cpu_time = clock.totals()
            self.save_checkpoint()
            write_status(self.dir, "interrupted", st.t_env)
            raise
        finally:
            bar.close()
            stop.restore()
        return self._finish(clock)


def _readable_object(path: Path) -> bool:
    try:
        io.read_json_object(path)
        return True
    except (OSError, ValueError):
        return False


def train(spec: RunSpec, root: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) ``spec`` under ``root``; return the contents of final.json."""
    return Run(spec, root, progress).run()
