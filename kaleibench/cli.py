"""``kaleibench`` command line: parse, call the library, print. Exit 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A user error that must stop the command before any compute (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kaleibench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="variants, tasks and suites in the registry")
    run = sub.add_parser("run", help="run a suite, or one variant/task/seed cell")
    run.add_argument("--suite", help="built-in suite name or suite YAML path")
    run.add_argument("--variants", "--variant", nargs="+", help="ids or variant YAML paths")
    run.add_argument("--tasks", "--task", nargs="+", help="task ids")
    run.add_argument("--seeds", "--seed", nargs="+", type=int, help="seeds")
    run.add_argument("--t-max", type=int, help="env steps (overrides the suite)")
    run.add_argument("--n-envs", type=int, help="batch rows (overrides the suite)")
    run.add_argument("--out", help="results root (default results/runs/<suite>)")
    run.add_argument("--workers", type=int, help="parallel runs (default: cores)")
    run.add_argument("--backend", choices=["numpy", "mpe2"],
                     help="env backend: numpy (batched, default) or mpe2 (the reference)")
    run.add_argument("--retry-failed", action="store_true", help="re-run failed cells")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    status = sub.add_parser("status", help="per-cell state of a results folder")
    status.add_argument("results")
    return p


def cmd_list() -> int:
    """Print the registries."""
    from kaleibench.algos import load_variant, variants
    from kaleibench.envs import tasks
    from kaleibench.harness.suite import suite_names

    print("variants:")
    for name in variants.names():
        v = load_variant(name)
        flags = [] if v.learns else ["reference"]
        flags += ["needs-subtasks"] if v.needs_subtasks else []
        print(f"  {name:<14} {v.algo:<45} {' '.join(flags)}")
    print("tasks:")
    for tid in tasks.names():
        spec = tasks.get(tid)
        print(f"  {tid:<26} N={spec.n_agents}  {'subtasks ' if spec.has_subtasks else ''}"
              f"{spec.summary}")
    print("suites:")
    for name in suite_names():
        print(f"  {name}")
    return 0


def _single_cell_suite(args: argparse.Namespace) -> dict[str, object]:
    from kaleibench.envs import task_spec

    if not (args.variants and args.tasks):
        raise BadInput("give --suite, or --variant and --task (and optionally --seed, --t-max)")
    for t in args.tasks:
        task_spec(t)
    return {"name": "adhoc", "version": 0,
            "tasks": [{"id": t, "bounds": {"random": -1.0, "reference": 0.0}} for t in args.tasks],
            "variants": args.variants, "seeds": args.seeds or [0], "t_max": args.t_max or 100_000}


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything, then execute the grid."""
    from dataclasses import replace

    from kaleibench.harness.grid import expand
    from kaleibench.harness.runner import execute, write_suite_json
    from kaleibench.harness.suite import load_suite, parse_suite

    suite = load_suite(args.suite) if args.suite else parse_suite(
        _single_cell_suite(args), "command line")
    if args.t_max is not None:
        if args.t_max < 1:
            raise BadInput(f"--t-max must be >= 1, got {args.t_max}")
        suite = replace(suite, t_max=args.t_max)
    if args.n_envs is not None:
        if args.n_envs < 1:
            raise BadInput(f"--n-envs must be >= 1, got {args.n_envs}")
        suite = replace(suite, n_envs=args.n_envs)
    if args.backend is not None:
        suite = replace(suite, backend=args.backend)
    if args.seeds and any(s < 0 for s in args.seeds):
        raise BadInput(f"--seeds must be >= 0, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        raise BadInput(f"--workers must be >= 1, got {args.workers}")
    cells = expand(suite, args.variants, args.tasks, args.seeds)
    out = Path(args.out or Path("results") / "runs" / suite.name)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"output folder {out} is not writable: {exc}") from exc
    write_suite_json(out, suite.to_json())
    summary = execute(cells, out, workers=args.workers, retry_failed=args.retry_failed,
                      progress=not args.no_progress)
    counts = summary.counts
    print(f"{len(summary.outcomes)} cells in {out}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for o in summary.outcomes:
        if o.state in ("failed", "interrupted", "busy"):
            print(f"  {o.state}: {o.run_id}  {o.detail}")
    if counts.get("interrupted"):
        return 130
    return 1 if summary.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    """Per-cell table of a results folder."""
    from kaleibench.harness.status import print_status

    return print_status(Path(args.results))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kaleibench`` console script."""
    args = _parser().parse_args(argv)
    from kaleibench.config import ConfigError
    from kaleibench.registry import UnknownIdError

    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "run":
            return cmd_run(args)
        if args.command == "status":
            return cmd_status(args)
    except (BadInput, ConfigError, UnknownIdError) as exc:
        print(f"kaleibench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
