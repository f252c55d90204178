"""tokensim from Python: a scenario made in code, one run, two compression ratios over SNR, a figure.

    PYTHONPATH=. .venv/bin/python docs/examples/compression_in_code.py [--out results/example]

The scenario is sized to finish in a minute or two on a 2-core CPU (a few hundred images and clips, a few
training steps), so its accuracies are not the default scenario's: use
``tokensim.load_scenario("scenarios/cell_10users.yaml")`` for those. CI runs this script
(``tests/test_api.py``) and checks the figure it writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import tokensim  # noqa: E402


def small_cell(tokens_per_modality: int = 4) -> dict:
    """Two groups of three users on 6 PRBs of TDL-A with LS estimates, as a mapping (the YAML's structure)."""
    return {
        "name": "example",
        "device": "cpu",
        "dataset": {
            "train_images": 300,
            "validation_images": 100,
            "test_images": 100,
            "train_clips": 120,
            "validation_clips": 40,
            "test_clips": 40,
        },  # fmt: skip
        "cell": {"num_prbs": 6},
        "users": [
            {"id": "phone1", "modalities": ["text"], "snr_db": 15},
            {"id": "cam1", "modalities": ["image"], "snr_db": 10},
            {"id": "mic1", "modalities": ["audio"], "snr_db": 10},
            {"id": "phone2", "modalities": ["text"], "snr_db": 0},
            {"id": "cam2", "modalities": ["image"], "snr_db": -3},
            {"id": "mic2", "modalities": ["audio"], "snr_db": -3},
        ],
        "groups": [
            {"id": "near", "users": ["phone1", "cam1", "mic1"]},
            {"id": "far", "users": ["phone2", "cam2", "mic2"]},
        ],  # fmt: skip
        "tokens": {m: {"length": tokens_per_modality, "dim": 16} for m in ("text", "image", "audio")},
        "training": {
            "alignment": {"steps": 20, "batch_size": 16},
            "finetune": {"steps": 40, "batch_size": 16},
            "validation_every": 20,
            "validation_tasks_per_group": 32,
            "train_tasks_per_group": 256,
            "audio_encoder": {"epochs": 2, "batch_size": 32},
        },
        "evaluation": {"tasks_per_group": 100, "batch_size": 50},
    }


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/example"))
    out = parser.parse_args(argv).out

    scenario = tokensim.make_scenario(small_cell())
    run = tokensim.run(scenario, out=out / "run")
    print(f"one run: accuracy {run.metrics['accuracy']:.3f}, p95 latency {run.metrics['latency_ms']['p95']:.2f} ms")
    for user in run.per_user:
        print(f"  {user['id']:7s} {user['modalities']:6s} SNR {user['snr_db']:5.1f} dB  NMSE {user['token_nmse']:.3f}")

    # two compression ratios (1 and 4 tokens per modality, stepping together) at every user SNR 0 and 10 dB
    lengths = {f"tokens.{m}.length": [1, 4] for m in ("text", "image", "audio")}
    sweep = tokensim.sweep(scenario, grid={"snr_db": [0, 10]}, zip=lengths, out=out / "sweep")
    overall = [r for r in sweep.rows if r["user"] == "all"]

    fig, ax = plt.subplots(figsize=(3.5, 2.5))
    for ratio in sorted({r["compression_ratio"] for r in overall}):
        mine = sorted((r for r in overall if r["compression_ratio"] == ratio), key=lambda r: r["snr_db"])
        ax.plot([r["snr_db"] for r in mine], [r["accuracy"] for r in mine], "o-", label=f"{ratio:.0f}:1")
    ax.set(xlabel="SNR of every user (dB)", ylabel="test accuracy", ylim=(0, 1))
    ax.legend(title="compression ratio")
    figure = out / "compression.png"
    fig.savefig(figure, dpi=150, bbox_inches="tight")
    print(f"figure: {figure}")
    return figure


if __name__ == "__main__":
    main()
