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

from models.cache import exclusive
from models.checkpoints import checkpoint_path, load_checkpoint
from models.data import DATASETS
from models.encoders import encoder_output_shape
from models.features import SplitFeatures, count_flops, load_features
from models.system import SplitModel
from models.training import TaskSampler
from sim import training_stages
from sim.cell import CellLoop, CellRecords, OuterLoopStart
from sim.checkpoint_plan import STAGES, checkpoint_key
from sim.errors import ScenarioError
from sim.mac.allocation import Calibration, EqualShare, TokenAwareAllocation
from sim.mac.power import UplinkPower
from sim.mac.traffic import arrival_times_s
from sim.phy.numerology import slot_duration_s
from sim.runtime import Runtime
from sim.scenario import model_source
from sim.schema import Scenario
from sim.uplink import Uplink

WARM_UP_PASSES = 12  # passes over the first snapshot batch, at most, that warm the outer loop up
WARM_UP_GAIN = 4  # the warm-up's outer loop takes steps this many times larger (same rest point, reached sooner)
SETTLED_DB = 0.5  # a warm-up pass that moves no user's back-off by more than this ends the warm-up


@dataclass
class Evaluation:
    """Raw outcome of evaluating every group's test tasks through the cell loop.

    ``tasks``: column arrays, one row per task (``group``, ``timeline``, ``job``: where the task sits in the
    loop's records; ``question_type``, ``answer``, ``predicted``, ``correct``).
    ``nmse_error`` / ``nmse_power``: [num_users] sums of squared token error and of token power over
    everything each user sent.
    ``device_flops``: FLOPs per task on a device, per modality (encoder and transmitter); ``edge_flops``:
    FLOPs per task at the edge, per group.
    ``records``: the cell loop's :class:`~sim.cell.CellRecords` (timelines of every batch stacked).
    ``allocation``: the token-aware joint allocation, when the scenario asks for it;
    ``values_per_user``: real values each user sent per task; ``snr_db``: the users' reference SNRs.
    ``answers`` and ``question_needs``: the data set's, which ``answer`` and ``question_type`` index.
    """

    tasks: dict[str, np.ndarray]
    nmse_error: np.ndarray
    nmse_power: np.ndarray
    device_flops: dict[str, int]
    edge_flops: list[int]
    records: CellRecords
    values_per_user: list[int]
    snr_db: list[float]
    answers: tuple[str, ...]
    question_needs: dict[str, frozenset[str]]
    allocation: dict | None = None


class Simulation:
    """One scenario, ready to train and evaluate.

    :param scenario: validated scenario
    :param progress: show progress bars
    """

    def __init__(self, scenario: Scenario, progress: bool = True):
        self.scenario = scenario
        self.progress = progress
        self.runtime = Runtime.start(scenario.device, scenario.seed)
        self.device = self.runtime.device
        self.dataset = DATASETS[scenario.dataset.name](scenario.dataset)
        self._features: dict[str, SplitFeatures] = {}
        self._samplers: dict[tuple, TaskSampler] = {}
        # ``model_from``: another scenario trains (or has trained) the model this one evaluates
        self.source = model_source(scenario)
        self.checkpoint, self.shaped_by = checkpoint_key(self.source or scenario)
        self.uplink = Uplink(scenario, self.device)
        encoder_dims = {m: encoder_output_shape(m, scenario.models)[1] for m in scenario.tokens}
        answers = list(self.dataset.answers)
        self.model = SplitModel(scenario.tokens, encoder_dims, scenario.models, answers=answers).to(self.device)
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

    def sampler(self, split: str, tasks_per_group: int) -> TaskSampler:
        """Every group's tasks of ``split``, drawn once per (split, count) by the data set's seed alone:
        two seeds of a scenario train, validate and test on the same tasks."""
        key = (split, tasks_per_group)
        if key not in self._samplers:
            s = self.scenario
            tables = [
                self.dataset.tasks(split, tasks_per_group, s.group_modalities(g), stream=i)
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
            if stage != "align" and load_checkpoint(self.model, self.checkpoint) is None:
                raise RuntimeError(f"model_from: the checkpoint {checkpoint_path(self.checkpoint)} went missing")
            return summary
        if stage not in (*STAGES, "all"):
            raise ValueError(f"stage: {stage!r} is not one of {', '.join(STAGES)}, all")
        if stage == "align" and not s.training.alignment.enabled:
            raise ScenarioError("training.alignment.enabled", False, "there is no alignment stage to run", "true")
        if stage != "align" and not force:
            summary = load_checkpoint(self.model, self.checkpoint)
            if summary is not None:
                return {**summary, "loaded": True}
        # one process trains a missing checkpoint; another that needs it waits here, then loads it
        with exclusive(checkpoint_path(self.checkpoint)):
            if stage != "align" and not force:
                summary = load_checkpoint(self.model, self.checkpoint)  # trained meanwhile by the other
                if summary is not None:
                    return {**summary, "loaded": True}
            history: list[dict] = []
            if s.training.alignment.enabled:
                summary = training_stages.align(self, force=force and stage != "finetune")
                if stage == "align":
                    return summary
                history = summary["history"]
            return training_stages.finetune(self, history)

    @torch.no_grad()
    def evaluate(self, snr_db: float | None = None) -> Evaluation:
        """Every group's test tasks through the cell loop at the users' SNRs (every user at ``snr_db`` if given).

        Under ``scheduler.policy: token-aware`` the joint allocation (:meth:`allocate`) first sets each
        user's token length and PRB share.
        """
        s = self.scenario
        self.model.eval()
        snr = np.array([u.snr_db if snr_db is None else snr_db for u in s.users], dtype=float)
        allocation = None
        if s.scheduler.policy == "token-aware":
            allocation = self.allocate(snr)
        uplink = Uplink(s, self.device, token_factor=allocation and allocation["token_factor"])
        # Its own random stream: the same channels and noise whether this run trained or loaded the checkpoint.
        self.runtime.enter("evaluation")
        shares = allocation and allocation["prbs"]
        evaluation = self._run_cell(self.sampler("test", s.evaluation.tasks_per_group), uplink, s, snr, shares)
        evaluation.allocation = allocation
        return evaluation

    def _run_cell(self, sampler: TaskSampler, uplink: Uplink, scenario, snr_db, shares=None) -> Evaluation:
        """Every task of ``sampler`` through the cell loop of ``scenario`` (its scheduler, traffic and link) at
        reference SNRs ``snr_db`` [num_users]; the answers from the tokens as the loop delivered them.

        Snapshots run ``evaluation.batch_size`` timelines at a time; the outer loop's back-offs of one batch
        are where the next starts. A snapshot is a slot of a cell that has been running, so passes over the
        first batch (discarded) first warm the back-offs up, with :data:`WARM_UP_GAIN` times the steps (the
        loop rests at the same BLER, sooner), until a pass moves none by more than :data:`SETTLED_DB`.
        Poisson traffic is one timeline of every task, its outer loop starting cold.
        """
        s = scenario
        flops = self._device_flops()
        device_s = [sum(flops[m] for m in u.modalities) / (u.device_gflops * 1e9) for u in s.users]
        edge_s = (np.array(self._edge_flops()) / (s.compute.edge_gflops * 1e9)).tolist()
        limit = torch.tensor(uplink.values_per_user, device=self.device)
        used = torch.arange(uplink.num_values, device=self.device) < limit[:, None]  # [users, values]
        error = torch.zeros(len(s.users), dtype=torch.float64, device=self.device)
        power = torch.zeros_like(error)
        columns: dict[str, list] = {k: [] for k in ("group", "timeline", "job", "question_type", "answer", "predicted")}
        parts: list[CellRecords] = []

        def loop(num_timelines, olla_offset_db=None, gain=1):
            return CellLoop(
                s,
                uplink.values_per_user,
                device_s,
                edge_s,
                num_timelines,
                self.device,
                snr_db=snr_db,
                shares=shares,
                outer_loop=OuterLoopStart(olla_offset_db, gain if s.traffic.arrival == "snapshot" else False),
            )

        def answer(batch, tx, payload, gain, received, timeline, job):
            nonlocal error, power
            sent, got = payload / gain, received / gain
            error += ((got - sent).square() * used).sum((0, 2)).double()
            power += (sent.square() * used).sum((0, 2)).double()
            logits = self.model.answer(uplink.unpack(got, tx), batch["present"])
            columns["group"].append(batch["group"])
            columns["timeline"].append(timeline)
            columns["job"].append(job)
            columns["question_type"].append(batch["question_type"])
            columns["answer"].append(batch["answer"])
            columns["predicted"].append(logits.argmax(-1))

        num_groups = sampler.num_groups
        if s.traffic.arrival == "snapshot":
            offset = None
            if s.link.mode == "digital" and s.link.mcs == "auto":
                first = next(iter(sampler.in_order(s.evaluation.batch_size)))
                payload, _ = uplink.normalise(uplink.pack(self.model.transmit(first["features"])))
                arrivals = _snapshot_arrivals(payload, num_groups)
                for _ in range(WARM_UP_PASSES):
                    records = loop(payload.shape[0], offset, WARM_UP_GAIN)(arrivals, payload[:, :, None])
                    moved = (records.olla_offset_db - offset).abs() if offset is not None else None
                    offset = records.olla_offset_db
                    # a user that sent every first attempt at the lowest MCS its grant allows is not held back by
                    # its back-off (its SNR is below the target's): the back-off only climbs and does not matter
                    if moved is not None and bool((moved[~_at_lowest_mcs(records, s)] < SETTLED_DB).all()):
                        break
            start = 0
            for batch in sampler.in_order(s.evaluation.batch_size):
                tx = self.model.transmit(batch["features"])
                payload, gain = uplink.normalise(uplink.pack(tx))  # [timelines, users, values]
                records = loop(payload.shape[0], offset)(_snapshot_arrivals(payload, num_groups), payload[:, :, None])
                offset = records.olla_offset_db
                parts.append(records)
                timelines = torch.arange(start, start + payload.shape[0], device=self.device)
                answer(
                    batch,
                    tx,
                    payload,
                    gain,
                    records.received[:, :, 0],
                    timelines.repeat_interleave(num_groups),
                    torch.zeros_like(batch["group"]),
                )
                start += payload.shape[0]
        else:
            batches, transmitted = [], []
            for batch in sampler.in_order(s.evaluation.batch_size):
                transmitted.append(self.model.transmit(batch.pop("features")))  # the encoder outputs can go
                batches.append(batch)
            sent = [uplink.normalise(uplink.pack(tx)) for tx in transmitted]
            payload = torch.cat([p for p, _ in sent])  # [tasks, users, values]
            arrival = arrival_times_s(s.traffic, num_groups, payload.shape[0], s.seed)
            records = loop(1)(torch.as_tensor(arrival, device=self.device)[None], payload.transpose(0, 1)[None])
            parts.append(records)
            received = records.received[0].transpose(0, 1)  # [tasks, users, values]
            job = 0
            for batch, tx, (p, gain) in zip(batches, transmitted, sent):
                n = p.shape[0]
                jobs = torch.arange(job, job + n, device=self.device).repeat_interleave(num_groups)
                answer(batch, tx, p, gain, received[job : job + n], torch.zeros_like(jobs), jobs)
                job += n
        tasks = {k: torch.cat(v).cpu().numpy() for k, v in columns.items()}
        tasks["correct"] = tasks["answer"] == tasks["predicted"]
        return Evaluation(
            tasks=tasks,
            nmse_error=error.cpu().numpy(),
            nmse_power=power.cpu().numpy(),
            device_flops=flops,
            edge_flops=self._edge_flops(),
            records=CellRecords.concat(parts),
            values_per_user=list(uplink.values_per_user),
            snr_db=[float(x) for x in snr_db],
            answers=tuple(self.dataset.answers),
            question_needs=self.dataset.question_needs,
        )

    @torch.no_grad()
    def calibrate(self, snr_db: np.ndarray) -> Calibration:
        """Accuracy per group and REs per user at every token factor and SNR offset of ``scheduler.allocation``,
        on validation tasks (never the test tasks), through the cell loop with equal shares and snapshots; a
        digital link is judged by its abstraction here."""
        s = self.scenario
        settings = s.scheduler.allocation
        factors = sorted(set(settings.token_factors))
        shifts = np.array(sorted(settings.calibration_snr_shifts_db), dtype=float)
        probe = s.model_copy(
            update={
                "scheduler": s.scheduler.model_copy(update={"policy": "equal-share"}),
                "traffic": s.traffic.model_copy(update={"arrival": "snapshot"}),
                "link": s.link.model_copy(update={"fidelity": "abstraction"}) if s.link.mode == "digital" else s.link,
            }
        )
        sampler = self.sampler("validation", settings.calibration_tasks_per_group)  # never the test tasks
        users, groups = len(s.users), len(s.groups)
        accuracy = np.zeros((len(factors), len(shifts), groups))
        res = np.zeros((len(factors), len(shifts), users))
        wait = np.zeros_like(res)
        for i, factor in enumerate(factors):
            uplink = Uplink(s, self.device, token_factor=[factor] * users)
            for j, shift in enumerate(shifts):
                self.runtime.enter("validation", j)
                run = self._run_cell(sampler, uplink, probe, snr_db + shift)
                correct, group = run.tasks["correct"], run.tasks["group"]
                accuracy[i, j] = np.bincount(group, correct, groups) / np.maximum(np.bincount(group, None, groups), 1)
                jobs = run.records.jobs
                res[i, j] = jobs["res"].mean((0, 2)).cpu().numpy()
                wait[i, j] = jobs["harq_slots"].double().mean((0, 2)).cpu().numpy()
        return Calibration(factors, shifts, accuracy, res, wait)

    def allocate(self, snr_db: np.ndarray) -> dict:
        """The token-aware joint allocation at per-user ``snr_db``: token factors, PRBs, SNR shifts."""
        s = self.scenario
        settings = s.scheduler.allocation
        calibration = self.calibrate(snr_db)
        flops = self._device_flops()
        device_s = [sum(flops[m] for m in u.modalities) / (u.device_gflops * 1e9) for u in s.users]
        edge_s = np.array(self._edge_flops()) / (s.compute.edge_gflops * 1e9)
        share = EqualShare(s.cell.num_prbs, len(s.users), len(s.cell.pilot_ofdm_symbol_indices))
        allocation = TokenAwareAllocation(
            calibration,
            s.group_of_user(),
            num_prbs=s.cell.num_prbs,
            power=UplinkPower(s),
            res_per_prb=share.data_symbols_per_slot // share.prbs_per_user,
            slot_s=slot_duration_s(s.cell.subcarrier_spacing_hz),
            device_s=device_s,
            edge_s=edge_s,
            deadline_s=s.traffic.deadline_ms / 1e3,
            latency_weight=settings.latency_weight,
            loss_weight=settings.loss_weight,
        )()
        return allocation | {"calibration": calibration}

    def _device_flops(self) -> dict[str, int]:
        """FLOPs one device spends per task on each modality: encoder and transmitter."""
        features = self.features("validation")
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


def _at_lowest_mcs(records: CellRecords, scenario) -> torch.Tensor:
    """[num_users] bool: every first attempt of the user used the lowest MCS usable on its grant."""
    from sim.cell.tb_configs import transport_block_table

    table = transport_block_table(
        scenario.cell.num_prbs, len(scenario.cell.pilot_ofdm_symbol_indices), scenario.link.mcs_table
    )
    lowest = table.usable.float().argmax(0).to(records.tbs["mcs"].device)  # [num_prbs + 1]
    first = records.tbs["attempt"] == 1
    above = first & (records.tbs["mcs"] > lowest[records.tbs["prbs"]])
    users = torch.arange(len(scenario.users), device=above.device)
    return ~(records.tbs["user"][above][:, None] == users).any(0)


def _snapshot_arrivals(payload: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[timelines, groups, 1] zeros: in a snapshot every group's one task arrives at t = 0."""
    return torch.zeros(payload.shape[0], num_groups, 1, dtype=torch.float64, device=payload.device)
