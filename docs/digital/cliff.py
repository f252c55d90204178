"""The digital cliff against the analog link's graceful decline, on the default scenario.

Runs ``tokensim run scenarios/cell_10users.yaml --set snr_db=X`` for every arm
and SNR (each arm's checkpoint is trained once, then reused), and writes
``cliff.csv``, ``cliff.md`` and ``cliff.png``/``.pdf`` from the runs'
``metrics.json`` into ``--tables`` (default: the ``--out`` folder of the runs;
``--tables docs/digital`` rewrites the copies in this folder). Runs already
done are read, not rerun.

    PYTHONPATH=. .venv/bin/python docs/digital/cliff.py [--out results/cliff] [--snrs=-10,-5,0,5,10,20] [--tables DIR]

``tokensim sweep`` does this for any key; this script is the record of how the
figure in ``docs/digital/index.md`` was made.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sim.cli import main as tokensim  # noqa: E402
from sim.results import write_csv  # noqa: E402
from sim.sweep_results import measured_columns  # noqa: E402

ARMS = {
    "analog": [],
    # one digital checkpoint for both; a quarter of the tasks (1000), for the CPU time of every TB's PHY
    "digital, abstraction": [  # Sionna's EESM abstraction, as the page's table was measured
        "link.mode=digital",
        "link.fidelity=abstraction",
        "link.abstraction=eesm",
        "evaluation.tasks_per_group=250",
    ],
    "digital, link level": ["link.mode=digital", "evaluation.tasks_per_group=250"],
}


def run(out: Path, snrs: list[float], arms: dict[str, list[str]]) -> list[dict]:
    rows = []
    for arm, overrides in arms.items():
        for snr in snrs:
            where = out / arm.replace(", ", "-").replace(" ", "_") / f"snr{snr:g}"
            if not (where / "metrics.json").is_file():
                sets = [f"snr_db={snr}", *overrides]
                args = ["run", "scenarios/cell_10users.yaml", "--out", str(where), "--quiet"]
                assert tokensim(args + [x for s in sets for x in ("--set", s)]) == 0
            m = json.loads((where / "metrics.json").read_text())
            link = m.get("link", {})
            rows.append(
                {
                    "arm": arm,
                    "snr_db": snr,
                    **measured_columns(m),
                    "bits_kind": m["bits_kind"],
                    "mcs": link.get("mcs", ""),
                    "tb_first_attempt_bler": link.get("tb_first_attempt_bler", ""),
                    "tb_residual_bler": link.get("tb_residual_bler", ""),
                    "capacity_gap": link.get("capacity_gap", ""),
                }
            )
    return rows


def write(rows: list[dict], snrs: list[float], here: Path) -> None:
    here.mkdir(parents=True, exist_ok=True)
    write_csv(here / "cliff.csv", rows)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    lines = ["| SNR dB | " + " | ".join(f"{s:g}" for s in snrs) + " |", "|---" + "|---:" * len(snrs) + "|"]
    for arm in arms:
        mine = {r["snr_db"]: r for r in rows if r["arm"] == arm}
        lines.append(f"| {arm}: accuracy | " + " | ".join(f"{mine[s]['accuracy']:.3f}" for s in snrs) + " |")
        lines.append(f"| {arm}: token NMSE | " + " | ".join(f"{mine[s]['token_nmse']:.3f}" for s in snrs) + " |")
        if mine[snrs[0]]["mcs"] != "":
            lines.append(f"| {arm}: mean MCS | " + " | ".join(f"{mine[s]['mcs']:.1f}" for s in snrs) + " |")
            lines.append(
                f"| {arm}: first-attempt BLER | "
                + " | ".join(f"{mine[s]['tb_first_attempt_bler']:.3f}" for s in snrs)
                + " |"
            )
            lines.append(
                f"| {arm}: residual BLER | " + " | ".join(f"{mine[s]['tb_residual_bler']:.3f}" for s in snrs) + " |"
            )
        lines.append(
            f"| {arm}: p95 latency ms | " + " | ".join(f"{mine[s]['latency_p95_ms']:.1f}" for s in snrs) + " |"
        )
    (here / "cliff.md").write_text("\n".join(lines) + "\n")

    fig, (left, right) = plt.subplots(1, 2, figsize=(7.0, 2.8))
    for arm in arms:
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["snr_db"])
        x = [r["snr_db"] for r in mine]
        accuracy = np.array([r["accuracy"] for r in mine])
        interval = np.array([[r["accuracy_ci95_low"], r["accuracy_ci95_high"]] for r in mine])
        left.errorbar(x, accuracy, yerr=np.abs(interval.T - accuracy), marker="o", capsize=2, label=arm)
        right.plot(x, [r["token_nmse"] for r in mine], marker="o", label=arm)
    left.set(xlabel="SNR (dB), every user", ylabel="task accuracy (95 % Wilson)", title="accuracy")
    right.set(xlabel="SNR (dB), every user", ylabel="token NMSE", title="received tokens", yscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(here / f"cliff.{suffix}", dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/cliff"))
    parser.add_argument("--snrs", default="-10,-5,0,5,10,15,20")
    parser.add_argument("--tables", type=Path, help="where the table and figure go (default: --out)")
    args = parser.parse_args()
    snrs = [float(s) for s in args.snrs.split(",")]
    rows = run(args.out, snrs, ARMS)
    write(rows, snrs, args.tables or args.out)
    print(((args.tables or args.out) / "cliff.md").read_text())
