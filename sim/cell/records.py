"""What the cell loop records, per job, per task and per user (:class:`CellRecords`), and where a user's stream of
payload units lies in its jobs.

A user's jobs lie back to back in one stream of units (complex symbols, or bits in digital mode): job ``j`` is
units ``[j S_u, (j + 1) S_u)`` of user ``u``. The PHY sides of the loop read and write payloads by stream position
(:func:`stream_index`); the loop's records are per job (:func:`jobs_covered`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class CellRecords:
    """What one cell-loop run recorded. Jobs are ``[timelines, users, jobs]`` (job ``j`` of a user is its
    group's task ``j``), tasks ``[timelines, groups, jobs]``, users ``[timelines, users]``; times in seconds,
    slots as indices from 0.

    Jobs: ``arrival_s``, ``encode_start_s``, ``encode_end_s`` (the device's FIFO), ``ready_slot`` (first
    slot its tokens may use), ``done_slot`` (slot in which its last tokens were delivered or given up; -1
    for a job a ``max_slots`` run left unfinished, whose task records then mean nothing), ``on_air_slots``,
    ``waiting_slots`` (queued, not granted), ``harq_slots``
    (all sent, waiting for HARQ feedback), ``res`` (REs its tokens took on air, every attempt),
    ``coded_bits`` and ``erased_values`` (digital: token values lost with a TB that failed for good).
    Tasks: ``uplink_done_s`` (end of the slot the group's last tokens came in), ``critical_user`` (whose
    they were), ``edge_start_s``, ``edge_end_s``.
    Users: ``granted_prb_slots``, ``granted_slots``, ``backlogged_slots``, ``snr_re_db_sum`` (over granted
    slots), ``res``, ``delivered_bits`` (digital: payload bits of ACKed TBs).
    ``active_slots``: [timelines], slots in which anything was queued. ``received``: [timelines, users,
    jobs, num_values] the payloads as delivered (erased values 0). ``tbs``: digital, one entry per TB
    attempt (``slot``, ``timeline``, ``user``, ``mcs``, ``prbs``, ``tbs``, ``payload_bits``, ``coded_bits``,
    ``attempt``, ``ack``, ``sinr_eff_db``, ``shannon_bits``, ``tb``, ``start``). ``transmissions``: analog, one
    entry per user and slot it sent in (``slot``, ``timeline``, ``user``, ``start``, ``end`` in its stream of symbols,
    ``prbs``). ``olla_offset_db``: digital with link adaptation, [users] each user's outer-loop back-off at
    the end (where the next batch starts). ``trace``: when asked for, every slot's ``need``, ``granted``
    ([timelines, users]) and ``owner`` ([timelines, PRBs]).
    """

    slot_s: float
    jobs: dict[str, torch.Tensor]
    tasks: dict[str, torch.Tensor]
    users: dict[str, torch.Tensor]
    active_slots: torch.Tensor
    received: torch.Tensor
    tbs: dict[str, torch.Tensor] = field(default_factory=dict)
    olla_offset_db: torch.Tensor | None = None
    transmissions: dict[str, torch.Tensor] = field(default_factory=dict)
    trace: list[dict] = field(default_factory=list)

    @staticmethod
    def concat(parts: list[CellRecords]) -> CellRecords:
        """Records of runs over different timelines, as one run (timelines stacked)."""
        first = parts[0]
        offsets, shift = [], 0
        for p in parts:
            offsets.append(shift)
            shift += p.active_slots.shape[0]

        def stacked(name):
            tables = [getattr(p, name) for p in parts]
            if not tables[0]:
                return {}
            out = {k: torch.cat([t[k] for t in tables]) for k in tables[0]}
            out["timeline"] = torch.cat([t["timeline"] + o for t, o in zip(tables, offsets)])
            return out

        return CellRecords(
            slot_s=first.slot_s,
            jobs={k: torch.cat([p.jobs[k] for p in parts]) for k in first.jobs},
            tasks={k: torch.cat([p.tasks[k] for p in parts]) for k in first.tasks},
            users={k: torch.cat([p.users[k] for p in parts]) for k in first.users},
            active_slots=torch.cat([p.active_slots for p in parts]),
            received=torch.cat([p.received for p in parts]),
            tbs=stacked("tbs"),
            transmissions=stacked("transmissions"),
            olla_offset_db=parts[-1].olla_offset_db,
        )


def zeroed_records(num_timelines: int, num_users: int, num_jobs: int, device) -> tuple[dict, dict]:
    """The per-job and per-user records of :class:`CellRecords` before the first slot: counts at 0, ``done_slot``
    at -1 (not done). Jobs ``[num_timelines, num_users, num_jobs]``, users ``[num_timelines, num_users]``."""
    B, U, J = num_timelines, num_users, num_jobs
    jobs = {
        k: torch.zeros(B, U, J, dtype=torch.long, device=device)
        for k in ("on_air_slots", "waiting_slots", "harq_slots")
    }
    jobs["done_slot"] = torch.full((B, U, J), -1, dtype=torch.long, device=device)
    jobs["res"] = torch.zeros(B, U, J, dtype=torch.float64, device=device)
    jobs["coded_bits"] = torch.zeros(B, U, J, dtype=torch.float64, device=device)
    users = {
        k: torch.zeros(B, U, dtype=torch.long, device=device)
        for k in ("granted_prb_slots", "granted_slots", "backlogged_slots", "res", "delivered_bits")
    }
    users["snr_re_db_sum"] = torch.zeros(B, U, dtype=torch.float64, device=device)
    return jobs, users


def stream_index(position: torch.Tensor, units_per_job: torch.Tensor, padded: int) -> torch.Tensor:
    """Where unit ``position`` of a user's stream (its jobs back to back, ``units_per_job`` each) lies in
    the padded layout ``[num_jobs * padded]`` of its payloads (broadcasts)."""
    return torch.div(position, units_per_job, rounding_mode="floor") * padded + position % units_per_job


def jobs_covered(ranges, units: torch.Tensor, num_timelines: int, num_jobs: int) -> torch.Tensor:
    """[num_timelines, num_users, num_jobs] int64: how many of the payload ranges ``(b, u, start, end)`` (1-D each,
    end exclusive, non-empty; stream positions) overlap each job. ``units``: [num_users] units per job."""
    count = torch.zeros(num_timelines, len(units), num_jobs + 1, dtype=torch.long, device=units.device)
    b, u, start, end = ranges
    if len(b):
        ones = torch.ones_like(b)
        count.index_put_((b, u, torch.div(start, units[u], rounding_mode="floor")), ones, accumulate=True)
        count.index_put_((b, u, torch.div(end - 1, units[u], rounding_mode="floor") + 1), -ones, accumulate=True)
    return count.cumsum(-1)[..., :num_jobs]
