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
from sim.mac.allocation import Calibration, TokenAwareAllocation
from sim.mac.cell import group_of_user
from sim.runtime import apply_runtime, reseed
from sim.scenario import Scenario, model_source
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
    ``allocation``: the token-aware joint allocation, when the scenario asks for it;
    ``values_per_user``: real values each user sent per task.
    """

    tasks: dict[str, np.ndarray]
    nmse_error: np.ndarray
    nmse_power: np.ndarray
    device_flops: dict[str, int]
    edge_flops: list[int]
    link: dict[str, np.ndarray]
    allocation: dict | None = None
    values_per_user: list[int] | None = None


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
        # ``model_from``: another scenario trains (or has trained) the model this one evaluates
        self.source = model_source(scenario)
        self.checkpoint, self.shaped_by = checkpoint_key(self.source or scenario)
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
        With ``model_from`` set, the source scenario trains (or loads) and this one takes its weights.
        """
        s = self.scenario
        if self.source is not None:
            summary = Simulation(self.source, self.progress).train(force, stage)
            if stage != "align":
                load_checkpoint(self.model, self.checkpoint)
            return summary
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
        """Every group's test tasks through the uplink at the users' SNRs (every user at ``snr_db`` if given).

        Under ``scheduler.policy: token-aware`` the joint allocation (:meth:`allocate`) first sets each
        user's token length, PRBs and, through its power spread over them, SNR.
        """
        s = self.scenario
        self.model.eval()
        snr = np.array([u.snr_db if snr_db is None else snr_db for u in s.users], dtype=float)
        uplink, allocation = self.uplink, None
        if s.scheduler.policy == "token-aware":
            allocation = self.allocate(snr)
            snr = snr + np.array(allocation["snr_shift_db"])
            uplink = Uplink(s, self.device, token_factor=allocation["token_factor"])
        # Its own random stream: the same channels and noise whether this run trained or loaded the checkpoint.
        reseed(s.seed + EVALUATION_STREAM)
        evaluation = self._run_tasks(self.sampler("test", s.evaluation.tasks_per_group), uplink, snr)
        evaluation.allocation = allocation
        evaluation.values_per_user = uplink.values_per_user
        return evaluation

    def _run_tasks(self, sampler: TaskSampler, uplink: Uplink, snr_db: np.ndarray) -> Evaluation:
        """Every task of ``sampler`` through ``uplink`` at per-user ``snr_db`` [num_users]."""
        s = self.scenario
        snr_db = torch.tensor(snr_db, dtype=torch.float32, device=self.device)
        limit = torch.tensor(uplink.values_per_user, device=self.device)
        used = torch.arange(uplink.num_values, device=self.device) < limit[:, None]  # [users, values]
        error = torch.zeros(len(s.users), dtype=torch.float64, device=self.device)
        power = torch.zeros_like(error)
        columns: dict[str, list] = {k: [] for k in ("group", "slot", "question_type", "answer", "predicted")}
        link_counts: dict[str, list] = {}
        slot = 0
        for batch in sampler.in_order(s.evaluation.batch_size):
            tx = self.model.transmit(batch["features"])
            num_slots = batch["answer"].shape[0] // sampler.num_groups
            link = uplink(tx, snr_db.expand(num_slots, -1))
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

    def calibrate(self, snr_db: np.ndarray) -> Calibration:
        """Accuracy per group and REs per user at every token factor and SNR offset of ``scheduler.allocation``,
        on validation tasks (never the test tasks); a digital link is judged by its abstraction here."""
        s = self.scenario
        settings = s.scheduler.allocation
        factors = sorted(set(settings.token_factors))
        shifts = np.array(sorted(settings.calibration_snr_shifts_db), dtype=float)
        probe = s
        if s.link.mode == "digital":
            probe = s.model_copy(update={"link": s.link.model_copy(update={"fidelity": "abstraction"})})
        sampler = self.sampler("test", settings.calibration_tasks_per_group, seed_offset=VALIDATION_STREAM)
        users, groups = len(s.users), len(s.groups)
        accuracy = np.zeros((len(factors), len(shifts), groups))
        res = np.zeros((len(factors), len(shifts), users))
        wait = np.zeros_like(res)
        for i, factor in enumerate(factors):
            uplink = Uplink(probe, self.device, token_factor=[factor] * users)
            for j, shift in enumerate(shifts):
                reseed(s.seed + VALIDATION_STREAM + j)
                run = self._run_tasks(sampler, uplink, snr_db + shift)
                correct, group = run.tasks["correct"], run.tasks["group"]
                accuracy[i, j] = np.bincount(group, correct, groups) / np.maximum(np.bincount(group, None, groups), 1)
                res[i, j] = run.link["channel_uses"].mean(0)
                if "attempts" in run.link:
                    wait[i, j] = (run.link["airtime_slots"] - run.link["attempts"]).mean(0)
        return Calibration(factors, shifts, accuracy, res, wait)

    def allocate(self, snr_db: np.ndarray) -> dict:
        """The token-aware joint allocation at per-user ``snr_db``: token factors, PRBs, SNR shifts."""
        s = self.scenario
        settings = s.scheduler.allocation
        calibration = self.calibrate(snr_db)
        flops = self._device_flops()
        device_s = [sum(flops[m] for m in u.modalities) / (u.device_gflops * 1e9) for u in s.users]
        edge_s = np.array(self._edge_flops()) / (s.compute.edge_gflops * 1e9)
        allocation = TokenAwareAllocation(
            calibration,
            group_of_user(s),
            num_prbs=s.cell.num_prbs,
            reference_prbs=self.uplink.share.prbs_per_user,
            res_per_prb=self.uplink.share.data_symbols_per_slot // self.uplink.share.prbs_per_user,
            slot_s=self.uplink.slot_seconds,
            device_s=device_s,
            edge_s=edge_s,
            deadline_s=s.traffic.deadline_ms / 1e3,
            latency_weight=settings.latency_weight,
            loss_weight=settings.loss_weight,
        )()
        return allocation | {"calibration": calibration}

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
        by_modalities: dict[tuple[str, ...], int] = {}  # counted once per set of modalities, not per group
        flops = []
        for g in self.scenario.groups:
            sent = tuple(m for m in self.model.modalities if m in self.scenario.group_modalities(g))
            if sent not in by_modalities:
                rx = {m: torch.zeros(1, *self.uplink.token_shapes[m], device=self.device) for m in sent}
                present = {m: torch.ones(1, dtype=torch.bool, device=self.device) for m in sent}
                by_modalities[sent] = count_flops(self.model.answer, rx, present)
            flops.append(by_modalities[sent])
        return flops


def _tail_means(history: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """``final_<key>``: mean over the last tenth of the steps (one step is noisy)."""
    tail = history[-max(1, len(history) // 10) :]
    return {f"final_{k}": float(np.mean([h[k] for h in tail])) for k in keys}
