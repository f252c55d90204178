"""The cell loop: one clock for arrivals, devices, channel, scheduler, power, PHY, HARQ and the edge.

Per slot ``t`` (batched over independent timelines and users; a Python loop
over slots only, idle slots skipped):

1. **Arrivals.** Tasks arrive (snapshot or Poisson); each user device
   encodes its jobs one at a time, first come first served, at its
   ``device_gflops`` (:func:`~sim.mac.traffic.fifo`). A job's tokens join the
   user's uplink queue at the first slot boundary after its encoding ends.
2. **Channel.** Every backlogged user's channel over the whole carrier at
   slot ``t``, from the scenario's Sionna model as a process in time
   (:class:`~sim.phy.fading.SlotFading`), once for the CQI and the tokens.
3. **CQI.** Per-PRB SINR at the user's reference power per RE (its
   ``snr_db``), ``scheduler.cqi_delay_slots`` old.
4. **Scheduling.** Each PRB to at most one user, never more than a user can
   use (:mod:`sim.mac.scheduler`); due HARQ retransmissions first.
5. **Power.** The user's power spread over its granted subcarriers
   (:class:`~sim.mac.power.UplinkPower`) sets its SNR per RE this slot.
6. **Link adaptation** (digital): MCS from the granted PRBs' CQI and the
   outer-loop back-off, TB size from MCS and grant (:mod:`sim.cell.harq`).
7. **PHY.** The user's next token symbols (analog) or its TB's QAM symbols
   (digital) on exactly its granted REs, over this slot's channel on those
   PRBs, estimated and equalised there (:class:`~sim.phy.analog.GrantedPrbLink`).
8. **HARQ** (digital): feedback ``round_trip_slots`` later; only then is a
   retransmission due.
9. **Edge.** A group's task enters the edge server's FIFO when the last
   tokens of all its users are in (delivered, or given up after HARQ); the
   answer is computed afterwards from the tokens exactly as delivered.

The loop records timestamps and per-slot states, never a latency: for each
job, the slots in which its tokens were on air, queued for PRBs, or waiting
for HARQ feedback (:class:`~sim.cell.records.CellRecords`). :mod:`sim.metrics`
turns the records into results.
"""

from __future__ import annotations

import math

import torch

from sim.cell.adaptation import McsChoice, OuterLoopStart
from sim.cell.analog import AnalogPayloads, PrbRows
from sim.cell.harq import TransportBlocks
from sim.cell.records import CellRecords, jobs_covered, stream_index, zeroed_records
from sim.mac.power import UplinkPower
from sim.mac.scheduler import IDLE, SCHEDULERS, grants
from sim.mac.traffic import fifo
from sim.phy.analog import GrantedPrbLink
from sim.phy.channels import channel_model
from sim.phy.fading import SlotFading
from sim.phy.numerology import NUM_OFDM_SYMBOLS_PER_SLOT, NUM_SUBCARRIERS_PER_PRB, slot_duration_s
from sim.phy.quantization import UniformQuantizer
from sim.topology import cell_geometry

MAX_SLOTS = 50_000_000  # a run longer than this is a bug (7 hours of 0.5 ms slots)


def _release(owner: torch.Tensor, users: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """``owner`` [B, P] with each user's PRBs beyond its first ``usable`` [B, A] (in PRB order) made idle."""
    rank = (owner[:, :, None] == users[None, None, :]).long().cumsum(1) - 1  # [B, P, A]
    keep = (owner[:, :, None] == users[None, None, :]) & (rank < usable[:, None, :])
    return torch.where(keep.any(-1), owner, IDLE)


class CellLoop:
    """One cell of a scenario, slot by slot: see the module docstring for the order of events.

    :param scenario: validated scenario
    :param values_per_user: [num_users] real token values a user sends per task (its payload)
    :param device_s: [num_users] seconds a device computes per task (encoders and transmitter)
    :param edge_s: [num_groups] seconds the edge computes per task of the group
    :param num_timelines: independent copies of the cell run at once (snapshots)
    :param device: torch device
    :param snr_db: [num_users] reference SNR per RE instead of the users' ``snr_db``
    :param shares: ``token-aware``: [num_users] PRBs of each user's share
    :param outer_loop: digital: where the users' outer loops start and whether the timelines share them
        (:class:`~sim.cell.adaptation.OuterLoopStart`; ``None``: each its own, from 0 dB)
    :param channel_seed: seed of the fading draws (``None``: Sionna's generator, which the engine seeds)

    :input arrival_s: [num_timelines, num_groups, num_jobs], float64, non-decreasing along jobs.
    :input payload: [num_timelines, num_users, num_jobs, num_values], float. Each user's token values per
        task (mean power 1/2 per value), padded beyond ``values_per_user``; ``None`` to count resources only
        (nothing is carried or delivered: full-buffer studies).
    :input max_slots: stop after this many slots even if tasks are left (``None``: when every task is in)
    :input trace: also record every slot's needs, grants and PRB owners (``CellRecords.trace``), for tests
    :output: :class:`CellRecords`.

    >>> loop = CellLoop(scenario, [64, 64], device_s=[1e-3, 2e-3], edge_s=[1e-4], num_timelines=8, device=cpu)
    >>> records = loop(torch.zeros(8, 1, 1, dtype=torch.float64), payload)
    """

    def __init__(
        self,
        scenario,
        values_per_user,
        device_s,
        edge_s,
        num_timelines,
        device,
        snr_db=None,
        shares=None,
        outer_loop=None,
        channel_seed=None,
    ):
        s = scenario
        self.scenario, self.device = s, device
        self.num_users, self.num_groups = len(s.users), len(s.groups)
        self.num_prbs = s.cell.num_prbs
        self.num_timelines = num_timelines
        self.slot_s = slot_duration_s(s.cell.subcarrier_spacing_hz)
        self.group_of_user = torch.tensor(s.group_of_user(), device=device)
        self.res_per_prb = NUM_SUBCARRIERS_PER_PRB * (NUM_OFDM_SYMBOLS_PER_SLOT - len(s.cell.pilot_ofdm_symbol_indices))
        self.power = UplinkPower(s)
        if snr_db is not None:
            self.power.snr_db = torch.as_tensor(snr_db, dtype=torch.float64)
        self.digital = s.link.mode == "digital"
        self.values_per_user = torch.tensor(values_per_user, device=device)
        bits_per_value = s.link.bits_per_value if self.digital else None
        # a job's payload in units the queue counts: complex symbols (analog) or bits (digital)
        self.units = self.values_per_user * bits_per_value if self.digital else self.values_per_user // 2
        self.device_s = torch.as_tensor(device_s, dtype=torch.float64, device=device)
        self.edge_s = torch.as_tensor(edge_s, dtype=torch.float64, device=device)
        self.prb_link = GrantedPrbLink(
            s.cell.subcarrier_spacing_hz, s.cell.pilot_ofdm_symbol_indices, s.channel.csi, device=str(device)
        )
        from sionna.phy.channel import subcarrier_frequencies

        self.frequencies = subcarrier_frequencies(
            self.num_prbs * NUM_SUBCARRIERS_PER_PRB, s.cell.subcarrier_spacing_hz, device=str(device)
        )
        policy = s.scheduler.policy
        options = {"beta": s.scheduler.pf_beta} if policy == "proportional-fair" else {}
        if policy in ("equal-share", "token-aware"):
            options["shares"] = shares
        self.scheduler_class, self.scheduler_options = SCHEDULERS[policy], options
        self.cqi_delay_slots = s.scheduler.cqi_delay_slots
        self.outer_loop, self.channel_seed = outer_loop or OuterLoopStart(), channel_seed

    def _fading(self) -> SlotFading:
        s = self.scenario
        ch = s.channel
        model = channel_model(
            ch.model,
            carrier_frequency_hz=s.cell.carrier_frequency_hz,
            delay_spread_s=ch.delay_spread_s,
            speed_mps=ch.speed_mps,
            device=str(self.device),
            geometry=cell_geometry(s),
        )
        return SlotFading(
            ch.model,
            model,
            self.num_timelines * self.num_users,
            self.slot_s,
            ch.speed_mps,
            s.cell.carrier_frequency_hz,
            device=str(self.device),
            seed=self.channel_seed,
        )

    def __call__(
        self, arrival_s: torch.Tensor, payload: torch.Tensor | None, max_slots=None, trace=False
    ) -> CellRecords:
        dev, T = self.device, self.slot_s
        B, U, P = self.num_timelines, self.num_users, self.num_prbs
        J = arrival_s.shape[-1]
        R = self.res_per_prb
        g_of_u = self.group_of_user

        # 1. Arrivals and the devices' FIFO queues
        arrival = arrival_s.to(dev, torch.float64)[:, g_of_u]  # [B, U, J]
        encode_start, encode_end = fifo(arrival, self.device_s[None, :, None])
        ready_slot = torch.ceil(encode_end / T - 1e-9).long()

        # Each user's jobs back to back in one stream of units; job j is units [j S_u, (j + 1) S_u)
        units = self.units.to(dev)
        per_job = int(units.max())
        job_start = torch.arange(J, device=dev)[None, :] * units[:, None]  # [U, J]
        job_end = job_start + units[:, None]

        def position(pos, user):
            return stream_index(pos, units[user], per_job)

        if self.digital:
            quantizer = UniformQuantizer(self.scenario.link.bits_per_value)
            bits = None if payload is None else quantizer.to_bits(payload.to(dev)).reshape(B, U, J * per_job)
            every_grant = torch.arange(P + 1, dtype=torch.float64, device=dev).clamp_min(1)[:, None].expand(-1, U)
            shift = self.power.shift_db(every_grant).T  # [U, P + 1]: each user's SNR shift at each grant size
            adaptation = McsChoice(
                self.scenario.link,
                self.scenario.cell,
                B,
                U,
                shift,
                dev,
                outer_loop=self.outer_loop,
                power_headroom=self.scenario.scheduler.power_headroom,
            )
            link = TransportBlocks(self.scenario.link, self.scenario.cell, adaptation, bits, position)
        else:
            symbols = None
            if payload is not None:
                symbols = torch.view_as_complex(payload.to(dev, torch.float32).reshape(B, U, J, -1, 2).contiguous())
                symbols = symbols.reshape(B, U, J * per_job)
            link = AnalogPayloads(symbols, position, R, units * J)

        scheduler = self.scheduler_class(U, P, batch_size=B, **self.scheduler_options)
        fading = self._fading()
        snr_ref = torch.pow(10.0, self.power.snr_db.to(dev) / 10)  # [U]
        jobs, users_rec = zeroed_records(B, U, J, dev)
        unresolved = torch.zeros(B, U, J, dtype=torch.long, device=dev)  # TBs still open that carry part of a job
        active_slots = torch.zeros(B, dtype=torch.long, device=dev)
        sent = torch.zeros(B, U, dtype=torch.long, device=dev)  # units of new data put on air so far
        traced: list[dict] = []

        t = int(ready_slot.min())
        while True:
            if t > MAX_SLOTS:
                raise RuntimeError(f"the cell loop did not deliver every task within {MAX_SLOTS} slots")
            ready = ready_slot <= t
            not_done = jobs["done_slot"] < 0
            backlog = ready.sum(-1) * units - sent  # [B, U]: FIFO, so the first ready jobs are the arrived ones
            link.observe_feedback(t)  # 8. HARQ feedback of attempts round_trip_slots ago
            due = link.due(t)  # retransmissions that may go now
            wants = (backlog > 0) | (due[0] >= 0 if due is not None else False)
            if not bool(wants.any()):  # nothing to send: on to the next arrival or feedback
                later = ready_slot[ready_slot > t]
                upcoming = min(float(later.min()) if len(later) else math.inf, link.next_event(t))
                if max_slots is not None and upcoming >= max_slots:
                    break
                if upcoming == math.inf:
                    if bool(not_done.any()):
                        raise RuntimeError("the cell loop has undelivered tasks and nothing left to happen")
                    break
                jobs["harq_slots"] += (ready & not_done) * (int(upcoming) - t)  # all sent, waiting for feedback
                t = int(upcoming)
                continue
            waiting = jobs_covered(link.waiting_ranges(t), units, B, J) > 0 if due is not None else None

            # 2.-3. The channel of the users with something to send, and its CQI at their reference power
            users = torch.nonzero(wants.any(0)).squeeze(-1)
            links = (torch.arange(B, device=dev)[:, None] * U + users[None, :]).flatten()
            h = fading.response(t, links, self.frequencies).view(B, len(users), P, NUM_SUBCARRIERS_PER_PRB)
            h_cqi = h
            if self.cqi_delay_slots:
                h_cqi = fading.response(max(0, t - self.cqi_delay_slots), links, self.frequencies).view_as(h)
            sinr_ref = snr_ref[users][None, :, None] * (h_cqi.real.square() + h_cqi.imag.square()).mean(-1)
            rate = R * torch.log2(1 + sinr_ref)  # [B, A, P] achievable bits per PRB

            # 4. Scheduling: retransmissions first, with exactly their PRBs
            new_need = link.need(users, backlog[:, users], sinr_ref, scheduler.channel_aware)
            first = torch.zeros_like(new_need, dtype=torch.bool) if due is None else due[0][:, users] >= 0
            need = new_need if due is None else torch.where(first, due[1][:, users], new_need)
            group_backlog = torch.zeros(B, self.num_groups, dtype=torch.float64, device=dev)
            group_backlog.index_add_(1, g_of_u, backlog.to(torch.float64))
            owner = scheduler(users, need, rate, group_backlog[:, g_of_u[users]], first)
            if due is not None:  # a retransmission short of its PRBs waits; new data uses no more than it needs
                usable = torch.where(first & (grants(owner, U)[:, users] >= need), need, torch.minimum(need, new_need))
                owner = _release(owner, users, usable)
            granted = grants(owner, U)  # [B, U]
            if trace:
                full_need = torch.zeros(B, U, dtype=torch.long, device=dev)
                full_need[:, users] = need
                traced.append({"slot": t, "need": full_need, "granted": granted, "owner": owner})

            # 5. Power: each granted user's SNR per RE this slot
            snr_re_db = self.power(granted).to(dev)

            # 6.-8. Link adaptation, the PHY on the granted PRBs, HARQ
            rows = PrbRows.of(owner, users, h, snr_re_db)
            sinr_granted = None
            if self.digital:  # the CQI at the power per RE the grant leaves, on the granted PRBs
                sinr_granted = torch.zeros(B, U, P, device=dev)
                spread = torch.pow(10.0, self.power.shift_db(granted)[:, users] / 10).to(sinr_ref)[..., None]
                sinr_granted[rows.b, rows.u, rows.p] = (sinr_ref * spread)[rows.b, rows.a, rows.p].float()
            events = link.transmit(t, rows, granted, backlog, sent, self.prb_link, rate, due, sinr_granted)
            scheduler.observe(owner, events["decoded_bits"])
            if self.digital:
                users_rec["delivered_bits"] += events["payload_bits"]
                created, resolved = (link.ranges(events[k]) for k in ("created", "resolved"))
                unresolved += jobs_covered(created, units, B, J) - jobs_covered(resolved, units, B, J)

            # What each job did in this slot: on air, queued for PRBs, or waiting for HARQ feedback
            r0, r1 = events["start"], events["end"]
            on_air = (job_start < r1[..., None]) & (job_end > r0[..., None]) & (r1 > r0)[..., None]
            overlap = (torch.minimum(r1[..., None], job_end) - torch.maximum(r0[..., None], job_start)).clamp_min(0)
            share = overlap / (r1 - r0).clamp_min(1)[..., None]  # of the slot's resources, by payload carried
            jobs["res"] += share * events["res"][..., None]
            jobs["coded_bits"] += share * events["coded_bits"][..., None]
            queued = ready & (job_end > sent[..., None])  # tokens not yet on air at the slot's start
            if waiting is not None:
                queued |= waiting
            queued &= ~on_air & not_done
            jobs["on_air_slots"] += on_air
            jobs["waiting_slots"] += queued
            jobs["harq_slots"] += ready & not_done & ~on_air & ~queued
            sent = events["sent"]
            done = ready & not_done & (job_end <= sent[..., None]) & (unresolved == 0)
            jobs["done_slot"] = torch.where(done, t, jobs["done_slot"])

            users_rec["granted_prb_slots"] += granted
            users_rec["granted_slots"] += granted > 0
            users_rec["backlogged_slots"] += wants
            users_rec["snr_re_db_sum"] += torch.where(granted > 0, snr_re_db, 0.0)
            users_rec["res"] += events["res"]
            active_slots += wants.any(1)
            if not bool((jobs["done_slot"] < 0).any()):
                break
            t += 1
            if max_slots is not None and t >= max_slots:
                break

        # 9. The edge: a task is in when its last member's tokens are; one FIFO server per timeline
        done_s = (jobs["done_slot"] + 1).double() * T  # [B, U, J]
        index = g_of_u[None, :, None].expand(B, U, J)
        uplink_done = torch.full((B, self.num_groups, J), -math.inf, dtype=torch.float64, device=dev)
        uplink_done = uplink_done.scatter_reduce(1, index, done_s, "amax")
        last_in = done_s == uplink_done.gather(1, index)
        user_index = torch.arange(U, device=dev)[None, :, None].expand(B, U, J)
        critical = torch.full((B, self.num_groups, J), U, dtype=torch.long, device=dev)
        critical = critical.scatter_reduce(1, index, torch.where(last_in, user_index, U), "amin")
        edge_service = self.edge_s[None, :, None].expand(B, -1, J)
        edge_start, edge_end = fifo(uplink_done.reshape(B, -1), edge_service.reshape(B, -1))

        if payload is None:
            values = None
        elif not self.digital:
            values = torch.view_as_real(link.received.view(B, U, J, per_job)).reshape(B, U, J, -1)
        else:
            value_ok = link.bit_ok.view(B, U, J, -1, link.quantizer.bits_per_value).all(-1)
            values = link.quantizer.from_bits(link.received.view(B, U, J, -1)) * value_ok
            in_payload = torch.arange(value_ok.shape[-1], device=dev) < self.values_per_user[:, None, None]
            jobs["erased_values"] = (~value_ok & in_payload[None]).sum(-1)
        jobs.update(arrival_s=arrival, encode_start_s=encode_start, encode_end_s=encode_end, ready_slot=ready_slot)
        return CellRecords(
            slot_s=T,
            jobs=jobs,
            tasks={
                "arrival_s": arrival_s.to(dev, torch.float64),
                "uplink_done_s": uplink_done,
                "critical_user": critical,
                "edge_start_s": edge_start.view(B, self.num_groups, J),
                "edge_end_s": edge_end.view(B, self.num_groups, J),
            },
            users=users_rec,
            active_slots=active_slots,
            received=None if values is None else values[..., : payload.shape[-1]],
            tbs=link.tb_records() if self.digital else {},
            transmissions={} if self.digital else link.transmissions(),
            trace=traced,
            olla_offset_db=link.olla.offset_db.mean(0) if self.digital and link.olla is not None else None,
        )
