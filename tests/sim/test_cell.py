"""The cell loop: conservation in every slot, queueing theory, HARQ timing, link adaptation, scheduling gain,
the latency breakdown, and Sionna SYS's own blocks as a reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch
from sionna.phy import config
from sionna.phy.channel import subcarrier_frequencies
from sionna.phy.channel.tr38901 import TDL

from sim.cell import CellLoop, OuterLoopStart
from sim.metrics import BREAKDOWN, task_latencies
from sim.phy.fading import SlotFading, SumOfSinusoidsFading, frequency_response
from sim.phy.quantization import UniformQuantizer
from sim.scenario import validate_scenario

CPU = torch.device("cpu")
SLOT_S = 0.5e-3
RES_PER_PRB = 144


def scenario(tiny, users, groups=None, **sections):
    """The tiny scenario with ``users`` (dicts) in ``groups`` (default: a group of one per user) and other sections."""
    tiny["users"] = users
    tiny["groups"] = groups or [{"id": f"g{u['id']}", "users": [u["id"]]} for u in users]
    return validate_scenario(tiny | sections)


def sender(uid, snr_db=10.0, modalities=("text", "image"), **extra):
    return {"id": uid, "modalities": list(modalities), "snr_db": snr_db} | extra


def run(
    s,
    values,
    timelines,
    jobs=1,
    arrival_s=None,
    device_s=None,
    edge_s=None,
    payload=True,
    seed=0,
    max_slots=None,
    trace=False,
    **options,
):
    """One cell-loop run of ``s`` with random payloads; returns (records, payload)."""
    config.seed = seed
    users, groups = len(s.users), len(s.groups)
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(timelines, users, jobs, max(values), generator=generator) / math.sqrt(2) if payload else None
    if arrival_s is None:
        arrival_s = torch.zeros(timelines, groups, jobs, dtype=torch.float64)
    loop = CellLoop(
        s,
        values,
        device_s if device_s is not None else [0.0] * users,
        edge_s if edge_s is not None else [0.0] * groups,
        timelines,
        CPU,
        **options,
    )
    return loop(arrival_s, data, max_slots=max_slots, trace=trace), data


def poisson_arrivals(rate_per_s, timelines, groups, jobs, seed=0):
    gaps = np.random.default_rng(seed).exponential(1 / rate_per_s, (timelines, groups, jobs))
    return torch.as_tensor(gaps.cumsum(-1))


# ------------------------------------------------------------------------------------------- the channel


@pytest.mark.parametrize("letter", ["A", "D"])
def test_the_tdl_process_is_sionnas_tdl_for_the_same_draws(letter):
    tdl = TDL(letter, 100e-9, 3.5e9, min_speed=30.0, max_speed=30.0, device="cpu")
    config.seed = 5
    a, tau = tdl(6, 40, 1 / SLOT_S)  # Sionna's own channel over 40 slots
    config.seed = 5
    process = SumOfSinusoidsFading(tdl, 6, device="cpu")
    for k in (0, 1, 17, 39):  # any slot, asked in any order
        ours, delays = process(torch.full((6,), k * SLOT_S), torch.arange(6))
        torch.testing.assert_close(ours, a[:, 0, 0, 0, 0, :, k], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(delays, tau[:, 0, 0])


def test_a_flat_rayleigh_process_has_unit_power_and_the_jakes_correlation():
    config.seed = 6
    speed, carrier = 10.0, 3.5e9
    doppler_hz = speed * carrier / 299_792_458.0
    fading = SlotFading("rayleigh", object(), 4000, SLOT_S, speed, carrier, device="cpu")
    links = torch.arange(4000)
    h0 = fading(0, links)[0][:, 0]
    assert abs(float(h0.abs().square().mean()) - 1) < 0.05
    for lag in (4, 16, 40):
        h = fading(lag, links)[0][:, 0]
        correlation = float((h * h0.conj()).real.mean())
        assert abs(correlation - scipy.special.j0(2 * math.pi * doppler_hz * lag * SLOT_S)) < 0.05


# ------------------------------------------------------------------------------------------- conservation


def test_a_stream_position_lands_in_its_jobs_padded_payload():
    from sim.cell.records import stream_index

    units = torch.tensor([3, 5])  # two users: 3 and 5 units a job, payloads padded to 5
    positions = torch.tensor([[0, 2, 3, 8], [0, 4, 5, 12]])
    expected = torch.tensor([[0, 2, 5, 12], [0, 4, 5, 12]])  # job 1 of user 0 starts at its padded slot 5
    assert torch.equal(stream_index(positions, units[:, None], 5), expected)


@pytest.mark.parametrize(
    "mode, policy, channel",
    [
        ("analog", "proportional-fair", "tdl-a"),
        ("analog", "round-robin", "umi"),
        ("analog", "token-aware", "awgn"),
        ("digital", "equal-share", "tdl-a"),
        ("digital", "task-aware", "umi"),
        ("digital", "max-rate", "rayleigh"),
    ],
)
def test_conservation_in_every_slot(tiny, mode, policy, channel):
    """No PRB twice, grants within the carrier and the need, every token value carried exactly once (or erased
    after its last HARQ attempt), no retransmission before its NACK is back, one TB per user and slot, on
    exactly the user's grant."""
    sends = (["text"], ["image", "audio"])
    placed = {"distance_m": 60.0} if channel == "umi" else {}
    users = [sender(f"u{i}", snr, sends[i % 2], **placed) for i, snr in enumerate([20.0, 8.0, 0.0, -6.0])]
    groups = [{"id": "a", "users": ["u0", "u1"]}, {"id": "b", "users": ["u2", "u3"]}]
    # the MAC is under test: TBs judged by Sionna's EESM abstraction, which sends no symbols (the fastest)
    link = {
        "mode": mode,
        "fidelity": "abstraction",
        "abstraction": "eesm",
        "harq": {"max_retx": 2, "round_trip_slots": 3},
    }
    s = scenario(
        tiny, users, groups, cell={"num_prbs": 6}, scheduler={"policy": policy}, link=link, channel={"model": channel}
    )
    values = [96, 160, 64, 128]
    options = {"shares": [2, 1, 1, 2]} if policy == "token-aware" else {}
    records, payload = run(
        s,
        values,
        timelines=3,
        jobs=8,
        arrival_s=poisson_arrivals(400.0, 3, 2, 8),
        device_s=[1e-3, 3e-4, 2e-4, 1e-3],
        trace=True,
        **options,
    )
    # A grant is an owner per PRB, so no PRB can go twice; what is checked is that grants stay within the
    # carrier and the needs, and that each user's tokens rode exactly its grant, only once they were ready.
    granted_at = {}
    for step in records.trace:
        granted, need = step["granted"], step["need"]
        assert (granted.sum(-1) <= s.cell.num_prbs).all() and (granted <= need).all()
        granted_at[step["slot"]] = granted
    sent = records.transmissions if mode == "analog" else records.tbs
    units = torch.tensor(values) // 2 if mode == "analog" else torch.tensor(values) * 8
    for k in range(len(sent["slot"])):
        slot, b, u = (int(sent[c][k]) for c in ("slot", "timeline", "user"))
        assert int(sent["prbs"][k]) == int(granted_at[slot][b, u])
        end = sent["end"][k] if mode == "analog" else sent["start"][k] + sent["payload_bits"][k]
        jobs = torch.arange(int(sent["start"][k]) // units[u], (int(end) - 1) // units[u] + 1)
        assert bool((records.jobs["ready_slot"][b, u, jobs] <= slot).all())
    if mode == "analog":
        for b in range(3):
            for u, v in enumerate(values):
                mine = (sent["timeline"] == b) & (sent["user"] == u)
                order = torch.argsort(sent["slot"][mine])
                start, end = sent["start"][mine][order], sent["end"][mine][order]
                assert start[0] == 0 and end[-1] == 8 * v // 2  # every symbol of the 8 jobs ...
                assert torch.equal(start[1:], end[:-1])  # ... once, in order
                assert (sent["prbs"][mine] * RES_PER_PRB >= end - start).all()  # within the granted REs
        return
    tb = records.tbs
    max_attempts = 1 + s.link.harq.max_retx
    quantizer = UniformQuantizer(s.link.bits_per_value)
    for b in range(3):
        for u, v in enumerate(values):
            mine = (tb["timeline"] == b) & (tb["user"] == u)
            slots = tb["slot"][mine]
            assert len(slots.unique()) == len(slots)  # one TB per user and slot
            first = mine & (tb["attempt"] == 1)
            order = torch.argsort(tb["start"][first])
            start = tb["start"][first][order]
            end = start + tb["payload_bits"][first][order]
            assert start[0] == 0 and end[-1] == 8 * v * 8 and torch.equal(start[1:], end[:-1])  # each bit once
            expected = quantizer(payload[b, u, :, :v])
            got = records.received[b, u, :, :v]
            lost = torch.zeros(8 * v, dtype=torch.bool)
            for k in torch.nonzero(mine).squeeze(-1).tolist():
                attempts = (tb["tb"] == tb["tb"][k]) & (tb["timeline"] == b)
                assert int(tb["attempt"][attempts].max()) <= max_attempts
                if tb["attempt"][k] > 1:  # a retransmission: its NACK came back first
                    before = attempts & (tb["attempt"] == tb["attempt"][k] - 1)
                    assert not bool(tb["ack"][before])
                    assert int(tb["slot"][k] - tb["slot"][before]) >= s.link.harq.round_trip_slots
                if not tb["ack"][k] and tb["attempt"][k] == max_attempts:
                    first_value = int(tb["start"][k]) // 8
                    last_value = (int(tb["start"][k] + tb["payload_bits"][k]) - 1) // 8
                    lost[first_value : last_value + 1] = True
            lost = lost.view(8, v)
            torch.testing.assert_close(got[~lost], expected[~lost])  # delivered exactly ...
            assert float(got[lost].abs().sum()) == 0  # ... or erased, after its last attempt
            assert int(records.jobs["erased_values"][b, u].sum()) == int(lost.sum())


# ------------------------------------------------------------------------------------------- latency


def test_the_latency_breakdown_is_measured_term_by_term_and_sums_to_the_latency(tiny):
    users = [
        sender(f"u{i}", snr, m) for i, (snr, m) in enumerate([(15.0, ["text"]), (3.0, ["image"]), (-4.0, ["audio"])])
    ]
    link = {
        "mode": "digital",
        "fidelity": "abstraction",
        "abstraction": "eesm",
        "harq": {"max_retx": 3, "round_trip_slots": 4},
    }
    s = scenario(
        tiny,
        users,
        [{"id": "g", "users": ["u0", "u1", "u2"]}],
        cell={"num_prbs": 4},
        scheduler={"policy": "proportional-fair"},
        link=link,
    )
    records, _ = run(
        s,
        [64, 128, 96],
        timelines=2,
        jobs=30,
        arrival_s=poisson_arrivals(150.0, 2, 1, 30),
        device_s=[4e-3, 1e-3, 2e-3],
        edge_s=[3e-3],
    )
    group, timeline, job = (
        (torch.arange(60) * 0).numpy(),
        (torch.arange(60) // 30).numpy(),
        (torch.arange(60) % 30).numpy(),
    )
    terms = task_latencies(records, group, timeline, job)
    np.testing.assert_allclose(sum(terms[k] for k in BREAKDOWN), terms["latency"], rtol=0, atol=1e-9)
    for k in BREAKDOWN:
        assert (terms[k] >= -1e-12).all(), k
        assert terms[k].max() > 0, k  # every queue of this loaded cell was busy at some point


@pytest.mark.parametrize("policy", ["equal-share", "round-robin", "proportional-fair", "max-rate", "task-aware"])
def test_one_user_without_queueing_waits_for_nothing(tiny, policy):
    s = scenario(
        tiny,
        [sender("u0", 20.0)],
        cell={"num_prbs": 6},
        channel={"model": "awgn", "csi": "perfect"},
        scheduler={"policy": policy},
    )
    device_s = 3 * SLOT_S  # encoding ends on a slot boundary
    for symbols, slots in ((50, 1), (6 * RES_PER_PRB + 1, 2), (20 * RES_PER_PRB, 4)):
        records, _ = run(s, [2 * symbols], timelines=1, device_s=[device_s], edge_s=[1e-4])
        terms = task_latencies(records, np.array([0]), np.array([0]), np.array([0]))
        assert math.isclose(terms["airtime"][0], slots * SLOT_S)
        assert terms["uplink_queueing"][0] == pytest.approx(0, abs=1e-12)
        assert terms["latency"][0] == pytest.approx(device_s + slots * SLOT_S + 1e-4, abs=1e-12)


def test_encoding_that_ends_mid_slot_waits_for_the_next_slot_boundary(tiny):
    s = scenario(tiny, [sender("u0", 20.0)], cell={"num_prbs": 6}, channel={"model": "awgn", "csi": "perfect"})
    records, _ = run(s, [100], timelines=1, device_s=[0.7e-3])
    terms = task_latencies(records, np.array([0]), np.array([0]), np.array([0]))
    assert terms["uplink_queueing"][0] == pytest.approx(0.3e-3, abs=1e-12)
    assert terms["latency"][0] == pytest.approx(0.7e-3 + 0.3e-3 + SLOT_S, abs=1e-12)


@pytest.mark.parametrize("load", [0.5, 0.8])
def test_device_and_uplink_queues_wait_as_pollaczek_khinchine(tiny, load):
    """M/D/1: Poisson tasks, fixed service D: mean wait lambda D^2 / (2 (1 - rho)), within 10 %.

    The device queue serves D = 2 slots of encoding per task; the uplink queue of a user whose every task
    fills the whole carrier for 2 slots (and whose encoding takes no time) serves D = 2 slots of PRBs.
    100 timelines x 600 tasks, the first 100 of each left out (the queues start empty).
    """
    s = scenario(tiny, [sender("u0", 20.0)], cell={"num_prbs": 1}, channel={"model": "awgn", "csi": "perfect"})
    service_s = 2 * SLOT_S
    rate = load / service_s
    expected = rate * service_s**2 / (2 * (1 - load))
    arrivals = poisson_arrivals(rate, 100, 1, 600, seed=1)
    device, _ = run(s, [2], timelines=100, jobs=600, arrival_s=arrivals, device_s=[service_s], payload=False)
    waited = (device.jobs["encode_start_s"] - device.jobs["arrival_s"])[..., 100:]
    assert abs(float(waited.mean()) / expected - 1) < 0.1
    uplink, _ = run(s, [2 * 2 * RES_PER_PRB], timelines=100, jobs=600, arrival_s=arrivals, payload=False)
    waited = uplink.jobs["waiting_slots"][..., 100:].double() * SLOT_S  # slots queued while another task had the PRB
    assert abs(float(waited.mean()) / expected - 1) < 0.1


# ------------------------------------------------------------------------------------------- link adaptation


def test_the_outer_loop_holds_the_first_attempt_bler_at_its_target_at_link_level(tiny):
    """TDL-A, LS estimates, every bit decoded, a fixed SNR: over > 2000 first attempts the BLER is within
    [0.5, 1.5] x link.bler_target, though the SINR reports (the CQI of the true channel) are optimistic."""
    link = {"mode": "digital", "fidelity": "link", "bler_target": 0.1, "harq": {"max_retx": 0}}
    s = scenario(tiny, [sender("u0", 10.0)], cell={"num_prbs": 4}, link=link)
    records, _ = run(s, [64000], timelines=4, seed=1)
    first = records.tbs["attempt"] == 1
    assert int(first.sum()) >= 2000
    bler = 1 - float(records.tbs["ack"][first].float().mean())
    assert 0.05 <= bler <= 0.15, bler


# ------------------------------------------------------------------------------------------- scheduling


def test_channel_aware_scheduling_gives_lower_token_nmse_than_round_robin_on_a_selective_channel(tiny):
    """Six users, each 2 PRBs of analog tokens on 24 PRBs of TDL-A with 300 ns delay spread: PF and max-rate
    put each user on its strongest PRBs; round-robin, channel-blind, does not."""
    users = [sender(f"u{i}", 5.0) for i in range(6)]
    nmse = {}
    for policy in ("round-robin", "proportional-fair", "max-rate"):
        s = scenario(
            tiny,
            users,
            cell={"num_prbs": 24},
            channel={"model": "tdl-a", "delay_spread_s": 300e-9},
            scheduler={"policy": policy},
        )
        records, payload = run(s, [2 * 2 * RES_PER_PRB] * 6, timelines=64, seed=1)
        nmse[policy] = float((records.received - payload).square().sum() / payload.square().sum())
    assert nmse["proportional-fair"] < 0.75 * nmse["round-robin"], nmse
    assert nmse["max-rate"] < 0.75 * nmse["round-robin"], nmse


def test_task_aware_lowers_mean_latency_against_round_robin(tiny):
    """A large group (2 x 3000 symbols) and a small one (2 x 300) on 4 PRBs: shortest group first is optimal;
    round-robin's turn comes to the small group only after the large one's users had theirs."""
    modalities = (["text"], ["image"])
    users = [sender(f"u{i}", 20.0, modalities[i % 2]) for i in range(4)]
    groups = [{"id": "large", "users": ["u0", "u1"]}, {"id": "small", "users": ["u2", "u3"]}]
    latency = {}
    for policy in ("round-robin", "task-aware"):
        s = scenario(
            tiny,
            users,
            groups,
            cell={"num_prbs": 4},
            channel={"model": "awgn", "csi": "perfect"},
            scheduler={"policy": policy},
        )
        records, _ = run(s, [6000, 6000, 600, 600], timelines=8, payload=False)
        latency[policy] = float(records.tasks["edge_end_s"].mean())
    # the small group's 6 PRB-slots take 2 slots; then the large group's 42 end at slot 12
    assert math.isclose(latency["task-aware"], (2 + 12) / 2 * SLOT_S)
    assert latency["round-robin"] > latency["task-aware"] + 0.25e-3


def test_proportional_fair_beats_round_robin_in_sum_log_throughput(tiny):
    """Full buffers on TDL-A: PF's multiuser diversity gives a clearly higher sum of log throughputs."""
    users = [sender(f"u{i}", snr) for i, snr in enumerate(np.linspace(-5, 20, 6))]
    totals = {}
    for policy in ("round-robin", "proportional-fair"):
        s = scenario(
            tiny,
            users,
            cell={"num_prbs": 12},
            channel={"model": "tdl-a", "speed_mps": 3.0},
            scheduler={"policy": policy},
        )
        records, _ = run(s, [10**9] * 6, timelines=4, payload=False, max_slots=400)
        rate = records.users["res"].double() * torch.log2(
            1 + 10 ** (records.users["snr_re_db_sum"] / records.users["granted_slots"].clamp_min(1) / 10)
        )
        totals[policy] = float(torch.log(rate.clamp_min(1)).sum())
    assert totals["proportional-fair"] >= totals["round-robin"] + 1.0, totals


# ------------------------------------------------------------------------------------------- Sionna's own loop


def sionna_reference_loop(s, timelines, slots, seed):
    """Full-buffer PF with the PHY abstraction from Sionna SYS's blocks alone, as in its end-to-end tutorial.

    Per slot: the channel (the same process and draws as the cell loop), the achievable rate of every PRB,
    ``PFSchedulerSUMIMO``, the power spread over the granted subcarriers (``spread_across_subcarriers``),
    ``OuterLoopLinkAdaptation`` fed the ``EESM`` of the grant's SINRs (the tutorial feeds the last slot's
    effective SINR; the grant's own is the report the cell loop gives, so both loops know the same) and the
    last slot's HARQ feedback, then ``PHYAbstraction``. Returns [timelines, users] information bits per slot.
    """
    from sionna.sys import EESM, OuterLoopLinkAdaptation, PFSchedulerSUMIMO
    from sionna.sys.utils import spread_across_subcarriers

    from sim.phy.abstraction import pusch_phy_abstraction
    from sim.phy.channels import channel_model

    users, num_prbs = len(s.users), s.cell.num_prbs
    model = channel_model(
        "tdl-a", carrier_frequency_hz=3.5e9, delay_spread_s=s.channel.delay_spread_s, speed_mps=s.channel.speed_mps
    )
    fading = SlotFading("tdl-a", model, timelines * users, SLOT_S, s.channel.speed_mps, 3.5e9, device="cpu", seed=seed)
    frequencies = subcarrier_frequencies(12 * num_prbs, 30e3)
    phy = pusch_phy_abstraction(1)
    eesm = EESM(device="cpu")
    pf = PFSchedulerSUMIMO(users, num_prbs, 1, batch_size=timelines, beta=s.scheduler.pf_beta, device="cpu")
    olla = OuterLoopLinkAdaptation(phy, users, bler_target=s.link.bler_target, batch_size=timelines, device="cpu")
    snr = 10 ** (torch.tensor([u.snr_db for u in s.users]) / 10)
    reference_prbs = max(1, num_prbs // users)
    total_power = snr * 12 * reference_prbs  # per RE at the reference share: snr (noise 1 per RE)
    rate_last = torch.zeros(timelines, users)
    feedback = torch.full((timelines, users), -1, dtype=torch.int32)
    last_mcs = torch.full((timelines, users), 3, dtype=torch.int32)
    delivered = torch.zeros(timelines, users, dtype=torch.float64)
    for slot in range(slots):
        a, tau = fading(slot, torch.arange(timelines * users))
        gain = frequency_response(a, tau, frequencies).abs().square().view(timelines, users, -1)
        rate = RES_PER_PRB * torch.log2(1 + snr[None, :, None] * gain.view(timelines, users, num_prbs, 12).mean(-1))
        scheduled = pf(rate_last, rate.permute(0, 2, 1)[:, None])  # [timelines, 1, prbs, users, 1]
        per_subcarrier = scheduled.repeat_interleave(12, dim=2).expand(-1, 12, -1, -1, -1)  # 12 data symbols
        power = spread_across_subcarriers(total_power.expand(timelines, 12, users).float(), per_subcarrier)
        # [timelines, users, 1, symbols, subcarriers] -> SINR [timelines, symbols, subcarriers, users, 1]
        sinr = (power[:, :, 0] * gain[:, :, None, :]).permute(0, 2, 3, 1)[..., None]
        num_re = per_subcarrier.sum((1, 2, 4)).to(torch.int32)
        report = eesm(sinr, mcs_index=last_mcs, mcs_table_index=1, per_stream=False)
        mcs = olla(num_re, harq_feedback=feedback, sinr_eff=torch.where(num_re > 0, report, 0.0))
        bits, feedback, _, _, _ = phy(mcs, sinr=sinr, mcs_table_index=1, mcs_category=0)
        last_mcs = torch.where(num_re > 0, mcs, last_mcs)
        delivered += bits
        rate_last = bits.float()
    return delivered / slots


def test_full_buffer_pf_throughput_matches_a_loop_of_sionnas_own_blocks(tiny):
    """Per-user throughput of the cell loop (PF, abstraction, full buffers, every PRB up for grabs as in
    Sionna's PF) within 5 % of Sionna SYS's loop on the same channel draws (16 timelines x 500 slots)."""
    users = [sender(f"u{i}", snr) for i, snr in enumerate([3.0, 8.0, 13.0, 18.0])]
    # Sionna's loop judges TBs by its PHYAbstraction: so does this one (link.abstraction: eesm)
    link = {
        "mode": "digital",
        "fidelity": "abstraction",
        "abstraction": "eesm",
        "harq": {"max_retx": 0, "round_trip_slots": 1},
    }
    s = scenario(
        tiny,
        users,
        cell={"num_prbs": 12},
        channel={"model": "tdl-a", "csi": "perfect"},
        scheduler={"policy": "proportional-fair", "power_headroom": False},
        link=link,
    )
    timelines, slots = 16, 500
    reference = sionna_reference_loop(s, timelines, slots, seed=4).mean(0)
    records, _ = run(s, [10**8] * 4, timelines=timelines, payload=False, seed=4, max_slots=slots, channel_seed=4)
    ours = records.users["delivered_bits"].double().mean(0) / slots
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=0.05)


def test_the_response_of_fixed_delays_is_sionnas_cir_to_ofdm_channel():
    """TDL delays are one set for all links: the loop's one steering matrix gives Sionna's frequency response."""
    model = TDL("A", 300e-9, 3.5e9, min_speed=3.0, max_speed=3.0, device="cpu")
    fading = SlotFading("tdl-a", model, 12, SLOT_S, 3.0, 3.5e9, device="cpu", seed=2)
    frequencies = subcarrier_frequencies(48, 30e3)
    links = torch.tensor([0, 5, 11])
    a, tau = fading(7, links)
    torch.testing.assert_close(fading.response(7, links, frequencies), frequency_response(a, tau, frequencies))


def test_a_run_draws_the_same_whether_the_link_adaptation_tables_were_cached_or_not(tiny):
    """The tables are made once per process with the PHY abstraction, which draws: Sionna's generator is put
    back, so a sweep in one process gives each point what a fresh process would. The llr-mi abstraction's
    curves (made once per process and kept on disk) draw from generators of their own."""
    import shutil

    from models.paths import cache_dir
    from sim.cell import tb_configs

    link = {"mode": "digital", "fidelity": "abstraction"}
    s = scenario(tiny, [sender("u0", 10.0)], cell={"num_prbs": 4}, link=link)
    tb_configs.carrier_tables.cache_clear()
    tb_configs.calibrated_curve.cache_clear()
    shutil.rmtree(cache_dir() / "llr-mi", ignore_errors=True)
    cold, _ = run(s, [512], timelines=4, seed=3)
    warm, _ = run(s, [512], timelines=4, seed=3)
    for key, value in cold.tbs.items():
        assert torch.equal(value, warm.tbs[key]), key


def test_the_eesm_of_a_users_best_prbs_is_sionnas_for_every_grant_size():
    from sim.cell.tb_configs import eesm_of_best
    from sim.phy.abstraction import effective_sinr

    # up to 18 dB: above that Sionna's float32 exponentials underflow for small betas and it caps at 30 dB
    sinr = torch.rand(3, 4, 10, generator=torch.Generator().manual_seed(0)).double() * 60
    mcs = torch.tensor([3, 9, 17, 27]).expand(3, -1)
    ours = eesm_of_best(sinr, mcs, 1, best_first=True)
    ordered = sinr.sort(-1, descending=True).values
    for b in (1, 4, 10):
        top = torch.where(torch.arange(10) < b, ordered, 0.0)  # Sionna's EESM skips the zeros
        torch.testing.assert_close(ours[..., b - 1], effective_sinr(top.float(), mcs).double(), rtol=1e-4, atol=1e-4)
    blind = eesm_of_best(sinr, mcs, 1, best_first=False)
    torch.testing.assert_close(blind[..., 0], effective_sinr(sinr.float(), mcs).double(), rtol=1e-4, atol=1e-4)


def test_a_stale_cqi_loses_the_scheduling_gain_on_a_fast_channel(tiny):
    """At 30 m/s the channel decorrelates in about a millisecond: PF on a CQI 20 ms old (scheduler.
    cqi_delay_slots = 40) picks PRBs no better than round-robin; on a fresh one it keeps its gain."""
    users = [sender(f"u{i}", 5.0) for i in range(6)]
    nmse = {}
    for policy, delay in (("round-robin", 0), ("proportional-fair", 0), ("proportional-fair", 40)):
        s = scenario(
            tiny,
            users,
            cell={"num_prbs": 24},
            channel={"model": "tdl-a", "delay_spread_s": 300e-9, "speed_mps": 30.0},
            scheduler={"policy": policy, "cqi_delay_slots": delay},
        )
        # 20 ms of encoding: the first tokens go in slot 40, when a 40-slot-old CQI is from slot 0
        records, payload = run(s, [2 * 2 * RES_PER_PRB] * 6, timelines=64, seed=1, device_s=[20e-3] * 6)
        nmse[(policy, delay)] = float((records.received - payload).square().sum() / payload.square().sum())
    assert nmse[("proportional-fair", 0)] < 0.75 * nmse[("round-robin", 0)], nmse
    assert nmse[("proportional-fair", 40)] > 0.9 * nmse[("round-robin", 0)], nmse


def test_open_loop_power_control_in_the_loop_holds_the_power_per_prb_below_the_maximum(tiny):
    """TS 38.213 with radio.p0_dbm: the near user, below P_max, has the same SNR per RE on 8 PRBs as on its
    reference share of 4; the far one, at P_max, spreads its power over the 8 (-3 dB)."""
    users = [
        {"id": "near", "modalities": ["text", "image"], "distance_m": 20.0},
        {"id": "far", "modalities": ["text", "image"], "distance_m": 150.0},
    ]
    s = scenario(
        tiny,
        users,
        cell={"num_prbs": 8},
        channel={"model": "umi"},
        radio={"p0_dbm": -90.0, "alpha": 1.0},
        topology={"shadow_fading": False},
        scheduler={"policy": "max-rate"},
    )
    near, far = s.users
    records, _ = run(s, [2 * 8 * RES_PER_PRB] * 2, timelines=2, payload=False)  # 8 PRBs each, one slot
    assert torch.equal(records.users["granted_prb_slots"], torch.full((2, 2), 8))
    snr_re = records.users["snr_re_db_sum"]  # one granted slot each
    torch.testing.assert_close(snr_re[:, 0], torch.full((2,), near.snr_db, dtype=torch.float64))
    torch.testing.assert_close(snr_re[:, 1], torch.full((2,), far.snr_db - 10 * np.log10(2), dtype=torch.float64))
    assert far.pathloss_db > near.pathloss_db


def test_snapshot_copies_share_an_outer_loop_that_settles_at_the_bler_target(tiny):
    """The engine's warm-up: passes over one batch of snapshots with 4x the steps until the back-off moves
    less than 0.5 dB, then a pass with plain steps: its first-attempt BLER is the target."""
    link = {
        "mode": "digital",
        "fidelity": "abstraction",
        "abstraction": "eesm",
        "bler_target": 0.1,
        "harq": {"max_retx": 0},
    }
    s = scenario(tiny, [sender("u0", 10.0)], cell={"num_prbs": 4}, link=link)
    offset = None
    for _ in range(12):
        records, _ = run(s, [256], timelines=128, seed=5, outer_loop=OuterLoopStart(offset, 4))
        moved = None if offset is None else float((records.olla_offset_db - offset).abs().max())
        offset = records.olla_offset_db
        if moved is not None and moved < 0.5:
            break
    records, _ = run(s, [256], timelines=128, seed=6, outer_loop=OuterLoopStart(offset, True))
    first = records.tbs["attempt"] == 1
    assert int(first.sum()) > 500
    assert 0.05 <= 1 - float(records.tbs["ack"][first].float().mean()) <= 0.15
