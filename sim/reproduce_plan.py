"""The paper's experiments as a plan of runs: which scenario, overrides, SNRs and arms each run has
(:class:`Plan`, :class:`Job`); :mod:`sim.reproduce` runs them, :mod:`sim.reproduce_summary` tabulates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.config import AlignmentConfig

ROOT = Path(__file__).resolve().parent.parent
PAPER_SCENARIOS = {"awgn": ROOT / "scenarios" / "paper" / "awgn.yaml", "tdl": ROOT / "scenarios" / "paper" / "tdl.yaml"}
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

        def add(experiment, label, channel, seed, aligned, overrides, snrs, **info):
            """Job ``{experiment}-{label}-seed{seed}``: the seed's override first, the plan's overrides (--set)
            last: they hold for every run, over an experiment's own settings."""
            name, overrides = f"{experiment}-{label}-seed{seed}", [f"seed={seed}", *overrides, *self.overrides]
            jobs.append(Job(name, experiment, channel, overrides, list(snrs), dict(aligned=aligned, seed=seed, **info)))

        def arm(aligned):
            return [f"training.alignment.enabled={str(aligned).lower()}"]

        if "snr" in self.experiments:
            for channel in PAPER_SCENARIOS:
                for seed in self.seeds:
                    for aligned in (True, False):
                        add("snr", f"{channel}-{ARMS[aligned]}", channel, seed, aligned, arm(aligned), self.snrs_db)
        if "temperature" in self.experiments:
            for seed in self.seeds if self.temperature_seeds is None else self.temperature_seeds:
                for tau in self.temperatures:
                    if tau == DEFAULT_TEMPERATURE and "snr" in self.experiments and seed in self.seeds:
                        continue  # the snr experiment's aligned AWGN run is this run
                    overrides = [f"training.alignment.temperature={tau}"]
                    add("temperature", f"{tau:g}", "awgn", seed, True, overrides, self.snrs_db, temperature=tau)
        if "tokens" in self.experiments:
            seed = self.seeds[0]
            for length in self.token_lengths:
                for aligned in (True, False):
                    lengths = {"text": length, "image": length, "audio": min(length, 8)}  # 8 log-mel CNN tokens
                    overrides = [
                        f"models.image_size_px={TOKEN_IMAGE_SIZE_PX}",
                        *TOKEN_RUN_TRAINING,
                        *arm(aligned),
                        *(f"tokens.{m}.length={n}" for m, n in lengths.items()),
                    ]
                    label, snrs = f"{length}-{ARMS[aligned]}", self.token_snrs_db
                    add("tokens", label, "awgn", seed, aligned, overrides, snrs, length=length, lengths=lengths)
        if "per-snr" in self.experiments:
            seed = self.seeds[0]
            for snr in self.per_snr_db:
                for aligned in self.per_snr_arms:
                    overrides = [
                        *arm(aligned),
                        f"training.alignment.snr_db_range=[{snr},{snr}]",
                        f"training.finetune.snr_db_range=[{snr},{snr}]",
                    ]
                    label = f"{snr:g}-{ARMS[aligned]}"
                    add("per-snr", label, "awgn", seed, aligned, overrides, [snr], trained_snr_db=snr)
        return jobs
