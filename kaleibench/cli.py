"""``kaleibench`` command line: parse, call the library, print. Exit 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A user error that must stop the command before any compute (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    from kaleibench.cli_support import version

    p = argparse.ArgumentParser(
        prog="kaleibench", description="kaleibench: cooperative multi-agent RL benchmark on MPE. "
        "Run suites or single cells, follow them, report and gate them.")
    p.add_argument("--version", action="version", version=f"kaleibench {version()}")
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
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local process pool, or a Ray cluster (pip install kaleibench[ray])")
    run.add_argument("--address", help="Ray cluster address (e.g. auto); default: local Ray")
    run.add_argument("--backend", choices=["numpy", "mpe2"],
                     help="env backend: numpy (batched, default) or mpe2 (the reference)")
    run.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", default=[],
                     help="override config fields of every chosen variant (values are YAML "
                          "scalars, e.g. --set lr=1e-3 td_lambda=0.6); each overridden "
                          "variant is named <variant>+key=value")
    run.add_argument("--sweep", nargs="+", action="extend", metavar="KEY=V1,V2", default=[],
                     help="grid over config fields (e.g. --sweep lr=1e-4,5e-4,1e-3): every "
                          "point is a variant of its own in the same results folder")
    run.add_argument("--retry-failed", action="store_true", help="re-run failed cells")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write metrics as TensorBoard scalars under each run's "
                          "tensorboard/ (pip install kaleibench[tensorboard])")
    run.add_argument("--csv", action="store_true",
                     help="also write metrics as <run>/metrics.csv (kind,t_env,metric,value)")
    run.add_argument("--wandb", action="store_true",
                     help="also log metrics to Weights & Biases (project $WANDB_PROJECT, "
                          "default kaleibench; WANDB_MODE=offline to stay local; "
                          "pip install 'kaleibench[wandb]')")
    status = sub.add_parser("status", help="per-cell state of a results folder")
    status.add_argument("results")
    report = sub.add_parser("report", help="tables, figures and report.md for a results folder")
    report.add_argument("results")
    report.add_argument("--out", help="output folder (default <results>/report)")
    report.add_argument("--baseline", help="variant the others are compared against")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    report.add_argument("--reps", type=int, default=50_000, help="bootstrap resamples")
    report.add_argument("--score", choices=["final", "absolute"], default="final")
    report.add_argument("--allow-incomplete", action="store_true",
                        help="compare even if cells are missing (they are listed)")
    report.add_argument("--no-figures", action="store_true", help="tables and report.md only")
    export = sub.add_parser("export", help="export results for other tools")
    export.add_argument("results")
    export.add_argument("--format", choices=["marl-eval", "folder"], default="marl-eval",
                        help="marl-eval: raw JSON for marl-eval; folder: a copy without "
                             "checkpoints or policy files (scores, logs, report), e.g. to commit")
    export.add_argument("--out", help="output file (default <results>/marl_eval.json); "
                                      "for --format folder, the new folder (required)")
    export.add_argument("--allow-incomplete", action="store_true",
                        help="--format folder: export the completed runs of an unfinished grid")
    check = sub.add_parser("check", help="regression gate against reference scores")
    check.add_argument("--suite", required=True, help="suite the reference was made from")
    check.add_argument("--reference", required=True, help="results/reference/<suite>.json")
    check.add_argument("--results", help="read this results folder instead of running the suite")
    check.add_argument("--workers", type=int, help="parallel runs when running the suite")
    check.add_argument("--fail-inconclusive", action="store_true",
                       help="also fail when a cell has too few seeds to detect the designed drop")
    ev = sub.add_parser("evaluate", help="greedy episodes of a finished run's saved policy")
    ev.add_argument("run_dir", help="a run folder (.../<variant>/<task>/seed_<k>)")
    ev.add_argument("--policy", choices=["final", "best"], default="final")
    ev.add_argument("--episodes", type=int, help="episodes (default: the run's eval_episodes)")
    ev.add_argument("--seeds", nargs="+", type=int,
                    help="explicit episode seeds (default: the fixed eval seeds)")
    ev.add_argument("--render", metavar="FILE.gif", help="also write a GIF of the first episode")
    ref = sub.add_parser("reference", help="write reference scores from a completed suite run")
    ref.add_argument("--suite", required=True)
    ref.add_argument("--results", required=True)
    ref.add_argument("--out", required=True, help="e.g. results/reference/smoke.json")
    ref.add_argument("--alpha", type=float, default=0.05,
                     help="family-wise false-alarm rate of the gate over the suite's cells")
    ref.add_argument("--tolerance", type=float, default=0.10,
                     help="drops below this fraction of the random-heuristic gap are not gated")
    ref.add_argument("--catch", type=float, default=0.50,
                     help="drop (fraction of the gap) the gate must catch with 80%% power")
    return p


def cmd_list() -> int:
    """Print the registries."""
    from kaleibench.algos import load_variant, variants
    from kaleibench.envs import tasks
    from kaleibench.harness.cost import relative_cost
    from kaleibench.harness.suite import suite_names

    print("variants:")
    for name in variants.names():
        try:
            v = load_variant(name)
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin's variant: list the others
            print(f"  {name:<14} (cannot be loaded: {exc})")
            continue
        flags = [] if v.learns else ["reference"]
        flags += ["needs-subtasks"] if v.needs_subtasks else []
        tags = f"  [{' '.join(flags)}]" if flags else ""
        cost = relative_cost(name)
        tags += f"  (cost {cost:.1f}x qmix per env step)" if cost is not None else ""
        print(f"  {name:<14} {v.description or v.algo}{tags}")
    print("tasks:")
    for tid in tasks.names():
        spec = tasks.get(tid)
        print(f"  {tid:<26} N={spec.n_agents}  {'subtasks ' if spec.has_subtasks else ''}"
              f"{spec.summary}")
    print("suites (estimated wall time on 2 idle cores from the measured cost table; "
          "evaluation not counted):")
    for name in suite_names():
        print(f"  {name:<14} {_suite_line(name)}")
    return 0


def _suite_line(name: str) -> str:
    """``<description>; <n> learning cells, ~h:mm:ss on 2 cores`` for ``kaleibench list``."""
    from kaleibench.harness.cost import format_eta, suite_cells, suite_estimate
    from kaleibench.harness.suite import load_suite

    try:
        suite = load_suite(name)
        cells = suite_cells(suite)
    except Exception as exc:  # noqa: BLE001 - one broken suite must not hide the others
        return f"(cannot be loaded: {exc})"
    eta = suite_estimate(cells, workers=2)
    cost = f"~{format_eta(eta)}" if eta is not None else "cost unknown"
    return f"{suite.description}; {len(cells)} learning cells, {cost}"


def _single_cell_suite(args: argparse.Namespace) -> dict[str, object]:
    from kaleibench.envs import task_spec

    if not (args.variants and args.tasks):
        raise BadInput("give --suite, or --variant and --task (and optionally --seed, --t-max)")
    for t in args.tasks:
        task_spec(t)
    return {"name": "adhoc", "version": 0, "tasks": [_adhoc_task(t) for t in args.tasks],
            "variants": args.variants, "seeds": args.seeds or [0], "t_max": args.t_max or 100_000}


def _adhoc_task(task_id: str) -> dict[str, object]:
    """A single run's task with its measured bounds (placeholders, with a warning, if none)."""
    from kaleibench.envs.tasks import task_bounds

    bounds = task_bounds(task_id)
    if bounds is None:
        print(f"kaleibench: warning: {task_id} has no measured normalisation bounds; "
              "normalised scores in reports of this run are not meaningful", file=sys.stderr)
        bounds = (-1.0, 0.0)
    return {"id": task_id, "bounds": {"random": bounds[0], "reference": bounds[1]}}


def _apply_overrides(suite: Any, args: argparse.Namespace) -> Any:
    """Command-line overrides of a suite, validated before anything runs."""
    from dataclasses import replace

    for flag, field in (("t_max", "t_max"), ("n_envs", "n_envs")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise BadInput(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
            suite = replace(suite, **{field: value})
    if args.backend is not None:
        suite = replace(suite, backend=args.backend)
    if args.seeds and any(s < 0 for s in args.seeds):
        raise BadInput(f"--seeds must be >= 0, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        raise BadInput(f"--workers must be >= 1, got {args.workers}")
    return suite


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything, then execute the grid."""
    from kaleibench.harness.grid import expand
    from kaleibench.harness.lock import LockHeld
    from kaleibench.harness.runner import execute, lock_results, prepare_results
    from kaleibench.harness.suite import load_suite, parse_suite

    suite = load_suite(args.suite) if args.suite else parse_suite(
        _single_cell_suite(args), "command line")
    suite = _apply_overrides(suite, args)
    overridden = bool(getattr(args, "set", None) or getattr(args, "sweep", None))
    if overridden:
        suite = _with_config_overrides(suite, args)
    cells = expand(suite, None if overridden else args.variants, args.tasks, args.seeds)
    if getattr(args, "tensorboard", False):
        cells = _with_tensorboard(cells)
    cells = _with_sinks(cells, args)
    out = Path(args.out or Path("results") / "runs" / suite.name)
    suite_json = suite.to_json()
    # Folder names, not YAML paths: report and check look the variants up by folder.
    suite_json["variants"] = list(dict.fromkeys(c.spec.variant.name for c in cells))
    _check_folder(cells, out, args)  # reads only: refuses a folder holding other runs
    _folder_suite_json(out, suite_json)  # reads only: refuses a folder of another grid
    try:
        lock = lock_results(out)  # the first write into the folder; doubles as a write probe
    except LockHeld as exc:
        raise BadInput(str(exc)) from exc
    except OSError as exc:
        raise BadInput(f"output folder {out} is not writable: {exc}") from exc
    try:
        # again under the lock: another run may have added its variants meanwhile
        suite_json = _folder_suite_json(out, suite_json)
        prepare_results(out, cells, suite_json)
        if getattr(args, "executor", "local") == "ray":
            from kaleibench.harness.runner import execute_ray

            summary = execute_ray(cells, out, address=args.address,
                                  retry_failed=args.retry_failed, num_cpus=args.workers)
        else:
            summary = execute(cells, out, workers=args.workers, retry_failed=args.retry_failed,
                              progress=not args.no_progress)
    except OSError as exc:  # e.g. a full disk outside any cell: no traceback, still exit 1
        print(f"kaleibench: {out}: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    counts = summary.counts
    print(f"{len(summary.outcomes)} cells in {out}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if counts.get("skipped"):
        print(f"  skipped {counts['skipped']}: already completed in {out} (reused, not re-run; "
              "use another --out to run them again)")
    for o in summary.outcomes:
        if o.state in ("failed", "interrupted", "busy") or (o.state == "completed" and o.detail):
            print(f"  {o.state}: {o.run_id}  {o.detail}")
    if counts.get("interrupted") or counts.get("pending"):
        print(f"  stopped: re-run the same command to resume ({counts.get('pending', 0)} cells "
              "never started)")
        return 130
    if counts.get("completed") or counts.get("skipped"):
        print(f"next: kaleibench status {out}   or   kaleibench report {out}")
    return 1 if summary.failed or counts.get("busy") else 0


def _folder_suite_json(out: Path, suite_json: dict[str, Any]) -> dict[str, Any]:
    """The folder's suite.json with this run's variants added, or exit 2 if its grid differs."""
    from kaleibench.harness.reuse import merged_suite_json

    try:
        return merged_suite_json(out, suite_json)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


def _check_folder(cells: list[Any], out: Path, args: argparse.Namespace) -> None:
    """Refuse a folder that holds other runs; say what is reused and how to get what was asked."""
    from kaleibench.harness.reuse import inspect_folder

    sinks = [name for name in ("tensorboard", "csv") if getattr(args, name, False)]
    check = inspect_folder(cells, out, sinks)
    if check.conflicts:
        raise BadInput(check.conflict_message())
    for line in check.notes():
        print(line, file=sys.stderr)


def _with_config_overrides(suite: Any, args: argparse.Namespace) -> Any:
    """The suite with ``--set``/``--sweep`` applied to every chosen variant (all validated)."""
    from dataclasses import replace

    from kaleibench.overrides import check_unique, parse_assignments, parse_sweep, with_overrides

    entries = with_overrides(args.variants or suite.variants, parse_assignments(args.set),
                             parse_sweep(args.sweep), "command line --set/--sweep")
    check_unique(entries)
    return replace(suite, variants=tuple(entries))


def _with_sinks(cells: list[Any], args: argparse.Namespace) -> list[Any]:
    """The cells with the ``--csv``/``--wandb`` sinks on (run ids are unchanged)."""
    from dataclasses import replace

    names = tuple(n for n in ("csv", "wandb") if getattr(args, n, False))
    if not names:
        return cells
    if "wandb" in names:
        from kaleibench.utils.sinks import WandbUnavailable, require_wandb

        try:
            require_wandb()
        except WandbUnavailable as exc:
            raise BadInput(str(exc)) from exc
    return [replace(c, spec=replace(c.spec, sinks=names)) for c in cells]


def _with_tensorboard(cells: list[Any]) -> list[Any]:
    """The same cells with the TensorBoard sink on (run ids are unchanged)."""
    from dataclasses import replace

    from kaleibench.utils.tensorboard import TensorBoardUnavailable, require_tensorboard

    try:
        require_tensorboard()
    except TensorBoardUnavailable as exc:
        raise BadInput(str(exc)) from exc
    return [replace(c, spec=replace(c.spec, tensorboard=True)) for c in cells]


def cmd_status(args: argparse.Namespace) -> int:
    """Per-cell table of a results folder."""
    from kaleibench.harness.status import print_status

    return print_status(Path(args.results))


def _results_dir(path: str) -> Path:
    results = Path(path)
    if not results.is_dir():
        raise BadInput(f"{results} is not a results folder")
    return results


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report; incomplete grids are refused unless --allow-incomplete."""
    from kaleibench.analysis.report import write_report
    from kaleibench.cli_support import check_report_input, ensure_writable_dir

    if args.reps < 100:
        raise BadInput(f"--reps must be >= 100, got {args.reps}")
    results = _results_dir(args.results)
    check_report_input(results, args.baseline)
    ensure_writable_dir(args.out or results / "report", "report --out folder")
    path = write_report(results, args.out, baseline=args.baseline,
                        seed=args.seed, reps=args.reps, allow_incomplete=args.allow_incomplete,
                        kind=args.score, figures=not args.no_figures)
    print(f"report written to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """marl-eval JSON, or a copy of the folder without checkpoints and policies."""
    from kaleibench.analysis.export import export_folder, export_marl_eval

    results = _results_dir(args.results)
    if args.format == "folder":
        if not args.out:
            raise BadInput("export --format folder needs --out <new folder>")
        try:
            left_out = export_folder(results, args.out, allow_incomplete=args.allow_incomplete)
        except FileExistsError as exc:
            raise BadInput(str(exc)) from exc
        note = f" ({len(left_out)} unfinished cell(s) left out)" if left_out else ""
        print(f"results without checkpoints or policies written to {args.out}{note}")
        return 0
    path = export_marl_eval(results, args.out or results / "marl_eval.json")
    print(f"marl-eval JSON written to {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Greedy episodes of a run's saved policy: mean team return with a 95% t-CI, per agent."""
    from kaleibench.evaluate import RunFolderError, evaluate_run, format_result

    if args.episodes is not None and args.episodes < 1:
        raise BadInput(f"--episodes must be >= 1, got {args.episodes}")
    if args.seeds and args.episodes is not None and args.episodes != len(args.seeds):
        raise BadInput(f"--episodes {args.episodes} but {len(args.seeds)} --seeds given")
    if args.seeds and any(s < 0 for s in args.seeds):
        raise BadInput(f"--seeds must be >= 0, got {args.seeds}")
    if args.render and not args.render.lower().endswith(".gif"):
        raise BadInput(f"--render must name a .gif file, got {args.render}")
    try:
        result = evaluate_run(args.run_dir, args.policy, args.episodes, args.seeds)
        print(format_result(result, args.run_dir, args.policy))
        if args.render:
            from kaleibench.render import render_run

            replay = render_run(args.run_dir, args.render, args.policy, seed=result.seeds[0])
            print(f"replay of seed {replay.seed} ({len(replay.frames)} frames, team return "
                  f"{replay.team_return:.4f}) written to {args.render}")
    except RunFolderError as exc:
        raise BadInput(str(exc)) from exc
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    """Record reference scores (with provenance) from a completed suite run."""
    from kaleibench.analysis.gate import GateRule
    from kaleibench.analysis.regression import build_reference, save_reference
    from kaleibench.harness.suite import load_suite

    suite = load_suite(args.suite)
    command = (f"kaleibench run --suite {args.suite} --out {args.results} && kaleibench "
               f"reference --suite {args.suite} --results {args.results} --out {args.out}")
    try:
        rule = GateRule(alpha=args.alpha, tolerance=args.tolerance, catch=args.catch)
    except ValueError as exc:
        raise BadInput(f"reference: {exc}") from exc
    command += f" --alpha {args.alpha:g} --tolerance {args.tolerance:g} --catch {args.catch:g}"
    ref = build_reference(_results_dir(args.results), suite.name, suite.to_json()["hash"],
                          command, rule=rule)
    print(f"reference written to {save_reference(ref, args.out)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Fail (exit 1) naming every cell that fell below the reference by more than noise."""
    from kaleibench.analysis.regression import (
        check_against_reference,
        format_report,
        load_reference,
    )
    from kaleibench.harness.suite import load_suite

    suite = load_suite(args.suite)
    if not Path(args.reference).is_file():
        raise BadInput(f"{args.reference}: no such reference file")
    reference = load_reference(args.reference)
    if args.results:
        results = _results_dir(args.results)
    else:
        results = Path("results") / "runs" / suite.name
        ns = argparse.Namespace(suite=args.suite, variants=None, tasks=None, seeds=None,
                                t_max=None, n_envs=None, out=str(results), workers=args.workers,
                                retry_failed=False, no_progress=True, backend=None,
                                executor="local", address=None)
        if cmd_run(ns) != 0:
            print("kaleibench check: the suite run did not complete", file=sys.stderr)
            return 1
    report = check_against_reference(results, reference)
    print(format_report(report))
    if report.failures:
        print(f"kaleibench check: {len(report.failures)} failing cell(s) vs {args.reference}")
        return 1
    if report.inconclusive and args.fail_inconclusive:
        print(f"kaleibench check: {len(report.inconclusive)} inconclusive cell(s) and "
              "--fail-inconclusive")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kaleibench`` console script."""
    from kaleibench.cli_support import pipe_safe

    args = _parser().parse_args(argv)
    return pipe_safe(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; user errors exit 2, refusals 1."""
    from kaleibench.cli_support import UsageError
    from kaleibench.config import ConfigError
    from kaleibench.registry import UnknownIdError

    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "run":
            return cmd_run(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "reference":
            return cmd_reference(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
    except (BadInput, UsageError, ConfigError, UnknownIdError) as exc:
        print(f"kaleibench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:  # e.g. an incomplete grid refused by report/reference
        print(f"kaleibench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kaleibench: interrupted", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
