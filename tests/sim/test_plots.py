"""`tokensim plot`: every figure of a sweep and of a run draws exactly the data of the CSV files it reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from sim.plot_base import COLUMN_WIDTH_IN
from sim.plots import frontier
from sim.plots_latency import BREAKDOWN_LABELS, coinciding

NAMES = ("accuracy_vs_snr", "latency_cdf", "per_user", "latency_breakdown", "rate_accuracy", "loss_vs_step")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """Two token lengths (two models, two compression ratios) x SNR 0, 5, 10 dB, sequentially."""
    import yaml

    from tests.conftest import TINY

    raw = {
        **TINY,
        "sweep": {"grid": {"snr_db": "0:10:5"}, "zip": {"tokens.image.length": [1, 2], "tokens.audio.length": [1, 2]}},
    }
    base = tmp_path_factory.mktemp("plots")
    (base / "sweep.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(base / "sweep.yaml"), "--out", str(base / "out"), "--quiet"]) == 0
    return base / "out"


def _line_data(line) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def _labelled_lines(ax) -> dict:
    """The data lines of ``ax`` by label (error-bar caps carry none)."""
    return {line.get_label(): _line_data(line) for line in ax.get_lines() if not line.get_label().startswith("_")}


def _by_ratio(rows: list[dict]) -> dict[str, list[dict]]:
    groups = {}
    for r in rows:
        groups.setdefault(f"{float(r['compression_ratio']):.3g}:1", []).append(r)
    return groups


def test_sweep_figures_draw_the_csv_data(sweep_dir, capsys):
    from sim.plots import plot_directory

    assert main(["plot", str(sweep_dir)]) == 0
    printed = capsys.readouterr().out.split()
    for name in NAMES:
        assert str(sweep_dir / "plots" / f"{name}.png") in printed
        for suffix in (".png", ".pdf"):
            assert (sweep_dir / "plots" / f"{name}{suffix}").stat().st_size > 1000
    figures = plot_directory(sweep_dir)
    assert set(figures) == set(NAMES)
    _every_line_labelled(figures)
    for fig in figures.values():  # a paper column, fonts of 7 pt or more
        assert fig.get_size_inches()[0] == COLUMN_WIDTH_IN
        for ax in fig.axes:
            texts = [ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()]
            if ax.get_legend():
                texts += ax.get_legend().get_texts()
            assert all(t.get_fontsize() >= 7 for t in texts if t.get_text())
    results = _rows(sweep_dir / "results.csv")
    overall = [r for r in results if r["user"] == "all"]
    series = _by_ratio(overall)
    assert len(series) == 2 and len(overall) == 6

    ax = figures["accuracy_vs_snr"].axes[0]
    assert ax.get_xlabel() == "SNR of every user (dB)" and ax.get_ylabel() == "test accuracy"
    lines = _labelled_lines(ax)
    assert set(lines) == set(series)
    for label, members in series.items():
        x, y = lines[label]
        assert x.tolist() == [0, 5, 10] and y.tolist() == [float(r["accuracy"]) for r in members]
    # each point's 95 % interval (one seed: Wilson over its tasks) as an error bar
    bars = [np.asarray(c.lines[2][0].get_segments()) for c in ax.containers]  # [points, 2 ends, (x, y)]
    intervals = sorted((float(r["accuracy_ci95_low"]), float(r["accuracy_ci95_high"])) for r in overall)
    drawn = sorted((float(seg[0, 1]), float(seg[1, 1])) for segs in bars for seg in segs)
    assert np.allclose(drawn, intervals)

    ax = figures["rate_accuracy"].axes[0]
    assert ax.get_xlabel() == "Shannon-equivalent bits per task"
    lines = _labelled_lines(ax)
    bits = [float(r["bits_per_task"]) for r in overall]
    accuracy = [float(r["accuracy"]) for r in overall]
    for label, members in series.items():
        x, y = lines[label]
        drawn = sorted(zip(x, y))
        assert drawn == sorted((float(r["bits_per_task"]), float(r["accuracy"])) for r in members)
    x, y = lines["frontier"]
    assert (x.tolist(), y.tolist()) == frontier(bits, accuracy)
    for b, a in zip(bits, accuracy):  # nothing beats the frontier with as few bits; the frontier is drawn points
        assert a <= max(fy for fx, fy in zip(x, y) if fx <= b)
    assert set(zip(x, y)) <= set(zip(bits, accuracy))

    ax = figures["latency_cdf"].axes[0]
    assert ax.get_xlabel() == "task latency (ms)" and ax.get_ylabel() == "CDF"
    lines = {line.get_label(): _line_data(line) for line in ax.get_lines()}
    pooled = {
        label: [
            float(t["latency_ms"]) for r in members for t in _rows(sweep_dir / "points" / r["point"] / "per_task.csv")
        ]
        for label, members in series.items()
    }
    first, second = (sorted(v) for v in pooled.values())
    labels = list(pooled)
    # identical curves are one line, saying so; different ones a line each
    assert set(lines) == ({f"{labels[0]} = {labels[1]} (identical)"} if first == second else set(labels))
    for label, latency in coinciding(pooled).items():
        x, y = lines[label]
        assert x.tolist() == latency.tolist() and y.tolist() == (np.arange(1, len(x) + 1) / len(x)).tolist()

    stage_axes = figures["loss_vs_step"].axes
    assert [a.get_title() for a in stage_axes] == ["stage 1: alignment", "stage 2: fine-tuning"]
    for label, members in series.items():
        log = _rows(sweep_dir / "points" / members[0]["point"] / "training_log.csv")
        for ax, stage in zip(stage_axes, ("align", "finetune")):
            mine = [r for r in log if r["stage"] == stage]
            labelled = [i for i, line in enumerate(ax.get_lines()) if line.get_label() == label]
            x, y = _line_data(ax.get_lines()[labelled[0] - 1])  # the thin per-step line drawn before its mean
            assert x.tolist() == [int(r["step"]) for r in mine] and y.tolist() == [float(r["loss"]) for r in mine]

    top, bottom = figures["per_user"].axes
    assert figures["per_user"]._suptitle.get_text() == "snr_db = 5 dB (of 0, 5, 10)"  # the point shown, named
    at_middle = [r for r in results if r["user"] != "all" and r["snr_db"] == "5"]
    users = list(dict.fromkeys(r["user"] for r in at_middle))
    assert [t.get_text() for t in bottom.get_xticklabels()] == users
    latency = _labelled_lines(bottom)
    for i, (label, members) in enumerate(_by_ratio(at_middle).items()):
        bars = top.containers[i]
        assert bars.get_label() == label
        assert [b.get_height() for b in bars] == [float(r["accuracy"]) for r in members]
        assert latency[f"mean ({label})"][1].tolist() == [float(r["latency_mean_ms"]) for r in members]
        assert latency[f"p95 ({label})"][1].tolist() == [float(r["latency_p95_ms"]) for r in members]
    values = [float(r[k]) for r in at_middle for k in ("latency_mean_ms", "latency_p95_ms")]
    low, high = bottom.get_ylim()
    assert low <= min(values) and max(values) <= high and (low > 0 or min(values) < 0.5 * max(values))

    ax = figures["latency_breakdown"].axes[0]
    for i, (_label, members) in enumerate(_by_ratio(at_middle).items()):
        point = json.loads((sweep_dir / "points" / members[0]["point"] / "metrics.json").read_text())
        widths = [c[i].get_width() for c in ax.containers]
        assert widths == pytest.approx([point["latency_ms"]["breakdown"][k] for k in BREAKDOWN_LABELS], abs=1e-12)
        assert sum(widths) == pytest.approx(point["latency_ms"]["mean"])


def test_run_figures_draw_the_run_csvs(sweep_dir):
    """A point of the sweep is a run directory: per-user points and bars, a latency CDF per group."""
    from sim.plots import plot_directory

    run = next((sweep_dir / "points").iterdir())
    figures = plot_directory(run)
    assert set(figures) == {"accuracy_vs_snr", "latency_cdf", "per_user", "latency_breakdown", "loss_vs_step"}
    _every_line_labelled(figures)
    assert (run / "plots" / "per_user.pdf").is_file()
    users = _rows(run / "per_user.csv")
    tasks = _rows(run / "per_task.csv")
    metrics = json.loads((run / "metrics.json").read_text())

    # one marker per user at its own SNR, no line joining users, grouped by what they send
    ax = figures["accuracy_vs_snr"].axes[0]
    lines = _labelled_lines(ax)
    assert set(lines) == {u["modalities"] for u in users}
    assert all(line.get_linestyle() == "None" for line in ax.get_lines() if not line.get_label().startswith("_"))
    for modalities, (x, y) in lines.items():
        mine = sorted((u for u in users if u["modalities"] == modalities), key=lambda u: float(u["snr_db"]))
        assert x.tolist() == [float(u["snr_db"]) for u in mine] and y.tolist() == [float(u["accuracy"]) for u in mine]

    lines = {line.get_label(): _line_data(line) for line in figures["latency_cdf"].axes[0].get_lines()}
    assert set(lines) == {"a", "b"}
    for group, (x, _) in lines.items():
        assert x.tolist() == sorted(float(t["latency_ms"]) for t in tasks if t["group"] == group)

    top, bottom = figures["per_user"].axes
    assert figures["per_user"]._suptitle.get_text() == f"run {metrics['scenario']}"
    assert [b.get_height() for b in top.containers[0]] == [float(u["accuracy"]) for u in users]
    latency = _labelled_lines(bottom)
    assert latency["mean"][1].tolist() == [float(u["latency_ms"]) for u in users]
    assert latency["p95"][1].tolist() == [float(u["latency_p95_ms"]) for u in users]

    ax = figures["latency_breakdown"].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [g["id"] for g in metrics["groups"]]
    assert [c.get_label() for c in ax.containers] == list(BREAKDOWN_LABELS.values())
    for k, group in enumerate(metrics["groups"]):
        widths = [c[k].get_width() for c in ax.containers]
        assert widths == pytest.approx([group["breakdown"][term] for term in BREAKDOWN_LABELS], abs=1e-12)
        assert sum(widths) == pytest.approx(group["latency_ms"])  # the terms make up the latency


def _every_line_labelled(figures):
    """No line is drawn without a label of its own (matplotlib names unlabelled ones ``_child<n>``;
    error-bar caps are ``_nolegend_``)."""
    for name, fig in figures.items():
        for ax in fig.axes:
            assert not [line for line in ax.get_lines() if line.get_label().startswith("_child")], name


def test_coinciding_curves_are_merged_and_say_so():
    merged = coinciding({"a": np.array([3.0, 1.0]), "b": np.array([1.0, 3.0]), "c": np.array([1.0, 2.0])})
    assert list(merged) == ["a = b (identical)", "c"] and merged["a = b (identical)"].tolist() == [1.0, 3.0]


def test_plot_names_what_it_cannot_read(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "neither a sweep directory (results.csv) nor a run (metrics.json)" in capsys.readouterr().err
