"""Episode replays: one greedy episode of a saved policy as a small animated GIF.

The episode is played on the mpe2 backend (one mpe2 env built with ``render_mode="rgb_array"``,
which renders off-screen through pygame; the SDL dummy video driver is set here so no display
is needed) with the policy acting greedily, exactly as in evaluation. The GIF holds the frame
after ``reset`` and one frame per step (26 frames for a 25-step episode), downscaled, with a thin
progress bar along the bottom edge (it also keeps consecutive frames distinct, so the GIF writer
never merges two steps into one frame).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kaleibench.utils.io import atomic_write_bytes, read_json_object
from kaleibench.utils.seeding import eval_seeds

DEFAULT_SIZE = 240
"""Side of the (square) GIF in pixels; mpe2 renders 700 × 700."""
MAX_GIF_BYTES = 2_000_000
"""A GIF larger than this is re-encoded smaller (report replays must stay small)."""
FPS = 10
"""mpe2's ``render_fps``."""
REPLAY_CANDIDATES = 9
"""Eval seeds a report replay is chosen from: the episode with the median team return is shown.
One fixed seed would often show an atypical episode (on tag, a good policy's single episode
can end with no catch at all)."""
_BAR_HEIGHT = 3


@dataclass(frozen=True)
class Replay:
    """A rendered episode."""

    frames: list[np.ndarray]  # T + 1 frames of (H, W, 3) uint8
    team_return: float
    seed: int


def _rendering_task(task_id: str) -> Any:
    """A one-row mpe2-backend task whose env renders ``rgb_array`` frames."""
    import importlib

    from kaleibench.envs import task_spec
    from kaleibench.envs.mpe import Mpe2Task

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    spec = task_spec(task_id)
    task = Mpe2Task(spec, n_envs=1, seed=0)
    module = importlib.import_module(f"mpe2.{spec.scenario}")
    task.envs = [module.parallel_env(**dict(spec.kwargs), render_mode="rgb_array")]
    return task


def play_rendered(algo: Any, task_id: str, seed: int, t_env: int) -> Replay:
    """Play one greedy episode of ``algo`` on ``task_id`` from episode seed ``seed``.

    Args:
        algo: An :class:`~kaleibench.algos.base.Algorithm` holding the policy to show.
        task_id: A registered task id.
        seed: The episode seed (an eval seed gives the same episode as evaluation).
        t_env: Passed to ``act`` (as the training loop's evaluation does).

    Returns:
        Full-size frames (T + 1 of them) and the episode's team return.
    """
    import torch

    task = _rendering_task(task_id)
    env = task.envs[0]
    try:
        ts = task.reset([seed])
        hidden = algo.init_hidden(1)
        frames = [np.asarray(env.render())]  # (H, W, 3)
        team_return = 0.0
        with torch.no_grad():
            while True:
                actions, hidden = algo.act(ts, hidden, t_env, False)  # (1, N)
                ts = task.step(actions)
                frames.append(np.asarray(env.render()))
                team_return += float(ts.reward[0])
                if bool(ts.terminated[0] or ts.truncated[0]):
                    break
    finally:
        env.close()
    return Replay(frames, team_return, seed)


def encode_gif(frames: list[np.ndarray], size: int = DEFAULT_SIZE, fps: int = FPS) -> bytes:
    """Encode frames ``(H, W, 3) uint8`` as a looping GIF of ``size`` × ``size`` pixels.

    Each frame gets a progress bar (frame k of K covers k/(K-1) of the width) along its bottom
    edge, so no two frames are identical and the writer keeps one GIF frame per input frame.
    """
    from PIL import Image

    images = []
    last = max(len(frames) - 1, 1)
    for k, frame in enumerate(frames):
        img = Image.fromarray(np.ascontiguousarray(frame[..., :3])).convert("RGB")
        img = img.resize((size, size), Image.Resampling.LANCZOS)
        pixels = np.array(img)  # (size, size, 3)
        pixels[-_BAR_HEIGHT:, : round(size * k / last)] = (40, 40, 40)
        images.append(Image.fromarray(pixels).quantize(colors=64))
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0, disposal=1, optimize=False)
    return buf.getvalue()


def write_gif(path: str | Path, frames: list[np.ndarray], size: int = DEFAULT_SIZE,
              max_bytes: int = MAX_GIF_BYTES) -> Path:
    """Write frames as a GIF atomically, shrinking it until it fits in ``max_bytes``."""
    data = encode_gif(frames, size)
    while len(data) > max_bytes and size > 32:
        size = int(size * 0.75)
        data = encode_gif(frames, size)
    atomic_write_bytes(path, data)
    return Path(path)


def median_episode_seed(algo: Any, env: Any, seeds: list[int], t_env: int) -> int:
    """The seed among ``seeds`` whose greedy episode has the median team return (the lower
    median for an even count; the first such seed on ties)."""
    import torch

    from kaleibench.evaluate import play

    with torch.no_grad():
        returns, _ = play(env, algo, seeds, t_env)
    order = np.argsort(returns, kind="stable")
    return int(seeds[int(order[(len(seeds) - 1) // 2])])


def render_run(run_dir: str | Path, out: str | Path, policy: str = "final",
               seed: int | None = None, size: int = DEFAULT_SIZE, candidates: int = 1) -> Replay:
    """Write a GIF of one greedy episode of a run's saved policy.

    Args:
        run_dir: The run folder (see :func:`kaleibench.evaluate.load_run`).
        out: GIF path to write.
        policy: ``"final"`` or ``"best"``.
        seed: Episode seed; default: chosen among the first ``candidates`` fixed eval seeds.
        size: GIF side in pixels.
        candidates: Without ``seed``: play this many fixed eval seeds and show the episode
            with the median team return (1: the first eval seed).

    Returns:
        The replay (its frames are full-size; the GIF is downscaled); ``replay.seed`` is the
        episode seed shown.
    """
    from kaleibench.evaluate import load_run

    run, env = load_run(run_dir, policy)
    if seed is None:
        seeds = eval_seeds(max(candidates, 1))
        seed = seeds[0] if len(seeds) == 1 else median_episode_seed(run.algo, env, seeds,
                                                                     run.t_env)
    replay = play_rendered(run.algo, run.task, seed, run.t_env)
    write_gif(out, replay.frames, size)
    return replay


@dataclass(frozen=True)
class CellReplay:
    """The replay GIF of one (variant, task) cell of a results folder, or why there is none."""

    variant: str
    task: str
    gif: Path | None
    seed: int | None = None
    """The training seed whose policy is shown."""
    team_return: float | None = None
    error: str | None = None
    episode_seed: int | None = None
    """The eval episode shown (see :data:`REPLAY_CANDIDATES`)."""
    kept: bool = False
    """The GIF comes from an earlier report of the same policy file (its policy is not kept
    here; see :func:`kept_replay`)."""


def best_run(runs: list[Any], score_key: str) -> Any | None:
    """The completed run with the highest ``final.json[score_key]`` (lowest seed on ties)."""
    done = [r for r in runs if r.final is not None and score_key in r.final]
    if not done:
        return None
    return max(sorted(done, key=lambda r: r.seed), key=lambda r: float(r.final[score_key]))


def _policy_sha256(run: Any) -> str | None:
    """The SHA-256 of the run's ``best.pt`` (else ``final.pt``) as recorded in its status.json
    when the run completed: known even after the policy files were left out of a copy."""
    try:
        sums = read_json_object(Path(run.path) / "status.json").get("sha256") or {}
    except (OSError, ValueError):
        return None
    return next((sums[n] for n in ("best.pt", "final.pt") if n in sums), None)


def _provenance_path(gif: Path) -> Path:
    return gif.with_suffix(".json")


def _write_provenance(gif: Path, run: Any, policy: str, replay: Any, size: int,
                      candidates: int) -> None:
    """Record next to a GIF which policy file (by checksum) and episode it shows, so that a
    later report of a copy without policy files can reuse it (:func:`kept_replay`)."""
    from kaleibench.harness.integrity import sha256_file
    from kaleibench.utils.io import atomic_write_json

    atomic_write_json(_provenance_path(gif), {
        "policy": policy, "policy_sha256": sha256_file(Path(run.path) / f"{policy}.pt"),
        "training_seed": run.seed, "episode_seed": replay.seed,
        "team_return": float(replay.team_return), "size": size, "candidates": candidates,
        "gif_sha256": sha256_file(gif),
    })  # fmt: skip


def kept_replay(run: Any, gif: Path, search: list[Path], size: int,
                candidates: int) -> CellReplay | None:
    """The replay of ``run`` made by an earlier report, for a run whose policy file is not kept
    (results exported without policies, or a copy of them): found in ``search`` by name, and
    used only when its recorded policy checksum equals the one the run's status.json recorded
    for its policy, its GIF's checksum matches, and it was made with the same size and number
    of candidate episodes. Copied to ``gif`` when found elsewhere. None otherwise."""
    from kaleibench.harness.integrity import sha256_file

    want = _policy_sha256(run)
    if want is None:
        return None
    for folder in dict.fromkeys(Path(d) for d in search):
        source, meta_path = folder / gif.name, _provenance_path(folder / gif.name)
        try:
            meta = read_json_object(meta_path)
            if (meta.get("policy_sha256") != want or meta.get("size") != size
                    or meta.get("candidates") != candidates
                    or sha256_file(source) != meta.get("gif_sha256")):
                continue
        except (OSError, ValueError, AttributeError):
            continue
        if source.resolve() != gif.resolve():
            gif.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(gif, source.read_bytes())
            atomic_write_bytes(_provenance_path(gif), meta_path.read_bytes())
        return CellReplay(str(run.variant), str(run.task), gif, run.seed,
                          float(meta["team_return"]), episode_seed=int(meta["episode_seed"]),
                          kept=True)
    return None


NO_POLICY = "no policy file kept"
"""Why a completed run cannot be replayed when its folder holds no ``best.pt``/``final.pt``
(e.g. results committed with scores and logs only)."""


def cell_replays(results: Any, score_key: str, out_dir: str | Path,
                 size: int = DEFAULT_SIZE,
                 candidates: int = REPLAY_CANDIDATES) -> list[CellReplay]:
    """One GIF per (variant, task) of ``results``: the best seed's best policy, on the episode
    with the median team return among the first ``candidates`` fixed eval seeds.

    Args:
        results: A :class:`~kaleibench.analysis.scores.Results`.
        score_key: ``final.json`` key that ranks the seeds (e.g. ``final_return``).
        out_dir: Folder of the GIFs (``<variant>__<task_slug>.gif``).
        size: GIF side in pixels.

    Returns:
        One entry per applicable cell with a completed run; a cell whose policy cannot be
        replayed carries the reason instead of a GIF (the report goes on).
    """
    from kaleibench.evaluate import RunFolderError

    out = []
    for variant in results.suite.variants:
        for task in results.suite.task_ids:
            if results.is_na(variant, task):
                continue
            run = best_run(results.cell(variant, task), score_key)
            if run is None:
                continue
            gif = Path(out_dir) / f"{variant}__{task.replace('/', '__')}.gif"
            policy = "best" if (run.path / "best.pt").is_file() else "final"
            if not (run.path / f"{policy}.pt").is_file():
                kept = kept_replay(run, gif, [gif.parent, Path(results.root) / "report" /
                                              "replays"], size, candidates)  # fmt: skip
                out.append(kept or CellReplay(variant, task, None, run.seed, error=NO_POLICY))
                continue
            try:
                replay = render_run(run.path, gif, policy, size=size, candidates=candidates)
            except (RunFolderError, OSError, RuntimeError, ValueError) as exc:
                out.append(CellReplay(variant, task, None, run.seed, error=str(exc)))
                continue
            _write_provenance(gif, run, policy, replay, size, candidates)
            out.append(CellReplay(variant, task, gif, run.seed, replay.team_return,
                                  episode_seed=replay.seed))
    return out
