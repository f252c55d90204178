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
from dataclasses import asdict
from pathlib import Path

from sim.reproduce_plan import PAPER_SCENARIOS, RETRIEVAL_SNR_DB, Job, Plan
from sim.reproduce_summary import summarise
from sim.runner import Work, run_work


def run_job(job: Job, out: Path, threads: int = 0, after=None) -> dict:
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
    simulation = Simulation(load_scenario(PAPER_SCENARIOS[job.channel], job.overrides), progress=False)
    record = {**asdict(job), "checkpoint": simulation.checkpoint}
    if simulation.scenario.training.alignment.enabled:
        simulation.train(stage="align")
        generator = torch.Generator().manual_seed(simulation.scenario.seed)
        channel = simulation.uplink.training_channel((RETRIEVAL_SNR_DB, RETRIEVAL_SNR_DB), generator)
        found = caption_similarity(
            simulation.model,
            channel,
            simulation.sampler("test", 500),
            simulation.dataset.captions(),
            ("image", "audio"),
        )
        record["after_alignment"] = {m: _retrieval(f) for m, f in found.items()}
    summary = simulation.train()
    trained = time.perf_counter() - started
    record["accuracy"] = {f"{snr:g}": float(simulation.evaluate(snr).tasks["correct"].mean()) for snr in job.snrs_db}
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
    """Run every job of ``plan`` not yet recorded in ``out``, then write ``out/index.md`` and figures.

    A job that fails does not stop the others (their records are kept); :class:`ReproductionFailed` then
    names the failed ones, and a rerun runs just those."""
    from models.progress import progress_bar

    out = Path(out)
    jobs = plan.jobs()
    started = time.perf_counter()
    _prepare_features(jobs)
    bar = progress_bar(total=len(jobs), enabled=progress, desc="runs")
    _, failed = run_work(
        [Work(job.name, run_job, (job, out), label=job.name) for job in jobs], workers, on_done=lambda *_: bar.update()
    )
    bar.close()
    if failed:
        lines = "\n".join(f"{name}: {error.splitlines()[0]}" for name, error in failed.items())
        raise ReproductionFailed(f"{len(failed)} of {len(jobs)} runs failed (the others are kept):\n{lines}")
    records = [json.loads((out / "runs" / f"{j.name}.json").read_text()) for j in jobs]
    summarise(records, plan, out, wall_s=time.perf_counter() - started)
    return records


class ReproductionFailed(RuntimeError):
    """Some runs failed; the others' records are kept in ``OUT/runs``."""


def _prepare_features(jobs: list[Job]) -> None:
    """Make the data and encode it once per distinct :func:`~sim.checkpoint_plan.data_key` before the workers
    start, so two of them never compute the same cache entry at once."""
    from sim.checkpoint_plan import data_key
    from sim.engine import Simulation
    from sim.scenario import load_scenario

    seen = set()
    for job in jobs:
        scenario = load_scenario(PAPER_SCENARIOS[job.channel], job.overrides)
        key = data_key(scenario)
        if key not in seen:
            seen.add(key)
            simulation = Simulation(scenario, progress=False)
            simulation.features("train"), simulation.features("validation"), simulation.features("test")


# --- the page -------------------------------------------------------------------------------------------
