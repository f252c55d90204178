"""From an evaluation to the results contract: ``metrics.json``, per-user, per-task and per-TB rows.

A pure function of what the cell loop recorded (:class:`~sim.cell.CellRecords`)
and of the answers: no MAC or PHY runs here. A task's latency is the time
from its arrival to the edge's answer, and every term of its breakdown is
a difference of recorded timestamps or a count of recorded slots of its
slowest sender (the user whose tokens came in last):

- ``device_queueing``: arrival to the start of encoding (the device was busy
  with earlier tasks); ``device_compute``: the encoding itself (FLOPs of the
  user's encoders and transmitters over its ``device_gflops``);
- ``uplink_queueing``: from the end of encoding to the next slot boundary,
  plus the slots in which its tokens were queued and not granted PRBs;
- ``airtime``: the slots in which its tokens (first attempts or
  retransmissions) were on air;
- ``harq_wait``: the slots in which everything was sent and it waited for
  HARQ feedback;
- ``edge_queueing``: from its last tokens to the edge server starting on it;
  ``edge_compute``: the group's receivers, backbone and head over ``compute.edge_gflops``.

The terms sum to the latency because the loop gives each slot exactly one
state; ``tests/sim/test_cell.py`` checks that they do.

Bits per task are the coded bits put on air (digital) or the Shannon bits of
the channel uses at the user's SNR per RE (analog). Per-user accuracy is
over the tasks of the user's group whose question needs something the user
sends (the question text is needed by every task).
"""

from __future__ import annotations

import numpy as np

from models.encoders import encoder_output_shape
from sim.mac.power import reference_share

MS = 1e3
BREAKDOWN = (
    "device_compute",
    "device_queueing",
    "uplink_queueing",
    "airtime",
    "harq_wait",
    "edge_queueing",
    "edge_compute",
)
PLACEMENT = ("distance_m", "indoor", "los", "pathloss_db", "shadow_fading_db")


def task_latencies(records, group, timeline, job) -> dict[str, np.ndarray]:
    """Latency of the tasks at ``(group, timeline, job)`` (1-D each) and its breakdown, seconds.

    :output: dict of 1-D arrays: ``latency`` (answer minus arrival), every key of :data:`BREAKDOWN`,
        ``critical_user`` (the user whose tokens came in last), ``arrival`` (seconds on the task's timeline),
        ``ready_slot`` (the first slot the critical user's tokens could go on air) and ``done_slot`` (the
        slot at whose end the group's last tokens were in).
    """
    T = records.slot_s
    tasks = {k: v.cpu().numpy() for k, v in records.tasks.items()}
    jobs = {k: v.cpu().numpy() for k, v in records.jobs.items()}
    critical = tasks["critical_user"][timeline, group, job]
    at = (timeline, critical, job)
    encode_end = jobs["encode_end_s"][at]
    uplink_done = tasks["uplink_done_s"][timeline, group, job]
    return {
        "latency": tasks["edge_end_s"][timeline, group, job] - tasks["arrival_s"][timeline, group, job],
        "device_queueing": jobs["encode_start_s"][at] - jobs["arrival_s"][at],
        "device_compute": encode_end - jobs["encode_start_s"][at],
        "uplink_queueing": jobs["ready_slot"][at] * T - encode_end + jobs["waiting_slots"][at] * T,
        "airtime": jobs["on_air_slots"][at] * T,
        "harq_wait": jobs["harq_slots"][at] * T,
        "edge_queueing": tasks["edge_start_s"][timeline, group, job] - uplink_done,
        "edge_compute": tasks["edge_end_s"][timeline, group, job] - tasks["edge_start_s"][timeline, group, job],
        "critical_user": critical,
        "arrival": tasks["arrival_s"][timeline, group, job],
        "ready_slot": jobs["ready_slot"][at],
        "done_slot": jobs["done_slot"][at],
    }


def build_results(scenario, evaluation) -> tuple[dict, list[dict], list[dict], list[dict]]:
    """``(metrics, per_user_rows, per_task_rows, per_tb_rows)`` of one evaluated scenario."""
    s = scenario
    records = evaluation.records
    T = records.slot_s
    tasks = evaluation.tasks
    answers, qtypes = evaluation.answers, list(evaluation.question_needs)  # the data set's, as indexed
    digital = s.link.mode == "digital"
    allocation = evaluation.allocation
    g_of_task, b_of_task, j_of_task = tasks["group"], tasks["timeline"], tasks["job"]
    jobs = {k: v.cpu().numpy() for k, v in records.jobs.items()}
    users_rec = {k: v.cpu().numpy().sum(0) for k, v in records.users.items()}  # summed over timelines
    g_of_user = np.array(s.group_of_user())

    # SNR per RE after the power is spread over the grant, averaged over the slots the user was granted
    snr_re_db = users_rec["snr_re_db_sum"] / np.maximum(users_rec["granted_slots"], 1)
    # per job of every user [timelines, users, jobs]: REs on air and bits (coded, or Shannon at the SNR per RE)
    job_res = jobs["res"]
    job_bits = jobs["coded_bits"] if digital else shannon_bits(job_res, snr_re_db[None, :, None])

    latency = task_latencies(records, g_of_task, b_of_task, j_of_task)
    latency_ms = latency["latency"] * MS
    breakdown = {k: latency[k] * MS for k in BREAKDOWN}
    members = [np.flatnonzero(g_of_user == g) for g in range(len(s.groups))]
    task_bits = np.zeros(len(g_of_task))
    task_uses = np.zeros(len(g_of_task))
    for g, users in enumerate(members):  # a loop over groups, vectorised over tasks
        mine = g_of_task == g
        task_bits[mine] = job_bits[b_of_task[mine][:, None], users[None, :], j_of_task[mine][:, None]].sum(1)
        task_uses[mine] = job_res[b_of_task[mine][:, None], users[None, :], j_of_task[mine][:, None]].sum(1)

    values_per_user = evaluation.values_per_user
    groups = []
    for g, group in enumerate(s.groups):
        mine = g_of_task == g
        encoded = sum(np.prod(encoder_output_shape(m, s.models)) for m in s.group_modalities(group))
        groups.append(
            {
                "id": group.id,
                "users": list(group.users),
                "accuracy": _mean(tasks["correct"][mine]),
                "accuracy_ci95": wilson_interval(tasks["correct"][mine]),
                "latency_ms": _mean(latency_ms[mine]),
                "breakdown": {k: _mean(v[mine]) for k, v in breakdown.items()},
                "bits_per_task": _mean(task_bits[mine]),
                "channel_uses_per_task": _mean(task_uses[mine]),
                "compression_ratio": float(encoded / sum(values_per_user[u] for u in members[g])),
            }
        )

    num_tasks_per_user = jobs["res"].shape[0] * jobs["res"].shape[2]
    delivered = users_rec["delivered_bits"] if digital else shannon_bits(users_rec["res"], snr_re_db)
    # bits per second while the user had something queued
    throughput_bps = delivered / np.maximum(users_rec["backlogged_slots"] * T, 1e-30)
    tb = {k: v.cpu().numpy() for k, v in records.tbs.items()}
    user_ids = [u.id for u in s.users]

    per_task = [
        {
            "task": i,
            "group": s.groups[g].id,
            "timeline": int(b_of_task[i]),
            "job": int(j_of_task[i]),
            "arrival_ms": float(latency["arrival"][i] * MS),
            "ready_slot": int(latency["ready_slot"][i]),
            "done_slot": int(latency["done_slot"][i]),
            "question_type": qtypes[tasks["question_type"][i]],
            "answer": answers[tasks["answer"][i]],
            "predicted": answers[tasks["predicted"][i]],
            "correct": bool(tasks["correct"][i]),
            "latency_ms": float(latency_ms[i]),
            **{f"{k}_ms": float(v[i]) for k, v in breakdown.items()},
            "critical_user": user_ids[latency["critical_user"][i]],
            "bits": float(task_bits[i]),
            "channel_uses": float(task_uses[i]),
        }
        for i, g in enumerate(g_of_task)
    ]

    nmse = evaluation.nmse_error / np.maximum(evaluation.nmse_power, 1e-30)
    needs = [need | {"text"} for need in evaluation.question_needs.values()]  # every question needs its text
    shares = allocation["prbs"] if allocation else None
    reference_prbs = reference_share(s)
    users, per_user = [], []
    for i, u in enumerate(s.users):
        g = g_of_user[i]
        concerns = np.array([bool(need & set(u.modalities)) for need in needs])  # per question type
        mine = (g_of_task == g) & concerns[tasks["question_type"]]
        group_latency = latency_ms[g_of_task == g]
        user_jobs = {k: v[:, i] for k, v in jobs.items()}
        record = {
            "id": u.id,
            "modalities": list(u.modalities),
            "group": u.group,
            "snr_db": float(evaluation.snr_db[i]),
            "snr_re_db": float(snr_re_db[i]) if users_rec["granted_slots"][i] else float("nan"),
            "accuracy": _mean(tasks["correct"][mine]),
            "accuracy_ci95": wilson_interval(tasks["correct"][mine]),
            "tasks": int(mine.sum()),
            "token_nmse": float(nmse[i]),
            "bits_per_task": _mean(job_bits[:, i].ravel()),
            "channel_uses_per_task": _mean(job_res[:, i].ravel()),
            "num_prbs": shares[i] if shares else reference_prbs,
            "prbs_per_slot": float(users_rec["granted_prb_slots"][i] / max(users_rec["backlogged_slots"][i], 1)),
            "granted_prbs_per_task": float(users_rec["granted_prb_slots"][i] / num_tasks_per_user),
            "device_compute_ms": _mean((user_jobs["encode_end_s"] - user_jobs["encode_start_s"]).ravel() * MS),
            "device_queueing_ms": _mean((user_jobs["encode_start_s"] - user_jobs["arrival_s"]).ravel() * MS),
            "latency_ms": {"mean": _mean(group_latency), "p95": _pct(group_latency, 95)},
            "uplink_ms": _mean(((user_jobs["done_slot"] + 1) * T - user_jobs["arrival_s"]).ravel() * MS),
            "throughput_bps": float(throughput_bps[i]),
        }
        # where geometry set the SNR: the user's place and its TR 38.901 losses
        record |= {k: getattr(u, k) for k in PLACEMENT if getattr(u, k) is not None}
        if allocation:
            record["token_factor"] = allocation["token_factor"][i]
        if digital:
            record["link"] = digital_counts(
                {k: v[tb["user"] == i] for k, v in tb.items()},
                erased=user_jobs["erased_values"].sum(),
                payload_values=values_per_user[i] * num_tasks_per_user,
                channel_uses=users_rec["res"][i],
                max_attempts=1 + s.link.harq.max_retx,
                num_tasks=num_tasks_per_user,
            )
        users.append(record)
        flat = {k: v for k, v in record.items() if k not in ("latency_ms", "accuracy_ci95", "link")}
        per_user.append(
            {k: "+".join(v) if isinstance(v, list) else v for k, v in flat.items()}
            | {"latency_ms": record["latency_ms"]["mean"], "latency_p95_ms": record["latency_ms"]["p95"]}
            | {"accuracy_ci95_low": record["accuracy_ci95"][0], "accuracy_ci95_high": record["accuracy_ci95"][1]}
            | {f"link_{k}": v for k, v in record.get("link", {}).items()}
        )

    answer_counts = np.bincount(tasks["answer"], minlength=len(answers))
    granted_total = users_rec["granted_prb_slots"].sum()
    metrics = {
        "scenario": s.name,
        "accuracy": _mean(tasks["correct"]),
        "accuracy_ci95": wilson_interval(tasks["correct"]),
        "tasks": int(len(g_of_task)),
        "bits_per_task": _mean(task_bits),
        "bits_kind": "coded" if digital else "shannon-equivalent",
        "channel_uses_per_task": _mean(task_uses),
        "compression_ratio": _mean(np.array([gr["compression_ratio"] for gr in groups])[g_of_task]),
        "token_nmse": float(evaluation.nmse_error.sum() / max(evaluation.nmse_power.sum(), 1e-30)),
        "latency_ms": {
            "mean": _mean(latency_ms),
            "p50": _pct(latency_ms, 50),
            "p95": _pct(latency_ms, 95),
            "p99": _pct(latency_ms, 99),
            "breakdown": {k: _mean(v) for k, v in breakdown.items()},
        },
        "deadline_miss_rate": _mean(latency_ms > s.traffic.deadline_ms),
        "scheduler": s.scheduler.policy,
        "traffic": s.traffic.arrival,
        "jain_fairness": jain_fairness(throughput_bps),
        "prb_utilisation": float(granted_total / max(records.active_slots.sum().item() * s.cell.num_prbs, 1)),
        "majority_answer_rate": float(answer_counts.max() / answer_counts.sum()),
        "majority_answer": answers[int(answer_counts.argmax())],
        "accuracy_by_question_type": {
            q: _mean(tasks["correct"][tasks["question_type"] == k])
            for k, q in enumerate(qtypes)
            if (tasks["question_type"] == k).any()
        },
        "accuracy_ci95_by_question_type": {
            q: wilson_interval(tasks["correct"][tasks["question_type"] == k])
            for k, q in enumerate(qtypes)
            if (tasks["question_type"] == k).any()
        },
        "groups": groups,
        "users": users,
    }
    if allocation:
        metrics["allocation"] = {k: v for k, v in allocation.items() if k != "calibration"}
    if digital:
        metrics["link"] = {"mode": "digital", "fidelity": s.link.fidelity} | digital_counts(
            tb,
            erased=jobs["erased_values"].sum(),
            payload_values=sum(values_per_user) * num_tasks_per_user,
            channel_uses=users_rec["res"].sum(),
            max_attempts=1 + s.link.harq.max_retx,
            num_tasks=num_tasks_per_user * len(s.users),
        )
    per_tb = [
        {
            "slot": int(tb["slot"][k]),
            "timeline": int(tb["timeline"][k]),
            "user": user_ids[tb["user"][k]],
            "mcs": int(tb["mcs"][k]),
            "prbs": int(tb["prbs"][k]),
            "tbs": int(tb["tbs"][k]),
            "payload_bits": int(tb["payload_bits"][k]),
            "attempt": int(tb["attempt"][k]),
            "ack": bool(tb["ack"][k]),
            "sinr_eff_db": round(float(tb["sinr_eff_db"][k]), 3),
            "shannon_bits": round(float(tb["shannon_bits"][k]), 3),
        }
        for k in range(len(tb.get("slot", [])))
    ]
    return metrics, per_user, per_task, per_tb


def digital_counts(tb: dict[str, np.ndarray], erased, payload_values, channel_uses, max_attempts, num_tasks) -> dict:
    """Transport-block statistics of the digital link from TB attempt records (any subset of them).

    ``erased_value_rate``: token values erased (a TB carrying one of their bits failed for good) over the
    values sent.
    ``information_bits``: payload bits delivered (token values times ``bits_per_value``, after HARQ; no
    CRC, filler or padding); ``information_bits_per_task``: the same per task of the users counted.
    ``capacity_gap``: the sum over every data RE of every attempt of log2(1 + SINR), the SINR that RE
    saw after equalisation with the estimation error, over the information bits delivered. 1 would be a
    capacity-achieving code on those very REs; fading and estimation losses are in the SINRs, so the
    gap is the coding and HARQ loss alone.
    """
    attempt = tb.get("attempt", np.zeros(0, dtype=np.int64))
    first = attempt == 1
    num_tbs = int(first.sum())
    ack = tb.get("ack", np.zeros(0, dtype=bool))
    delivered = float((tb["payload_bits"] * ack).sum()) if num_tbs else 0.0
    shannon = float(tb["shannon_bits"].sum()) if num_tbs else 0.0
    return {
        "mcs": _mean(tb["mcs"][first]) if num_tbs else float("nan"),
        "tb_first_attempt_bler": float(1 - ack[first].mean()) if num_tbs else float("nan"),
        "tb_attempts_per_tb": float(len(attempt) / max(num_tbs, 1)),
        "tb_residual_bler": float(((~ack) & (attempt == max_attempts)).sum() / max(num_tbs, 1)),
        "erased_value_rate": float(erased) / max(payload_values, 1),
        "information_bits": delivered,
        "information_bits_per_task": delivered / max(num_tasks, 1),
        "goodput_bits_per_channel_use": delivered / max(float(channel_uses), 1.0),
        "capacity_gap": shannon / delivered if delivered else None,  # None: nothing got through
    }


def wilson_interval(correct, z: float = 1.959964) -> list[float]:
    """Wilson score 95 % interval of a success rate from boolean outcomes (``[nan, nan]`` if there are none)."""
    n = len(correct)
    if n == 0:
        return [float("nan"), float("nan")]
    p = float(np.mean(correct))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


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
