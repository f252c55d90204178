"""``tokensim``: the one entry point. ``tokensim --help`` lists the commands."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from core.errors import BadData
from sim.cli_parser import BENCHES, DASK_ADDRESS, build_parser
from sim.errors import ScenarioError, ScenarioErrors
from sim.runtime import quiet_libraries


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        return COMMANDS[args.command](args)
    except (KeyboardInterrupt, Terminated) as err:
        from tqdm import tqdm

        for bar in list(tqdm._instances):  # the bars the stop cut short
            bar.close()
        code, name = (143, "SIGTERM") if isinstance(err, Terminated) else (130, "SIGINT")
        start = "\r\033[K" if sys.stderr.isatty() else "\n"  # a line of its own, whatever a bar left behind
        print(f"{start}tokensim {args.command}: stopped by {name}; {_kept_line()}", file=sys.stderr)
        return code
    except ScenarioError as err:
        text = str(err)
        below = "\n" if "\n" in text else " "  # one problem on the header's line; several, one per line below
        print(
            f"tokensim {args.command}: error in {getattr(args, 'scenario', 'scenario')}:{below}{text}", file=sys.stderr
        )
        return 2
    except BadData as err:  # found while running (validate reports it among the scenario's errors)
        print(f"tokensim {args.command}: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if hasattr(err, "key"):  # a missing Debian package names its scenario key and install command
            print(f"tokensim {args.command}: {err}", file=sys.stderr)
            return 2
        # a full disk, a folder without write permission: what failed and where; the run directory is
        # written whole or not at all, and cached files atomically, so nothing half-written stays
        print(
            f"tokensim {args.command}: cannot write {err.filename or 'a file'}: {err.strerror or err}", file=sys.stderr
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is, like ``KeyboardInterrupt`` for SIGINT: every ``finally``
    and context manager on the way out runs (partial files and directories are removed)."""


def _terminate(signum, frame):
    raise Terminated


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _kept_line() -> str:
    """What an interrupted command leaves: everything finished is kept, nothing half-written is."""
    from models.cache import kept

    by_kind: dict[str, list[str]] = {}
    for kind, name in kept():
        by_kind.setdefault(kind, []).append(name)
    if not by_kind:
        return "nothing was finished, nothing half-written is left; a rerun starts over"
    parts = []
    for kind in ("sweep point", "checkpoints/"):  # what a rerun skips, by name
        names = by_kind.pop(kind, [])
        for name in names[:3]:
            parts.append(f"{kind} {name}" if kind == "sweep point" else f"{kind}{name}")
        if len(names) > 3:
            parts.append(f"{len(names) - 3} more {kind.rstrip('/')}")
    parts += [f"{len(names)} file{'s' * (len(names) > 1)} in {kind}" for kind, names in by_kind.items()]
    return f"kept {', '.join(parts)}; nothing half-written is left, and a rerun picks up from there"


def _load(args):
    """The scenario of ``args``; a sweep file's ``sweep:`` block is left out (``tokensim sweep`` runs it)."""
    from sim.scenario import validate_scenario
    from sim.scenario_yaml import apply_override, relative_to_file
    from sim.sweep import read_scenario_file

    raw, block = read_scenario_file(args.scenario)
    if block is not None:
        print(
            f"tokensim {args.command}: {args.scenario} has a sweep: block; this is its base scenario "
            f"(tokensim sweep {args.scenario} runs every point)",
            file=sys.stderr,
        )
    for item in args.overrides:
        apply_override(raw, item)
    return validate_scenario(relative_to_file(raw, args.scenario))  # a --set model_from too is the file's


def cmd_validate(args) -> int:
    from sim.scenario_yaml import resolved_yaml
    from sim.sweep import load_sweep, read_scenario_file

    if read_scenario_file(args.scenario)[1] is None:
        scenario = _load(args)
        print(resolved_yaml(scenario), end="")
        print(_training_message("tokensim validate", _missing_checkpoints([scenario])), file=sys.stderr)
        return 0
    sweep = load_sweep(args.scenario, args.overrides)
    points = sweep.points()
    invalid = [p for p in points if p.error]
    if invalid:
        raise ScenarioErrors([ScenarioError(f"sweep point {p.label}", None, p.error) for p in invalid])
    print(resolved_yaml(points[0].scenario), end="")
    print(
        f"tokensim validate: {args.scenario} sweeps {', '.join(sweep.keys) or 'nothing'}: all {len(points)} points "
        "are valid; above is the first (tokensim sweep runs them)",
        file=sys.stderr,
    )
    print(_training_message("tokensim validate", _missing_checkpoints(p.scenario for p in points)), file=sys.stderr)
    return 0


def _missing_checkpoints(scenarios) -> list[dict]:
    """The distinct checkpoints the scenarios need that are not cached (each once)."""
    from sim.checkpoint_plan import training_plan

    missing = {}
    for scenario in scenarios:
        for entry in training_plan(scenario):
            if not entry["cached"]:
                missing.setdefault(entry["key"], entry)
    return list(missing.values())


def _training_message(command: str, missing: list[dict]) -> str:
    """Whether a run trains: every checkpoint of ``missing`` (:func:`_missing_checkpoints`), or that none is needed."""
    from sim.checkpoint_plan import describe_plan

    if not missing:
        return f"{command}: every checkpoint it needs is cached: it evaluates only"
    minutes = sum(e["minutes"] for e in missing)
    return (
        f"{command}: running it trains {len(missing)} checkpoint(s), about {minutes:.0f} min on a 2-core CPU:\n"
        + describe_plan(missing)
        + "\nThe key covers the seed, the cell's grid, every channel.* key, the users' layout, tokens, models "
        "and training (not the users' SNRs); to evaluate on an existing model instead, set model_from to the "
        "scenario file that trained it."
    )


def cmd_train(args) -> int:
    from sim.engine import Simulation
    from sim.rundir import write_training_log

    scenario = _load(args)
    simulation = Simulation(scenario, progress=not args.quiet)
    summary = simulation.train(force=args.force, stage=args.stage)
    out = args.out or Path("results") / scenario.name
    write_training_log(out, summary.pop("history"), scenario.name)
    if args.stage == "align":
        from models.checkpoints import checkpoint_path
        from sim.checkpoint_plan import checkpoint_key

        path = checkpoint_path(checkpoint_key(simulation.source or scenario, "align")[0])
    else:
        path = simulation.checkpoint_path
    print(json.dumps({"checkpoint": str(path), **summary, "training_log": str(out)}, indent=2))
    return 0


def cmd_run(args) -> int:
    from sim.api import run

    scenario = _load(args)
    if args.no_train and args.retrain:
        print("tokensim run: --no-train and --retrain contradict each other", file=sys.stderr)
        return 3
    if args.no_train:
        missing = _missing_checkpoints([scenario])
        if missing:
            print(_training_message("tokensim run --no-train", missing), file=sys.stderr)
            return 3
    results = run(scenario, args.out, progress=not args.quiet, retrain=args.retrain)
    if not args.quiet:
        _print_summary(results.metrics, results.directory)
        from rich.console import Console

        Console().print(f"report: {_report(results.directory)}", overflow="fold")  # a long path folds at 80
    return 0


def _report(directory: Path) -> Path:
    from sim.report import write_report

    return write_report(directory)


def cmd_sweep(args) -> int:
    from sim.sweep import load_sweep
    from sim.sweep_run import SweepFailed, run_sweep

    if args.workers < 1:
        print(f"tokensim sweep: --workers: {args.workers} is not allowed; allowed: 1 or more", file=sys.stderr)
        return 2
    if args.dask_scheduler is not None and not DASK_ADDRESS.match(args.dask_scheduler):
        print(
            f"tokensim sweep: --dask-scheduler: {args.dask_scheduler!r} is not a Dask scheduler address; allowed: "
            "[PROTOCOL://]HOST:PORT, e.g. tcp://10.0.0.5:8786 (the scheduling policy is the scenario key "
            "scheduler.policy: --set scheduler.policy=proportional-fair)",
            file=sys.stderr,
        )
        return 2
    sweep = load_sweep(args.scenario, args.overrides, replicates=args.replicates, zips=args.zips)
    if args.no_train:
        missing = _missing_checkpoints(p.scenario for p in sweep.points() if not p.error)
        if missing:
            print(_training_message("tokensim sweep --no-train", missing), file=sys.stderr)
            return 3
    # not the run's default folder: a sweep and a run of one scenario would mix their files
    out = args.out or Path("results") / f"{sweep.base.get('name', args.scenario.stem)}-sweep"
    try:
        report = run_sweep(sweep, out, workers=args.workers, scheduler=args.dask_scheduler, progress=not args.quiet)
    except SweepFailed as err:
        print(f"tokensim sweep: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(
            f"{report.points} points ({report.skipped} finished before, {len(report.ran)} run now, "
            f"{sum(t['trained'] for t in report.trained)} checkpoints trained) in {report.wall_s:.0f} s; "
            f"results in {out / 'results.csv'}",
            file=sys.stderr,
        )
        print(f"report: {_report(out)}")
    return 0


def cmd_plot(args) -> int:
    from sim.plots import plot_directory

    try:
        figures = plot_directory(args.directory)
    except FileNotFoundError as err:
        print(f"tokensim plot: {err}", file=sys.stderr)
        return 2
    for name in figures:
        print(args.directory / "plots" / f"{name}.png")
    return 0


def _print_summary(metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    headline = (
        f"{metrics['scenario']}: accuracy {metrics['accuracy']:.3f} "
        f"(95 % CI {_interval(metrics['accuracy_ci95'])}) over {metrics['tasks']} tasks "
        f"(majority answer {metrics['majority_answer_rate']:.3f}), "
        f"latency p95 {metrics['latency_ms']['p95']:.2f} ms"
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    rows = [
        (
            u["id"],
            "+".join(u["modalities"]),
            u["group"],
            f"{u['snr_db']:g}",
            f"{u['accuracy']:.3f}",
            _interval(u["accuracy_ci95"]),
            f"{u['token_nmse']:.3f}",
            f"{u['bits_per_task']:.0f}",
            f"{u['latency_ms']['mean']:.2f}",
        )
        for u in metrics["users"]
    ]
    # Short headers, every column as wide as its widest cell: the table fits 80 columns with every name and
    # digit whole (rich would otherwise cut "glasses3" to "glasse…").
    columns = ("user", "sends", "group", "SNR", "acc.", "95 % CI", "NMSE", "bits", "ms")
    for i, column in enumerate(columns):
        width = max(len(column), *(len(row[i]) for row in rows))
        justify = "left" if column in ("user", "sends", "group") else "right"
        table.add_column(column, justify=justify, no_wrap=True, min_width=width)
    for row in rows:
        table.add_row(*row)
    console = Console()  # stdout: the summary is the command's result; progress and warnings go to stderr
    console.print(headline)
    console.print(table)
    console.print(
        "SNR: dB per RE at the equal share; acc.: accuracy over the group's tasks the user takes part in; "
        "NMSE: token NMSE; bits: per task; ms: mean latency of its group's tasks"
    )
    console.print(f"results in {out}/", overflow="fold")


def _interval(pair) -> str:
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


def _only(command: str, text: str, allowed) -> list[str] | None:
    """The names of a comma-separated ``--only``; ``None`` (and the message) when one is not ``allowed``."""
    only = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in only if name not in allowed]
    if unknown:
        print(f"tokensim {command}: --only: {unknown} not among {', '.join(allowed)}", file=sys.stderr)
        return None
    return only


def cmd_bench(args) -> int:
    from sim.bench import run_benches
    from sim.bench.links import LinkBench

    only = _only("bench", args.only, BENCHES)
    if only is None:
        return 2
    link = LinkBench(args.repeats, args.seed, args.channel, args.num_prbs)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(json.dumps(run_benches(only, link, sizes, args.snr_db), indent=2))
    return 0


def cmd_info(args) -> int:
    from sim.info import collect_info

    print(json.dumps(collect_info(), indent=2))
    return 0


def cmd_report(args) -> int:
    try:
        print(_report(args.directory))
    except FileNotFoundError as err:
        print(f"tokensim report: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_keys(args) -> int:
    from sim.keyref import markdown

    print(markdown(), end="")
    return 0


def cmd_reproduce(args) -> int:
    from sim.reproduce import ReproductionFailed, reproduce
    from sim.reproduce_plan import EXPERIMENTS, Plan

    only = _only("reproduce", args.only, EXPERIMENTS)
    if only is None:
        return 2
    seeds = [int(x) for x in args.seeds.split(",")]
    plan = Plan(
        seeds=seeds,
        experiments=only,
        overrides=args.overrides,
        per_snr_db=[float(x) for x in args.per_snr_db.split(",")],
        per_snr_arms=[arm == "aligned" for arm in args.per_snr_arms.split(",")],
        temperature_seeds=None
        if args.temperature_seeds is None
        else [int(x) for x in args.temperature_seeds.split(",")],
    )
    try:
        reproduce(plan, args.out, workers=args.workers, progress=not args.quiet)
    except ReproductionFailed as err:
        print(f"tokensim reproduce: {err}", file=sys.stderr)
        return 1
    print(f"tables in {args.out / 'index.md'}")
    return 0


COMMANDS = {
    "reproduce": cmd_reproduce,
    "run": cmd_run,
    "sweep": cmd_sweep,
    "plot": cmd_plot,
    "train": cmd_train,
    "validate": cmd_validate,
    "bench": cmd_bench,
    "info": cmd_info,
    "keys": cmd_keys,
    "report": cmd_report,
}

if __name__ == "__main__":
    sys.exit(main())
