"""The scheduler tables of ``docs/mac/index.md``, from runs of the default scenario through the cell loop.

Runs ``tokensim run scenarios/cell_10users.yaml`` with each arm's ``--set`` overrides (runs already done are
read, not rerun) and writes ``tables.md`` and ``tables.csv`` into ``--tables`` (default: the ``--out`` folder of
the runs; ``--tables docs/mac`` rewrites the copies in this folder):

    PYTHONPATH=. .venv/bin/python docs/mac/tables.py [--out results/docs-mac] [--tables DIR]

Every arm evaluates cell_10users' own checkpoint (the channel arms through ``model_from``, since the
channel shapes a checkpoint).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from sim.cli import main as tokensim

POLICIES = ("equal-share", "round-robin", "proportional-fair", "max-rate", "task-aware", "token-aware")
DIGITAL = ["link.mode=digital", "link.fidelity=abstraction", "link.abstraction=eesm"]  # as measured
SELECTIVE = ["model_from=scenarios/cell_10users.yaml", "channel.delay_spread_s=300e-9"]
TABLES = {
    "analog link, snapshots": {p: [f"scheduler.policy={p}"] for p in POLICIES},
    "digital link (abstraction), snapshots": {p: [*DIGITAL, f"scheduler.policy={p}"] for p in POLICIES},
    "digital link (abstraction), Poisson 100 tasks/s per group": {
        p: [
            *DIGITAL,
            f"scheduler.policy={p}",
            "traffic.arrival=poisson",
            "traffic.rate_per_s=100",
            "evaluation.tasks_per_group=250",
        ]
        for p in POLICIES
    },  # fmt: skip
    "digital link (abstraction), Poisson 10 tasks/s per group": {
        p: [
            *DIGITAL,
            f"scheduler.policy={p}",
            "traffic.arrival=poisson",
            "traffic.rate_per_s=10",
            "evaluation.tasks_per_group=250",
        ]
        for p in POLICIES
    },  # fmt: skip
    "analog link, TDL-A with 300 ns delay spread (frequency-selective)": {
        p: [*SELECTIVE, f"scheduler.policy={p}"]
        for p in ("equal-share", "round-robin", "proportional-fair", "max-rate")
    },
    "digital link (abstraction), proportional fair, power headroom": {
        f"power_headroom={v}": [*DIGITAL, "scheduler.policy=proportional-fair", f"scheduler.power_headroom={v}"]
        for v in ("true", "false")
    },
}
COLUMNS = {
    "accuracy": "{:.3f}",
    "token NMSE": "{:.3f}",
    "mean latency ms": "{:.2f}",
    "p95 latency ms": "{:.2f}",
    "deadline misses": "{:.3f}",
    "device queueing ms": "{:.2f}",
    "uplink queueing ms": "{:.2f}",
    "airtime ms": "{:.2f}",
    "HARQ wait ms": "{:.2f}",
    "REs per task": "{:.0f}",
    "PRBs per slot": "{:.2f}",
    "Jain": "{:.3f}",
    "PRB utilisation": "{:.3f}",
}


def run(out: Path) -> list[dict]:
    rows = []
    for table, arms in TABLES.items():
        for arm, overrides in arms.items():
            where = out / re.sub(r"[^a-z0-9]+", "-", table.lower()).strip("-") / arm
            if not (where / "metrics.json").is_file():
                args = ["run", "scenarios/cell_10users.yaml", "--out", str(where), "--quiet"]
                assert tokensim(args + [x for s in overrides for x in ("--set", s)]) == 0
            m = json.loads((where / "metrics.json").read_text())
            breakdown = m["latency_ms"]["breakdown"]
            backlogged = [u["prbs_per_slot"] for u in m["users"]]
            rows.append(
                {
                    "table": table,
                    "arm": arm,
                    "accuracy": m["accuracy"],
                    "token NMSE": m["token_nmse"],
                    "mean latency ms": m["latency_ms"]["mean"],
                    "p95 latency ms": m["latency_ms"]["p95"],
                    "deadline misses": m["deadline_miss_rate"],
                    "device queueing ms": breakdown["device_queueing"],
                    "uplink queueing ms": breakdown["uplink_queueing"],
                    "airtime ms": breakdown["airtime"],
                    "HARQ wait ms": breakdown["harq_wait"],
                    "REs per task": m["channel_uses_per_task"],
                    "PRBs per slot": sum(backlogged) / len(backlogged),
                    "Jain": m["jain_fairness"],
                    "PRB utilisation": m["prb_utilisation"],
                    "accuracy_ci95": m["accuracy_ci95"],
                }
            )
    return rows


def write(rows: list[dict], here: Path) -> None:
    here.mkdir(parents=True, exist_ok=True)
    with open(here / "tables.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "accuracy_ci95"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = []
    for table in dict.fromkeys(r["table"] for r in rows):
        lines += [f"**{table}**", "", "| arm | " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
        for r in (r for r in rows if r["table"] == table):
            low, high = r["accuracy_ci95"]
            cells = [fmt.format(r[c]) for c, fmt in COLUMNS.items()]
            cells[0] += f" [{low:.3f}, {high:.3f}]"
            lines.append(f"| {r['arm']} | " + " | ".join(cells) + " |")
        lines.append("")
    (here / "tables.md").write_text("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/docs-mac"))
    parser.add_argument("--tables", type=Path, help="where the tables go (default: --out)")
    args = parser.parse_args()
    rows = run(args.out)
    write(rows, args.tables or args.out)
    print(((args.tables or args.out) / "tables.md").read_text())
