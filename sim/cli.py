"""``tokensim``: the one entry point. ``tokensim --help`` lists the commands."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sim.errors import ScenarioError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tokensim",
        description="Simulate token communication between split "
        "multimodal models over an OFDM uplink (Sionna) and report accuracy, latency, bits.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scenario_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("scenario", type=Path, help="scenario YAML file")
        sub.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a scenario key, e.g. channel.model=tdl-c or users.cam1.snr_db=3 (repeatable)",
        )
        return sub

    run = scenario_command("run", "train if no matching checkpoint exists, evaluate, write results")
    run.add_argument("--out", type=Path, help="run directory (default: results/<scenario name>)")
    run.add_argument("--retrain", action="store_true", help="train even if a checkpoint exists")
    run.add_argument("--quiet", action="store_true", help="no progress bars or summary table")
    train = scenario_command("train", "train only; checkpoints are keyed by the config that shapes them")
    train.add_argument(
        "--stage",
        choices=["finetune", "all"],
        default="all",
        help="training stage (task fine-tuning; alignment is not built yet)",
    )
    train.add_argument("--force", action="store_true", help="train even if a checkpoint exists")
    scenario_command("validate", "check a scenario; print the resolved config with every default")
    bench = commands.add_parser("bench", help="PHY throughput against Sionna's stock chain, printed as JSON")
    bench.add_argument("--batch-sizes", default="1,16,128,512,1024", help="comma-separated batch sizes")
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats per batch size (median reported)")
    bench.add_argument("--channel", default="tdl-a", help="channel model of both chains")
    bench.add_argument("--snr-db", type=float, default=10.0)
    bench.add_argument("--num-prbs", type=int, default=24, help="PRBs of the benchmark grid")
    bench.add_argument("--seed", type=int, default=0)
    commands.add_parser("info", help="versions, device, and which data and weights are present")

    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except ScenarioError as err:
        print(f"tokensim {args.command}: error in {getattr(args, 'scenario', 'scenario')}:\n{err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # a missing Debian package names its scenario key and install command
        if hasattr(err, "key"):
            print(f"tokensim {args.command}: {err}", file=sys.stderr)
            return 2
        raise


def _quiet_libraries() -> None:
    """Weight-loading bars and deprecation notes of the libraries would bury tokensim's own output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers|peft")


def _load(args):
    from sim.scenario import load_scenario

    return load_scenario(args.scenario, args.overrides)


def cmd_validate(args) -> int:
    from sim.scenario import resolved_yaml

    print(resolved_yaml(_load(args)), end="")
    return 0


def cmd_train(args) -> int:
    from sim.engine import Simulation

    sim = Simulation(_load(args))
    summary = sim.train(force=args.force)
    summary.pop("history", None)
    print(json.dumps({"checkpoint": str(sim.checkpoint_path), **summary}, indent=2))
    return 0


def cmd_run(args) -> int:
    from sim.engine import Simulation
    from sim.metrics import build_results
    from sim.results import manifest, write_csv, write_json, write_text
    from sim.scenario import resolved_yaml

    started = time.perf_counter()
    scenario = _load(args)
    out = args.out or Path("results") / scenario.name
    sim = Simulation(scenario, progress=not args.quiet)
    summary = sim.train(force=args.retrain)
    history = summary.pop("history", None)
    metrics, per_user, per_task = build_results(scenario, sim.uplink, sim.evaluate())
    metrics["training"] = summary
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "scenario.yaml", resolved_yaml(scenario))
    write_json(out / "metrics.json", metrics)
    write_csv(out / "per_user.csv", per_user)
    write_csv(out / "per_task.csv", per_task)
    if history:
        write_csv(out / "training_log.csv", history)
    write_json(
        out / "manifest.json",
        manifest(
            scenario,
            sim.device,
            time.perf_counter() - started,
            sim.checkpoint,
            {"checkpoint_path": str(sim.checkpoint_path), "trained_now": not summary["loaded"]},
        ),
    )
    if not args.quiet:
        _print_summary(metrics, out)
    return 0


def _print_summary(metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{metrics['scenario']}: accuracy {metrics['accuracy']:.3f} over {metrics['tasks']} tasks "
        f"(majority answer {metrics['majority_answer_rate']:.3f}), "
        f"latency p95 {metrics['latency_ms']['p95']:.2f} ms"
    )
    for column in ("user", "modalities", "group", "SNR dB", "accuracy", "token NMSE", "bits/task", "latency ms"):
        table.add_column(column, justify="left" if column in ("user", "modalities", "group") else "right")
    for u in metrics["users"]:
        table.add_row(
            u["id"],
            "+".join(u["modalities"]),
            u["group"],
            f"{u['snr_db']:g}",
            f"{u['accuracy']:.3f}",
            f"{u['token_nmse']:.3f}",
            f"{u['bits_per_task']:.0f}",
            f"{u['latency_ms']['mean']:.2f}",
        )
    console = Console(stderr=True)
    console.print(table)
    console.print(f"results in {out}/")


def cmd_bench(args) -> int:
    from sim.bench import run_bench

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(json.dumps(run_bench(sizes, args.repeats, args.channel, args.snr_db, args.num_prbs, args.seed), indent=2))
    return 0


def cmd_info(args) -> int:
    from sim.info import collect_info

    print(json.dumps(collect_info(), indent=2))
    return 0


COMMANDS = {"run": cmd_run, "train": cmd_train, "validate": cmd_validate, "bench": cmd_bench, "info": cmd_info}

if __name__ == "__main__":
    sys.exit(main())
