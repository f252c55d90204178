"""The simulation engine: build a scenario's cell and models, train, evaluate.

``Simulation(scenario)`` wires the data set, the cached encoder features, the
split model and the cell's uplink together; ``train()`` fine-tunes through the
uplink unless a checkpoint for the same configuration exists; ``evaluate()``
runs every group's test tasks at the users' SNRs and returns per-task and
per-user records from which :mod:`sim.metrics` builds the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.alignment import align_transceivers
from models.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from models.data import DATASETS
from models.data.fashion_avqa import ANSWERS
from models.encoders import encoder_output_shape
from models.features import QUESTIONS, SplitFeatures, count_flops, load_features
from models.paths import digest
from models.system import SplitModel
from models.training import TaskSampler, finetune_split_model, task_accuracy
from sim.errors import ScenarioError
from sim.runtime import apply_runtime, reseed
from sim.scenario import Scenario
from sim.uplink import Uplink

EVALUATION_STREAM = 1 << 32  # offset of the evaluation's seed from the scenario's


STAGES = ("align", "finetune")
ALIGNED_MODULES = ("transmitters", "receivers")  # what stage 1 trains and saves
VALIDATION_STREAM = 1 << 31  # offset of the validation tasks' seed from the evaluation's


def checkpoint_key(scenario: Scenario, stage: str = "finetune") -> tuple[str, dict]:
    """Hash of everything that shapes the model trained up to ``stage``, and that content.

    Users' SNRs, ids, compute speeds, the evaluation and the name are left
    out, and so is how the digital link decodes (``link.fidelity``, the
    decoder): one model serves every SNR of the training range, so changing them
    reuses the checkpoint. Which modalities each user of each group sends
    (and how many users share the carrier) shapes the channel in the loop, so
    it is in. The stage-1 key leaves out stage 2's settings, so fine-tuning
    variants start from one aligned checkpoint.
    """
    s = scenario
    layout = [[sorted(s.user(uid).modalities) for uid in g.users] for g in s.groups]
    training = s.training.model_dump(mode="json", exclude={"audio_encoder"})
    if stage == "align":
        training = {"alignment": training["alignment"], "train_tasks_per_group": training["train_tasks_per_group"]}
    elif not s.training.alignment.enabled:
        training["alignment"] = {"enabled": False}
    shaped_by = {
        "stage": stage,
        "seed": s.seed,
        "dataset": s.dataset.model_dump(mode="json", exclude={"fashion_mnist_dir", "wordnet_dir", "espeak_ng"}),
        "cell": s.cell.model_dump(mode="json", exclude={"bandwidth_hz"}),
        "channel": s.channel.model_dump(mode="json"),
        "layout": {"groups": layout, "num_users": len(s.users)},
        "tokens": {m: t.model_dump() for m, t in s.tokens.items()},
        "models": s.models.model_dump(mode="json"),
        "audio_encoder": s.training.audio_encoder.model_dump(mode="json"),
        "training": training,
        "version": 3,  # bump when training or its inputs change meaning
    }
    if s.link.mode == "digital":  # the noise proxy trains on; analog keys stay as they were
        shaped_by["link"] = s.link.model_dump(
            mode="json", exclude={"fidelity": True, "decoder": True, "num_bp_iter": True, "harq": {"round_trip_slots"}}
        )
    return digest(shaped_by), shaped_by


@dataclass
class Evaluation:
    """Raw outcome of evaluating every group's test tasks.

    ``tasks``: column arrays, one row per task (``group``, ``slot``,
    ``question_type``, ``answer``, ``predicted``, ``correct``).
    ``nmse_error`` / ``nmse_power``: [num_users] sums of squared token error
    and of token power over everything each user sent.
    ``device_flops``: FLOPs per task on a device, per modality (encoder and
    transmitter); ``edge_flops``: FLOPs per task at the edge, per group.
    ``link``: the uplink's per-task counts, each [num_slots, num_users] (row
    ``slot`` of ``tasks``): ``airtime_slots``, ``channel_uses`` and, digital,
    the coded and information bits, MCS and TB outcomes (see :class:`~sim.uplink.Uplink`).
    """

    tasks: dict[str, np.ndarray]
    nmse_error: np.ndarray
    nmse_power: np.ndarray
    device_flops: dict[str, int]
    edge_flops: list[int]
    link: dict[str, np.ndarray]


class Simulation:
    """One scenario, ready to train and evaluate.

    :param scenario: validated scenario
    :param progress: show progress bars
    """

    def __init__(self, scenario: Scenario, progress: bool = True):
        self.scenario = scenario
        self.progress = progress
        self.device = apply_runtime(scenario.device, scenario.seed)
        self.dataset = DATASETS[scenario.dataset.name](scenario.dataset, scenario.seed)
        self._features: dict[str, SplitFeatures] = {}
        self._samplers: dict[tuple, TaskSampler] = {}
        self.checkpoint, self.shaped_by = checkpoint_key(scenario)
        self.uplink = Uplink(scenario, self.device)
        encoder_dims = {m: encoder_output_shape(m, scenario.models)[1] for m in scenario.tokens}
        self.model = SplitModel(scenario.tokens, encoder_dims, scenario.models, answers=list(ANSWERS)).to(self.device)
        self.present = {
            m: torch.tensor([m in scenario.group_modalities(g) for g in scenario.groups]) for m in scenario.tokens
        }

    def features(self, split: str) -> SplitFeatures:
        if split not in self._features:
            s = self.scenario
            self._features[split] = load_features(
                self.dataset, s.tokens.keys(), s.models, s.training.audio_encoder, split, self.device, self.progress
            )
        return self._features[split]

    def sampler(self, split: str, tasks_per_group: int, seed_offset: int = 0) -> TaskSampler:
        """Every group's tasks of ``split``, drawn once per (split, count, seed offset)."""
        key = (split, tasks_per_group, seed_offset)
        if key not in self._samplers:
            s = self.scenario
            tables = [
                self.dataset.tasks(split, tasks_per_group, s.group_modalities(g), seed=s.seed * 1000 + i + seed_offset)
                for i, g in enumerate(s.groups)
            ]
            self._samplers[key] = TaskSampler(tables, self.present, self.features(split))
        return self._samplers[key]

    @property
    def checkpoint_path(self):
        return checkpoint_path(self.checkpoint)

    def train(self, force: bool = False, stage: str = "all") -> dict:
        """Run the training ``stage`` (``align``, ``finetune`` or ``all``), or load its checkpoint.

        Stage 1 (alignment) is skipped when ``training.alignment.enabled`` is
        false: the baseline fine-tunes from freshly initialised transceivers.
        Each stage's checkpoint is keyed by what shapes it; ``force`` retrains
        the stage asked for (both for ``all``), never a stage it builds on.
        Returns the summary of the last stage, with the history of every stage run or loaded.
        """
        s = self.scenario
        if stage not in (*STAGES, "all"):
            raise ValueError(f"stage: {stage!r} is not one of {', '.join(STAGES)}, all")
        if stage == "align" and not s.training.alignment.enabled:
            raise ScenarioError("training.alignment.enabled", False, "there is no alignment stage to run", "true")
        if stage != "align" and not force:
            summary = load_checkpoint(self.model, self.checkpoint)
            if summary is not None:
                return {**summary, "loaded": True}
        history: list[dict] = []
        if s.training.alignment.enabled:
            summary = self._align(force=force and stage != "finetune")
            if stage == "align":
                return summary
            history = summary["history"]
        return self._finetune(history)

    def _align(self, force: bool) -> dict:
        key, shaped_by = checkpoint_key(self.scenario, "align")
        if not force:
            summary = load_checkpoint(self.model, key, modules=ALIGNED_MODULES)
            if summary is not None:
                return {**summary, "loaded": True}
        s = self.scenario
        sampler = self.sampler("train", s.training.train_tasks_per_group)
        reseed(s.seed)
        generator = torch.Generator().manual_seed(s.seed)
        channel = self.uplink.training_channel(s.training.alignment.snr_db_range, generator)
        history = align_transceivers(
            self.model,
            channel,
            sampler,
            self.dataset.captions(),
            QUESTIONS,
            s.training.alignment,
            s.seed,
            self.progress,
        )
        summary = {"stage": "align", **_tail_means(history, ("loss",)), "history": history}
        save_checkpoint(self.model, key, shaped_by, summary, modules=ALIGNED_MODULES)
        return {**summary, "loaded": False}

    def _finetune(self, aligned_history: list[dict]) -> dict:
        s = self.scenario
        sampler = self.sampler("train", s.training.train_tasks_per_group)
        validation = self.sampler("test", s.training.validation_tasks_per_group, seed_offset=VALIDATION_STREAM)
        reseed(s.seed + 1)
        generator = torch.Generator().manual_seed(s.seed + 1)
        channel = self.uplink.training_channel(s.training.finetune.snr_db_range, generator)
        validation_channel = self.uplink.training_channel(
            s.training.finetune.snr_db_range, torch.Generator().manual_seed(s.seed + VALIDATION_STREAM)
        )
        history = finetune_split_model(
            self.model,
            channel,
            sampler,
            s.training.finetune,
            s.seed,
            self.progress,
            validate=lambda: task_accuracy(self.model, validation_channel, validation, s.evaluation.batch_size),
            validation_every=s.training.validation_every,
        )
        summary = {
            "stage": "finetune",
            **_tail_means(history, ("loss", "accuracy")),
            "final_val_accuracy": history[-1]["val_accuracy"],
            "history": aligned_history + history,
        }
        save_checkpoint(self.model, self.checkpoint, self.shaped_by, summary)
        return {**summary, "loaded": False}

    @torch.no_grad()
    def evaluate(self, snr_db: float | None = None) -> Evaluation:
        """Every group's test tasks through the uplink at the users' SNRs (every user at ``snr_db`` if given)."""
        s = self.scenario
        self.model.eval()
        # Its own random stream: the same channels and noise whether this run trained or loaded the checkpoint.
        reseed(s.seed + EVALUATION_STREAM)
        sampler = self.sampler("test", s.evaluation.tasks_per_group)
        snr_db = torch.tensor(
            [u.snr_db if snr_db is None else snr_db for u in s.users], dtype=torch.float32, device=self.device
        )
        limit = torch.tensor(self.uplink.values_per_user, device=self.device)
        used = torch.arange(self.uplink.num_values, device=self.device) < limit[:, None]  # [users, values]
        error = torch.zeros(len(s.users), dtype=torch.float64, device=self.device)
        power = torch.zeros_like(error)
        columns: dict[str, list] = {k: [] for k in ("group", "slot", "question_type", "answer", "predicted")}
        link_counts: dict[str, list] = {}
        slot = 0
        for batch in sampler.in_order(s.evaluation.batch_size):
            tx = self.model.transmit(batch["features"])
            num_slots = batch["answer"].shape[0] // sampler.num_groups
            link = self.uplink(tx, snr_db.expand(num_slots, -1))
            logits = self.model.answer(link["tokens"], batch["present"])
            sent, got = link["payload_tx"], link["payload_rx"]
            error += ((got - sent).square() * used).sum((0, 2)).double()
            power += (sent.square() * used).sum((0, 2)).double()
            columns["group"].append(batch["group"])
            columns["slot"].append(
                torch.arange(slot, slot + num_slots, device=self.device).repeat_interleave(sampler.num_groups)
            )
            columns["question_type"].append(batch["question_type"])
            columns["answer"].append(batch["answer"])
            columns["predicted"].append(logits.argmax(-1))
            for k, v in link["stats"].items():
                link_counts.setdefault(k, []).append(v)
            slot += num_slots
        tasks = {k: torch.cat(v).cpu().numpy() for k, v in columns.items()}
        tasks["correct"] = tasks["answer"] == tasks["predicted"]
        return Evaluation(
            tasks=tasks,
            nmse_error=error.cpu().numpy(),
            nmse_power=power.cpu().numpy(),
            device_flops=self._device_flops(),
            edge_flops=self._edge_flops(),
            link={k: torch.cat(v).cpu().numpy() for k, v in link_counts.items()},
        )

    def _device_flops(self) -> dict[str, int]:
        """FLOPs one device spends per task on each modality: encoder and transmitter."""
        features = self.features("test")
        one = features.gather({m: torch.zeros(1, dtype=torch.long, device=self.device) for m in features.tokens})
        return {
            m: features.encoder_flops[m] + count_flops(self.model.transmitters[m], one[m]["tokens"], one[m]["lengths"])
            for m in self.scenario.tokens
        }

    def _edge_flops(self) -> list[int]:
        """FLOPs the edge spends per task of each group: its receivers, backbone and head."""
        flops = []
        for g in self.scenario.groups:
            sent = [m for m in self.model.modalities if m in self.scenario.group_modalities(g)]
            rx = {m: torch.zeros(1, *self.uplink.token_shapes[m], device=self.device) for m in sent}
            present = {m: torch.ones(1, dtype=torch.bool, device=self.device) for m in sent}
            flops.append(count_flops(self.model.answer, rx, present))
        return flops


def _tail_means(history: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """``final_<key>``: mean over the last tenth of the steps (one step is noisy)."""
    tail = history[-max(1, len(history) // 10) :]
    return {f"final_{k}": float(np.mean([h[k] for h in tail])) for k in keys}
