"""From an evaluation to the results contract: ``metrics.json``, per-user and per-task rows.

Latency of a task = the slowest sender of its group (device compute +
queueing + airtime) + edge compute. Device compute is the FLOPs of the
user's encoders and transmitters over its ``device_gflops``; airtime is the
slots its payload takes on its equal share of PRBs; queueing is zero while
every user owns its PRBs in every slot; edge compute is the FLOPs of the
group's receivers, backbone and head over ``compute.edge_gflops``.

Per-user accuracy is over the tasks of the user's group whose question needs
something the user sends (the question text is needed by every task).
"""

from __future__ import annotations

import math

import numpy as np

from models.data.fashion_avqa import ANSWERS, QUESTION_TYPES
from models.encoders import encoder_output_shape
from sim.engine import Evaluation

MS = 1e3


def build_results(scenario, uplink, evaluation: Evaluation) -> tuple[dict, list[dict], list[dict]]:
    """``(metrics, per_user_rows, per_task_rows)`` of one evaluated scenario."""
    s = scenario
    tasks = evaluation.tasks
    qtypes = s.dataset.question_types
    user_index = {u.id: i for i, u in enumerate(s.users)}
    airtime_ms = np.array(uplink.airtime_s()) * MS
    device_ms = np.array(
        [sum(evaluation.device_flops[m] for m in u.modalities) / (u.device_gflops * 1e9) * MS for u in s.users]
    )
    uplink_ms = device_ms + airtime_ms  # queueing is zero with equal shares
    symbols = np.array(uplink.symbols_per_user, dtype=float)
    bits = np.array([shannon_bits(symbols[i], u.snr_db) for i, u in enumerate(s.users)])
    nmse = evaluation.nmse_error / np.maximum(evaluation.nmse_power, 1e-30)

    groups = []
    for g, group in enumerate(s.groups):
        members = [user_index[uid] for uid in group.users]
        critical = members[int(np.argmax(uplink_ms[members]))]
        edge_ms = evaluation.edge_flops[g] / (s.compute.edge_gflops * 1e9) * MS
        sent = s.group_modalities(group)
        encoded = sum(np.prod(encoder_output_shape(m, s.models)) for m in sent)
        transmitted = sum(s.tokens[m].length * s.tokens[m].dim for m in sent)
        groups.append(
            {
                "id": group.id,
                "users": list(group.users),
                "latency_ms": uplink_ms[critical] + edge_ms,
                "breakdown": {
                    "device_compute": device_ms[critical],
                    "queueing": 0.0,
                    "airtime": airtime_ms[critical],
                    "edge_compute": edge_ms,
                },
                "bits_per_task": float(bits[members].sum()),
                "channel_uses_per_task": float(symbols[members].sum()),
                "compression_ratio": float(encoded / transmitted),
            }
        )

    g_of_task = tasks["group"]
    latency = np.array([gr["latency_ms"] for gr in groups])[g_of_task]
    per_task = [
        {
            "task": i,
            "group": s.groups[g].id,
            "slot": int(tasks["slot"][i]),
            "question_type": qtypes[tasks["question_type"][i]],
            "answer": ANSWERS[tasks["answer"][i]],
            "predicted": ANSWERS[tasks["predicted"][i]],
            "correct": bool(tasks["correct"][i]),
            "latency_ms": float(latency[i]),
            "bits": groups[g]["bits_per_task"],
            "channel_uses": groups[g]["channel_uses_per_task"],
        }
        for i, g in enumerate(g_of_task)
    ]

    needs = [QUESTION_TYPES[q].needs | {"text"} for q in qtypes]  # every question needs its text
    users, per_user = [], []
    for i, u in enumerate(s.users):
        g = next(k for k, group in enumerate(s.groups) if u.id in group.users)
        mine = (g_of_task == g) & np.array([bool(needs[q] & set(u.modalities)) for q in tasks["question_type"]])
        group_latency = latency[g_of_task == g]
        record = {
            "id": u.id,
            "modalities": list(u.modalities),
            "group": u.group,
            "snr_db": u.snr_db,
            "accuracy": _mean(tasks["correct"][mine]),
            "tasks": int(mine.sum()),
            "token_nmse": float(nmse[i]),
            "bits_per_task": float(bits[i]),
            "channel_uses_per_task": float(symbols[i]),
            "num_prbs": uplink.share.prbs_per_user,
            "latency_ms": {"mean": _mean(group_latency), "p95": _pct(group_latency, 95)},
            "uplink_ms": float(uplink_ms[i]),
        }
        users.append(record)
        per_user.append(
            {
                k: (v["mean"] if k == "latency_ms" else "+".join(v) if isinstance(v, list) else v)
                for k, v in record.items()
            }
            | {"latency_p95_ms": record["latency_ms"]["p95"]}
        )

    def mean_over_tasks(value):
        return float(np.mean(np.array([value(gr) for gr in groups])[g_of_task]))

    breakdown = {
        k: mean_over_tasks(lambda gr, k=k: gr["breakdown"][k])
        for k in ("device_compute", "queueing", "airtime", "edge_compute")
    }
    answers = np.bincount(tasks["answer"], minlength=len(ANSWERS))
    metrics = {
        "scenario": s.name,
        "accuracy": _mean(tasks["correct"]),
        "tasks": int(len(g_of_task)),
        "bits_per_task": mean_over_tasks(lambda gr: gr["bits_per_task"]),
        "bits_kind": "shannon-equivalent",
        "channel_uses_per_task": mean_over_tasks(lambda gr: gr["channel_uses_per_task"]),
        "compression_ratio": mean_over_tasks(lambda gr: gr["compression_ratio"]),
        "token_nmse": float(evaluation.nmse_error.sum() / max(evaluation.nmse_power.sum(), 1e-30)),
        "latency_ms": {
            "mean": _mean(latency),
            "p50": _pct(latency, 50),
            "p95": _pct(latency, 95),
            "p99": _pct(latency, 99),
            "breakdown": breakdown,
        },
        "deadline_miss_rate": _mean(latency > s.latency.deadline_ms),
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
    return metrics, per_user, per_task


def shannon_bits(channel_uses: float, snr_db: float) -> float:
    """Bits ``channel_uses`` complex channel uses carry at capacity, log2(1 + SNR) each."""
    return channel_uses * math.log2(1 + 10 ** (snr_db / 10))


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")
