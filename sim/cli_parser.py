"""The ``tokensim`` command line: every subcommand and flag (``docs/check.py`` parses every documented command
with :func:`build_parser`; :mod:`sim.cli` runs them)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

EXPERIMENTS_HELP = ("snr", "temperature", "tokens", "per-snr")  # sim.reproduce_plan.EXPERIMENTS, without torch
BENCHES = ("analog", "digital", "decoders", "abstraction")
# A Dask scheduler's address (distributed's protocols): what --dask-scheduler takes
DASK_ADDRESS = re.compile(r"^((tcp|tls|ucx|ws|wss|inproc)://\S+|[^\s:/]+:\d+)$")


def build_parser() -> argparse.ArgumentParser:
    """The command line of every subcommand (``docs/check.py`` parses every documented command with it)."""
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
    run.add_argument(
        "--no-train", action="store_true", help="fail (exit 3) instead of training a checkpoint that is not cached"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars or summary table")
    train = scenario_command("train", "train only; checkpoints are keyed by the config that shapes them")
    train.add_argument(
        "--stage",
        choices=["align", "finetune", "all"],
        default="all",
        help="align: stage 1 only; finetune: stage 2 from stage 1's checkpoint (trained first if missing); "
        "all: both. With training.alignment.enabled=false there is no stage 1 (the baseline).",
    )
    train.add_argument("--force", action="store_true", help="retrain the stage asked for even if a checkpoint exists")
    train.add_argument("--out", type=Path, help="where the training log and figure go (default: results/<name>)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    scenario_command(
        "validate",
        "check a scenario; print the resolved config with every default, and on stderr whether running it "
        "trains (which checkpoints it needs, cached or not, and about how long training takes)",
    )
    sweep = scenario_command(
        "sweep", "run a scenario over a grid of keys (its sweep: block and --set key=v1,v2,...); resumable"
    )
    sweep.add_argument("--out", type=Path, help="sweep directory (default: results/<scenario name>-sweep)")
    parallel = sweep.add_mutually_exclusive_group()
    parallel.add_argument("--workers", type=int, default=1, help="run points on a local Dask cluster of N processes")
    parallel.add_argument(
        "--dask-scheduler",
        metavar="ADDR",
        help="run points on a running Dask cluster, given its scheduler's address, e.g. tcp://host:8786 "
        "(not scheduler.policy, which is a scenario key)",
    )
    sweep.add_argument("--replicates", type=int, help="model seeds per point (overrides the sweep: block's replicates)")
    sweep.add_argument(
        "--no-train", action="store_true", help="fail (exit 3) instead of training any checkpoint that is not cached"
    )
    sweep.add_argument(
        "--zip",
        dest="zips",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="keys that step together (one point per position, equal lengths), e.g. one compression ratio: "
        "--zip tokens.text.length=1,2,4 --zip tokens.image.length=1,2,4 (repeatable; --set lists are crossed)",
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress bar or lines")
    plot = commands.add_parser("plot", help="figures of a run or sweep directory, as PNG and PDF into DIR/plots/")
    plot.add_argument("directory", type=Path, help="a run directory (metrics.json) or a sweep directory (results.csv)")
    bench = commands.add_parser(
        "bench", help="PHY throughput against Sionna's stock chains (analog, digital, abstraction), printed as JSON"
    )
    bench.add_argument(
        "--only", default=",".join(BENCHES), help=f"comma-separated benchmarks among {', '.join(BENCHES)}"
    )
    bench.add_argument("--batch-sizes", default="1,16,128,512,1024", help="comma-separated batch sizes")
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats of every figure (its median is reported)")
    bench.add_argument("--channel", default="tdl-a", help="channel model of both chains")
    bench.add_argument("--snr-db", type=float, default=10.0)
    bench.add_argument("--num-prbs", type=int, default=24, help="PRBs of the benchmark grid")
    bench.add_argument("--seed", type=int, default=0)
    commands.add_parser("info", help="versions, device, and which data and weights are present")
    commands.add_parser(
        "keys", help="every scenario key: type, default, allowed values, description (Markdown; docs/keys.md)"
    )
    report = commands.add_parser(
        "report", help="one self-contained report.html of a run or sweep directory (figures inlined; opens offline)"
    )
    report.add_argument("directory", type=Path, help="a run directory (metrics.json) or a sweep's (results.csv)")
    reproduce = commands.add_parser(
        "reproduce",
        help="the paper's claims on scenarios/paper/: alignment vs baseline, tau, token length, per-SNR models",
    )
    reproduce.add_argument("--out", type=Path, default=Path("results/paper"), help="records, tables and figures")
    reproduce.add_argument("--workers", type=int, default=1, help="parallel runs on a local Dask cluster")
    reproduce.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the snr experiment")
    reproduce.add_argument("--temperature-seeds", help="seeds of the temperature experiment (default: --seeds)")
    reproduce.add_argument(
        "--only", default=",".join(EXPERIMENTS_HELP), help=f"experiments to run, among {', '.join(EXPERIMENTS_HELP)}"
    )
    reproduce.add_argument("--per-snr-db", default="-10,0,10", help="SNRs that get a model of their own")
    reproduce.add_argument(
        "--per-snr-arms", default="aligned,baseline", help="which of aligned, baseline get one model per SNR"
    )
    reproduce.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override for every run"
    )
    reproduce.add_argument("--quiet", action="store_true")
    return parser
