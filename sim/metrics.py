"""From an evaluation to the results contract: ``metrics.json``, per-user and per-task rows.

Latency of a task = device compute + queueing + airtime + edge compute of
its slowest sender (:class:`~sim.mac.cell.CellMac`): device compute is the
FLOPs of the user's encoders and transmitters over its ``device_gflops``;
queueing is the wait for a slot boundary, for PRBs the scheduler gives to
others, and for the edge; airtime runs from the first to the last slot that
carries the task's tokens (digital: every TB attempt and the HARQ round
trips between them); edge compute is the FLOPs of the group's receivers,
backbone and head over ``compute.edge_gflops``, first come first served.

Bits per task are the coded bits put on air (digital) or the Shannon bits of
the channel uses at the user's SNR (analog).

Per-user accuracy is over the tasks of the user's group whose question needs
something the user sends (the question text is needed by every task).
"""

from __future__ import annotations

import numpy as np

from models.data.fashion_avqa import ANSWERS, QUESTION_TYPES
from models.encoders import encoder_output_shape
from sim.engine import Evaluation
from sim.mac.cell import CellMac

MS = 1e3
BREAKDOWN = ("device_compute", "queueing", "airtime", "edge_compute")
PLACEMENT = ("distance_m", "indoor", "los", "pathloss_db", "shadow_fading_db")


def build_results(scenario, uplink, evaluation: Evaluation) -> tuple[dict, list[dict], list[dict]]:
    """``(metrics, per_user_rows, per_task_rows)`` of one evaluated scenario."""
    s = scenario
    tasks = evaluation.tasks
    qtypes = s.dataset.question_types
    user_index = {u.id: i for i, u in enumerate(s.users)}
    counts = evaluation.link  # each [num_slots, num_users]
    digital = s.link.mode == "digital"
    allocation = evaluation.allocation  # token-aware: each user's PRBs, token factor and SNR on its PRBs
    snr_db = np.array([u.snr_db for u in s.users]) + (np.array(allocation["snr_shift_db"]) if allocation else 0)
    channel_uses = counts["channel_uses"].astype(float)
    shannon = shannon_bits(channel_uses, snr_db)
    bits = counts["coded_bits"].astype(float) if digital else shannon
    nmse = evaluation.nmse_error / np.maximum(evaluation.nmse_power, 1e-30)

    device_s = np.array(
        [sum(evaluation.device_flops[m] for m in u.modalities) / (u.device_gflops * 1e9) for u in s.users]
    )
    edge_s = np.array(evaluation.edge_flops) / (s.compute.edge_gflops * 1e9)
    # digital: slots a payload spends waiting on HARQ round trips beyond its own attempts
    harq_wait = counts["airtime_slots"] - counts["attempts"] if digital else np.zeros_like(channel_uses)
    shares = allocation["prbs"] if allocation else None
    mac = CellMac(s, uplink.slot_seconds).run(channel_uses, harq_wait, device_s, edge_s, shares=shares)
    values_per_user = evaluation.values_per_user or uplink.values_per_user

    g_of_task, slot_of_task = tasks["group"], tasks["slot"]
    latency = mac["latency_s"][g_of_task, slot_of_task] * MS
    task_breakdown = np.stack([mac[f"{k}_s"][g_of_task, slot_of_task] * MS for k in BREAKDOWN], 1)
    task_bits, task_uses = np.zeros(len(g_of_task)), np.zeros(len(g_of_task))
    groups = []
    for g, group in enumerate(s.groups):
        members = np.array([user_index[uid] for uid in group.users])
        mine = g_of_task == g
        rows = slot_of_task[mine]
        task_bits[mine] = bits[rows][:, members].sum(1)
        task_uses[mine] = channel_uses[rows][:, members].sum(1)
        encoded = sum(np.prod(encoder_output_shape(m, s.models)) for m in s.group_modalities(group))
        transmitted = sum(values_per_user[u] for u in members)
        groups.append(
            {
                "id": group.id,
                "users": list(group.users),
                "latency_ms": _mean(latency[mine]),
                "breakdown": dict(zip(BREAKDOWN, map(float, task_breakdown[mine].mean(0)))),
                "bits_per_task": _mean(task_bits[mine]),
                "channel_uses_per_task": _mean(task_uses[mine]),
                "compression_ratio": float(encoded / transmitted),
            }
        )
    # bits per second while the user had something queued
    throughput_bps = mac["throughput_units_per_s"] * bits.sum(0) / np.maximum(channel_uses.sum(0), 1e-30)

    per_task = [
        {
            "task": i,
            "group": s.groups[g].id,
            "slot": int(slot_of_task[i]),
            "question_type": qtypes[tasks["question_type"][i]],
            "answer": ANSWERS[tasks["answer"][i]],
            "predicted": ANSWERS[tasks["predicted"][i]],
            "correct": bool(tasks["correct"][i]),
            "latency_ms": float(latency[i]),
            "bits": float(task_bits[i]),
            "channel_uses": float(task_uses[i]),
        }
        for i, g in enumerate(g_of_task)
    ]

    needs = [QUESTION_TYPES[q].needs | {"text"} for q in qtypes]  # every question needs its text
    users, per_user = [], []
    group_index = {uid: k for k, group in enumerate(s.groups) for uid in group.users}
    for i, u in enumerate(s.users):
        g = group_index[u.id]
        concerns = np.array([bool(need & set(u.modalities)) for need in needs])  # per question type
        mine = (g_of_task == g) & concerns[tasks["question_type"]]
        group_latency = latency[g_of_task == g]
        record = {
            "id": u.id,
            "modalities": list(u.modalities),
            "group": u.group,
            "snr_db": float(snr_db[i]),
            "accuracy": _mean(tasks["correct"][mine]),
            "tasks": int(mine.sum()),
            "token_nmse": float(nmse[i]),
            "bits_per_task": _mean(bits[:, i]),
            "channel_uses_per_task": _mean(channel_uses[:, i]),
            "num_prbs": shares[i] if shares else uplink.share.prbs_per_user,
            "latency_ms": {"mean": _mean(group_latency), "p95": _pct(group_latency, 95)},
            "uplink_ms": _mean(mac["uplink_s"][i]) * MS,
            "throughput_bps": float(throughput_bps[i]),
            "granted_prbs_per_task": float(mac["granted_prbs"][i] / len(channel_uses)),
        }
        # where geometry set the SNR: the user's place and its TR 38.901 losses
        record |= {k: getattr(u, k) for k in PLACEMENT if getattr(u, k) is not None}
        if allocation:
            record["token_factor"] = allocation["token_factor"][i]
        if digital:
            record |= _digital_counts({k: v[:, i] for k, v in counts.items()}, shannon[:, i], s.link.bits_per_value)
        users.append(record)
        per_user.append(
            {
                k: (v["mean"] if k == "latency_ms" else "+".join(v) if isinstance(v, list) else v)
                for k, v in record.items()
            }
            | {"latency_p95_ms": record["latency_ms"]["p95"]}
        )

    breakdown = dict(zip(BREAKDOWN, map(float, task_breakdown.mean(0))))
    answers = np.bincount(tasks["answer"], minlength=len(ANSWERS))
    metrics = {
        "scenario": s.name,
        "accuracy": _mean(tasks["correct"]),
        "tasks": int(len(g_of_task)),
        "bits_per_task": _mean(task_bits),
        "bits_kind": "coded" if digital else "shannon-equivalent",
        "channel_uses_per_task": _mean(task_uses),
        "compression_ratio": _mean(np.array([gr["compression_ratio"] for gr in groups])[g_of_task]),
        "token_nmse": float(evaluation.nmse_error.sum() / max(evaluation.nmse_power.sum(), 1e-30)),
        "latency_ms": {
            "mean": _mean(latency),
            "p50": _pct(latency, 50),
            "p95": _pct(latency, 95),
            "p99": _pct(latency, 99),
            "breakdown": breakdown,
        },
        "deadline_miss_rate": _mean(latency > s.traffic.deadline_ms),
        "scheduler": s.scheduler.policy,
        "traffic": s.traffic.arrival,
        "jain_fairness": jain_fairness(throughput_bps),
        "prb_utilisation": mac["prb_utilisation"],
        "majority_answer_rate": float(answers.max() / answers.sum()),
        "majority_answer": ANSWERS[int(answers.argmax())],
        "accuracy_by_question_type": {
            q: _mean(tasks["correct"][tasks["question_type"] == k])
            for k, q in enumerate(qtypes)
            if (tasks["question_type"] == k).any()
        },
        "groups": [
            {
                "id": gr["id"],
                "users": gr["users"],
                "accuracy": _mean(tasks["correct"][g_of_task == k]),
                "latency_ms": gr["latency_ms"],
                "breakdown": gr["breakdown"],
                "bits_per_task": gr["bits_per_task"],
                "channel_uses_per_task": gr["channel_uses_per_task"],
                "compression_ratio": gr["compression_ratio"],
            }
            for k, gr in enumerate(groups)
        ],
        "users": users,
    }
    if allocation:
        metrics["allocation"] = {k: v for k, v in allocation.items() if k != "calibration"}
    if digital:
        metrics["link"] = {"mode": "digital", "fidelity": s.link.fidelity} | _digital_counts(
            counts, shannon, s.link.bits_per_value
        )
    return metrics, per_user, per_task


def _digital_counts(counts: dict[str, np.ndarray], shannon: np.ndarray, bits_per_value: int) -> dict:
    """Transport-block statistics of the digital link over the given counts (any shape, summed).

    ``capacity_gap``: Shannon bits of the data resource elements used at the
    user's SNR over the information bits delivered; 1 would be a
    capacity-achieving link, and no real one goes below it.
    """
    tbs, attempts = counts["tbs"].sum(), counts["attempts"].sum()
    delivered = counts["information_bits"].sum()
    return {
        "mcs": float(counts["mcs"].mean()),
        "tb_attempts_per_tb": float(attempts / max(tbs, 1)),
        "tb_residual_bler": float(counts["failed_tbs"].sum() / max(tbs, 1)),
        "erased_value_rate": float(
            counts["erased_values"].sum() * bits_per_value / max(counts["payload_bits"].sum(), 1)
        ),
        "goodput_bits_per_channel_use": float(delivered / max(counts["channel_uses"].sum(), 1)),
        "capacity_gap": float(shannon.sum() / delivered) if delivered else None,  # None: nothing got through
    }


def jain_fairness(x) -> float:
    """Jain's index (sum x)^2 / (n sum x^2): 1 when all are equal, 1/n when one takes everything."""
    x = np.asarray(x, dtype=float)
    return float(x.sum() ** 2 / (len(x) * np.square(x).sum())) if np.square(x).sum() > 0 else float("nan")


def shannon_bits(channel_uses, snr_db):
    """Bits ``channel_uses`` complex channel uses carry at capacity, log2(1 + SNR) each (broadcasts)."""
    return channel_uses * np.log2(1 + 10 ** (np.asarray(snr_db) / 10))


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")
