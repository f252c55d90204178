"""``tokensim reproduce``: the paper's claims, put to the test on the paper set (``scenarios/paper/``).

Four experiments, each a list of independent runs (train, then evaluate):

- ``snr``: accuracy vs SNR with and without stage 1 (alignment), AWGN and
  TDL-A, several seeds; one model trained over the whole SNR range;
- ``temperature``: the InfoNCE temperature tau, with the caption retrieval
  accuracy right after stage 1 (how well it aligned) and the final accuracy;
- ``tokens``: token length per modality, with and without alignment:
  accuracy and steps to a fixed validation accuracy;
- ``per-snr``: one model per SNR (trained at that SNR only), against the
  single model of ``snr``.

Each run's record lands in ``OUT/runs/<name>.json`` as soon as it finishes;
a rerun skips runs that have a record, so a killed reproduction resumes.
Runs go to a local Dask cluster with ``--workers N`` (one thread each).
``OUT/index.md`` and the figures are built from the records.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.config import AlignmentConfig

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {"awgn": ROOT / "scenarios" / "paper" / "awgn.yaml", "tdl": ROOT / "scenarios" / "paper" / "tdl.yaml"}
CHANNEL_LABELS = {"awgn": "AWGN", "tdl": "TDL-A, LS estimates"}
SNRS_DB = (-10, -5, 0, 5, 10, 20)
TABLE_SNRS_DB = (0, 10)  # where the token-length runs are evaluated
# The token-length runs train on half the paper set's budget (ten runs at 8-41 backbone tokens each must fit
# a 2-core CPU): stage 1 for 100 steps, stage 2 for 150, validated every 15.
TOKEN_RUN_TRAINING = (
    "training.alignment.steps=100",
    "training.finetune.steps=150",
    "training.validation_every=15",
)
PER_SNR_DB = (-10, 0, 10)  # SNRs that get a model of their own
TEMPERATURES = (0.03, 0.07, 0.13)
TOKEN_LENGTHS = (1, 2, 4, 8, 16)
TOKEN_IMAGE_SIZE_PX = 128  # EfficientNet-Lite0 gives 16 image tokens at 128 px (4 at the default 64 px)
EXPERIMENTS = ("snr", "temperature", "tokens", "per-snr")
RETRIEVAL_SNR_DB = 10.0
ARMS = {True: "aligned", False: "baseline"}
DEFAULT_TEMPERATURE = AlignmentConfig().temperature


@dataclass
class Job:
    """One training run and its evaluations."""

    name: str
    experiment: str
    channel: str
    overrides: list[str]
    snrs_db: list[float]
    info: dict = field(default_factory=dict)


@dataclass
class Plan:
    """What to run. ``overrides`` go to every run (the test suite's small variant shrinks everything)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    snrs_db: list[float] = field(default_factory=lambda: list(SNRS_DB))
    temperatures: list[float] = field(default_factory=lambda: list(TEMPERATURES))
    token_lengths: list[int] = field(default_factory=lambda: list(TOKEN_LENGTHS))
    token_snrs_db: list[float] = field(default_factory=lambda: list(TABLE_SNRS_DB))
    per_snr_db: list[float] = field(default_factory=lambda: list(PER_SNR_DB))
    per_snr_arms: list[bool] = field(default_factory=lambda: [True, False])  # aligned, baseline
    experiments: list[str] = field(default_factory=lambda: list(EXPERIMENTS))
    overrides: list[str] = field(default_factory=list)
    accuracy_targets: list[float] = field(default_factory=lambda: [0.6, 0.75])  # for "steps to accuracy"
    temperature_seeds: list[int] | None = None  # None: ``seeds``

    def jobs(self) -> list[Job]:
        jobs = []

        def add(name, experiment, channel, overrides, snrs, **info):
            # the plan's overrides (--set) go last: they hold for every run, over an experiment's own settings
            jobs.append(Job(name, experiment, channel, [*overrides, *self.overrides], list(snrs), info))

        def arm(aligned):
            return [f"training.alignment.enabled={str(aligned).lower()}"]

        if "snr" in self.experiments:
            for channel in SCENARIOS:
                for seed in self.seeds:
                    for aligned in (True, False):
                        add(
                            f"snr-{channel}-{ARMS[aligned]}-seed{seed}",
                            "snr",
                            channel,
                            [f"seed={seed}", *arm(aligned)],
                            self.snrs_db,
                            aligned=aligned,
                            seed=seed,
                        )
        if "temperature" in self.experiments:
            for seed in self.seeds if self.temperature_seeds is None else self.temperature_seeds:
                for tau in self.temperatures:
                    if tau == DEFAULT_TEMPERATURE and "snr" in self.experiments and seed in self.seeds:
                        continue  # the snr experiment's aligned AWGN run is this run
                    add(
                        f"temperature-{tau:g}-seed{seed}",
                        "temperature",
                        "awgn",
                        [f"seed={seed}", f"training.alignment.temperature={tau}"],
                        self.snrs_db,
                        aligned=True,
                        seed=seed,
                        temperature=tau,
                    )
        if "tokens" in self.experiments:
            seed = self.seeds[0]
            for length in self.token_lengths:
                for aligned in (True, False):
                    lengths = {"text": length, "image": length, "audio": min(length, 8)}  # 8 log-mel CNN tokens
                    add(
                        f"tokens-{length}-{ARMS[aligned]}-seed{seed}",
                        "tokens",
                        "awgn",
                        [
                            f"seed={seed}",
                            f"models.image_size_px={TOKEN_IMAGE_SIZE_PX}",
                            *TOKEN_RUN_TRAINING,
                            *arm(aligned),
                            *(f"tokens.{m}.length={n}" for m, n in lengths.items()),
                        ],
                        self.token_snrs_db,
                        aligned=aligned,
                        seed=seed,
                        length=length,
                        lengths=lengths,
                    )
        if "per-snr" in self.experiments:
            seed = self.seeds[0]
            for snr in self.per_snr_db:
                for aligned in self.per_snr_arms:
                    add(
                        f"per-snr-{snr:g}-{ARMS[aligned]}-seed{seed}",
                        "per-snr",
                        "awgn",
                        [
                            f"seed={seed}",
                            *arm(aligned),
                            f"training.alignment.snr_db_range=[{snr},{snr}]",
                            f"training.finetune.snr_db_range=[{snr},{snr}]",
                        ],
                        [snr],
                        aligned=aligned,
                        seed=seed,
                        trained_snr_db=snr,
                    )
        return jobs


def run_job(job: Job, out: Path, threads: int = 0) -> dict:
    """Train (or load) and evaluate one run; its record, also written to ``out/runs/<name>.json``."""
    import torch

    from models.alignment import caption_similarity
    from sim.engine import Simulation
    from sim.results import write_json
    from sim.scenario import load_scenario

    path = Path(out) / "runs" / f"{job.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    sim = Simulation(load_scenario(SCENARIOS[job.channel], job.overrides), progress=False)
    record = {**asdict(job), "checkpoint": sim.checkpoint}
    if sim.scenario.training.alignment.enabled:
        sim.train(stage="align")
        generator = torch.Generator().manual_seed(sim.scenario.seed)
        channel = sim.uplink.training_channel((RETRIEVAL_SNR_DB, RETRIEVAL_SNR_DB), generator)
        found = caption_similarity(
            sim.model, channel, sim.sampler("test", 500), sim.dataset.captions(), ("image", "audio")
        )
        record["after_alignment"] = {m: _retrieval(f) for m, f in found.items()}
    summary = sim.train()
    trained = time.perf_counter() - started
    record["accuracy"] = {f"{snr:g}": float(sim.evaluate(snr).tasks["correct"].mean()) for snr in job.snrs_db}
    record["validation"] = [[h["step"], h["val_accuracy"]] for h in summary["history"] if "val_accuracy" in h]
    record["trained_now"] = not summary["loaded"]
    record["train_s"], record["total_s"] = trained, time.perf_counter() - started
    write_json(path, record)
    return record


def _retrieval(found: dict) -> dict:
    """Held-out caption retrieval: top-1 accuracy and the matched minus mean mismatched cosine similarity."""
    similarity, label = found["similarity"], found["label"]
    matched = similarity.gather(1, label[:, None])[:, 0]
    mismatched = (similarity.sum(1) - matched) / (similarity.shape[1] - 1)
    return {
        "top1": float((similarity.argmax(1) == label).float().mean()),
        "matched_cosine": float(matched.mean()),
        "mismatched_cosine": float(mismatched.mean()),
    }


def reproduce(plan: Plan, out: Path, workers: int = 1, progress: bool = True) -> list[dict]:
    """Run every job of ``plan`` not yet recorded in ``out``, then write ``out/index.md`` and figures."""
    from models.progress import progress_bar

    out = Path(out)
    jobs = plan.jobs()
    started = time.perf_counter()
    _prepare_features(jobs)
    if workers > 1:
        from distributed import Client, LocalCluster, as_completed

        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as client,
        ):
            futures = client.map(run_job, jobs, out=out, threads=1, pure=False)
            for future in progress_bar(as_completed(futures), enabled=progress, total=len(jobs), desc="runs"):
                future.result()
    else:
        for job in progress_bar(jobs, enabled=progress, desc="runs"):
            run_job(job, out)
    records = [json.loads((out / "runs" / f"{j.name}.json").read_text()) for j in jobs]
    summarise(records, plan, out, wall_s=time.perf_counter() - started)
    return records


def _prepare_features(jobs: list[Job]) -> None:
    """Make the data and encode it once per distinct setting (the seed draws the speech clips and trains the
    audio encoder) before the workers start, so two of them never compute the same cache entry at once."""
    from sim.engine import Simulation
    from sim.scenario import load_scenario

    seen = set()
    for job in jobs:
        scenario = load_scenario(SCENARIOS[job.channel], job.overrides)
        key = (scenario.seed, scenario.models.image_size_px, json.dumps(scenario.dataset.model_dump(mode="json")))
        if key not in seen:
            seen.add(key)
            sim = Simulation(scenario, progress=False)
            sim.features("train"), sim.features("validation"), sim.features("test")


# --- the page -------------------------------------------------------------------------------------------


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def steps_to(validation: list, target: float) -> int | None:
    """First fine-tuning step (counted from 1) whose validation accuracy reaches ``target``, or ``None``."""
    return next((step + 1 for step, accuracy in validation if accuracy >= target), None)


def summarise(records: list[dict], plan: Plan, out: Path, wall_s: float | None = None) -> str:
    """``out/index.md`` (tables) and figures from the run records; returns the markdown."""
    from sim.results import write_text

    by = {}
    for r in records:
        by.setdefault(r["experiment"], []).append(r)
    lines = [
        "# The paper's claims on the paper set",
        "",
        "Made by `tokensim reproduce` from the run records in `runs/` (one JSON per training run). "
        "Accuracy is over every test task of the paper set's one group (3 users: question text, image, speech), "
        "mean ± sample std over seeds where there are several.",
        "",
    ]
    if "snr" in by:
        lines += _snr_section(by["snr"], plan, out)
    if "temperature" in by or "temperature" in plan.experiments:
        same = [r for r in by.get("snr", []) if r["channel"] == "awgn" and r["info"]["aligned"]]
        lines += _temperature_section(
            by.get("temperature", [])
            + [{**r, "info": {**r["info"], "temperature": DEFAULT_TEMPERATURE}} for r in same],
            plan,
        )
    if "tokens" in by:
        lines += _tokens_section(by["tokens"], plan)
    if "per-snr" in by:
        lines += _per_snr_section(by["per-snr"], by.get("snr", []), plan)
    train_s = sum(r["train_s"] for r in records if r.get("trained_now"))
    total_s = sum(r["total_s"] for r in records)
    lines += [
        "## Cost",
        "",
        f"{len(records)} runs; their training and evaluation took {total_s / 3600:.2f} CPU-process hours "
        f"({train_s / 3600:.2f} h of it training)"
        + (f", {wall_s / 60:.0f} min of wall time for this invocation" if wall_s else "")
        + ".",
        "",
    ]
    text = "\n".join(lines)
    write_text(Path(out) / "index.md", text)
    return text


def _snr_section(records, plan, out) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = plan.snrs_db
    lines = ["## Accuracy vs SNR, with and without alignment (one model over −10…25 dB)", ""]
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), sharey=True)
    curves, val_curves = {}, {}
    for channel in SCENARIOS:
        lines += [f"**{CHANNEL_LABELS[channel]}**", ""]
        lines += ["| SNR dB | " + " | ".join(f"{s:g}" for s in snrs) + " |", "|---|" + "---:|" * len(snrs)]
        acc = {}
        for aligned in (True, False):
            runs = [r for r in records if r["channel"] == channel and r["info"]["aligned"] == aligned]
            acc[aligned] = np.array([[r["accuracy"][f"{s:g}"] for s in snrs] for r in runs])
            val_curves[channel, aligned] = [r["validation"] for r in runs]
            lines.append(
                f"| {ARMS[aligned]} ({len(runs)} seeds) | "
                + " | ".join(_mean_std(acc[aligned][:, i]) for i in range(len(snrs)))
                + " |"
            )
        if len(acc[True]) == len(acc[False]) and len(acc[True]):
            diff = acc[True] - acc[False]
            lines.append("| aligned − baseline | " + " | ".join(_mean_std(diff[:, i]) for i in range(len(snrs))) + " |")
        lines.append("")
        curves[channel] = acc
    for ax, channel in zip(axes, SCENARIOS):
        for aligned, style in ((True, "o-"), (False, "s--")):
            a = curves[channel][aligned]
            if len(a):
                ax.errorbar(
                    snrs,
                    a.mean(0),
                    yerr=a.std(0, ddof=1) if len(a) > 1 else None,
                    fmt=style,
                    ms=4,
                    capsize=2,
                    label=f"{ARMS[aligned]} ({len(a)} seeds)",
                )
        ax.set_title(CHANNEL_LABELS[channel], fontsize=9)
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, Path(out) / "accuracy_vs_snr.png")
    lines += ["![accuracy vs SNR](accuracy_vs_snr.png)", ""]

    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), sharey=True)
    for ax, channel in zip(axes, SCENARIOS):
        for aligned, style in ((True, "-"), (False, "--")):
            runs = val_curves[channel, aligned]
            if runs:
                steps = [s + 1 for s, _ in runs[0]]
                ax.plot(steps, np.mean([[a for _, a in v] for v in runs], 0), style, label=ARMS[aligned])
        for target in plan.accuracy_targets:
            ax.axhline(target, color="0.6", lw=0.8)
        ax.set_title(CHANNEL_LABELS[channel], fontsize=9)
        ax.set_xlabel("fine-tuning step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, Path(out) / "validation_vs_step.png")
    lines += [
        "Validation accuracy (held-out tasks, SNR drawn over the training range) during fine-tuning, "
        "mean over seeds; grey lines: the targets of the token-length table "
        f"({', '.join(f'{t:g}' for t in plan.accuracy_targets)}).",
        "",
        "![validation accuracy vs step](validation_vs_step.png)",
        "",
    ]
    return lines


def _temperature_section(records, plan) -> list[str]:
    snrs = plan.snrs_db
    lines = [
        "## InfoNCE temperature (AWGN, aligned)",
        "",
        f"Caption retrieval right after stage 1 on held-out images and clips at {RETRIEVAL_SNR_DB:g} dB: top-1 over "
        "the 10 class captions, and the cosine similarity of matched minus mismatched pairs. "
        "Then the test accuracy after stage 2.",
        "",
        "| τ | seeds | image top-1 | image cos margin | speech top-1 | speech cos margin | "
        + " | ".join(f"acc {s:g} dB" for s in snrs)
        + " |",
        "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(snrs),
    ]
    for tau in plan.temperatures:
        runs = [r for r in records if r["info"]["temperature"] == tau]
        if not runs:
            continue
        cells = []
        for m in ("image", "audio"):
            cells.append(_mean_std([r["after_alignment"][m]["top1"] for r in runs]))
            cells.append(
                _mean_std(
                    [
                        r["after_alignment"][m]["matched_cosine"] - r["after_alignment"][m]["mismatched_cosine"]
                        for r in runs
                    ]
                )
            )
        cells += [_mean_std([r["accuracy"][f"{s:g}"] for r in runs]) for s in snrs]
        lines.append(f"| {tau:g} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _tokens_section(records, plan) -> list[str]:
    targets = plan.accuracy_targets
    shown = plan.token_snrs_db
    lines = [
        f"## Token length (AWGN, images at {TOKEN_IMAGE_SIZE_PX} px, seed {plan.seeds[0]})",
        "",
        "Every modality sends L tokens of 32 values (speech at most 8, its encoder's output). "
        "These runs train on half the paper set's budget (stage 1: 100 steps, stage 2: 150, validated every 15). "
        "Steps to a: the first fine-tuning step whose validation accuracy reaches a "
        "(checked at each validation; – never in the run).",
        "",
        "| L (text/image/speech) | symbols per task | "
        + " | ".join(f"{ARMS[a]} acc {s:g} dB" for s in shown for a in (True, False))
        + "".join(f" | {ARMS[a]} steps to {t:g}" for t in targets for a in (True, False))
        + " |",
        "|---|---:|" + "---:|" * (2 * len(shown) + 2 * len(targets)),
    ]
    for length in plan.token_lengths:
        runs = {r["info"]["aligned"]: r for r in records if r["info"]["length"] == length}
        if not runs:
            continue
        lengths = next(iter(runs.values()))["info"]["lengths"]
        cells = [f"{runs[a]['accuracy'][f'{s:g}']:.3f}" if a in runs else "–" for s in shown for a in (True, False)]
        cells += [
            str(steps_to(runs[a]["validation"], t) or "–") if a in runs else "–" for t in targets for a in (True, False)
        ]
        symbols = sum(lengths.values()) * 16  # 32 real values a token, two a complex symbol
        lines.append(
            f"| {lengths['text']}/{lengths['image']}/{lengths['audio']} | {symbols} | " + " | ".join(cells) + " |"
        )
    return lines + [""]


def _per_snr_section(records, single, plan) -> list[str]:
    lines = [
        "## One model across SNRs vs one model per SNR (AWGN)",
        "",
        "Per-SNR models train both stages at that SNR only; the single model is the `snr` experiment's "
        "(trained over −10…25 dB), mean over its seeds.",
        "",
        "| SNR dB | one model, aligned | one model, baseline | per-SNR, aligned | per-SNR, baseline |",
        "|---:|---:|---:|---:|---:|",
    ]
    for snr in plan.per_snr_db:
        cells = []
        for aligned in (True, False):
            cells.append(
                _mean_std(
                    [
                        r["accuracy"][f"{snr:g}"]
                        for r in single
                        if r["channel"] == "awgn" and r["info"]["aligned"] == aligned
                    ]
                )
            )
        for aligned in (True, False):
            cells.append(
                _mean_std(
                    [
                        r["accuracy"][f"{snr:g}"]
                        for r in records
                        if r["info"]["trained_snr_db"] == snr and r["info"]["aligned"] == aligned
                    ]
                )
            )
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def _save(fig, path: Path) -> None:
    from matplotlib import pyplot as plt

    from models.paths import atomic_path

    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:])
    plt.close(fig)
