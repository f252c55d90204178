"""``tokensim report DIR``: one self-contained ``report.html`` for a run or a sweep, which opens offline.

Everything is in the one file: the figures of ``tokensim plot`` (made if missing) inlined as base64 PNG,
the tables as HTML, the resolved scenario and the manifest as text. No script, no style sheet or font from
elsewhere; written atomically like every result.

A run's report: the headline numbers with their 95 % intervals, the per-group and per-user tables, the latency
breakdown and CDF, accuracy per user, the training curves, the scenario and the manifest. A sweep's: the
swept keys, the results table (overall rows, with intervals), every figure of ``tokensim plot``, the sweep
spec.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from models.paths import atomic_path
from sim.plot_base import Table, read_csv

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 2px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; } figure { display: inline-block; margin: .5em; }
img { max-width: 520px; } pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 12px; }
.headline td { text-align: left; }
"""
RUN_FIGURES = {
    "latency_breakdown": "Mean task latency per group, split into its terms",
    "latency_cdf": "Task latency CDF per group",
    "accuracy_vs_snr": "Accuracy of each user at its SNR",
    "per_user": "Accuracy and latency per user",
    "loss_vs_step": "Training loss per step",
}
SWEEP_FIGURES = {
    "accuracy_vs_snr": "Accuracy vs SNR",
    "rate_accuracy": "Accuracy vs bits per task, and the frontier",
    "latency_cdf": "Task latency CDF",
    "per_user": "Accuracy and latency per user",
    "latency_breakdown": "Mean task latency, split into its terms",
    "loss_vs_step": "Training loss per step",
}


def write_report(directory: str | Path) -> Path:
    """Write ``directory/report.html`` for the run or sweep in ``directory`` (figures made if missing)."""
    from sim.plots import plot_directory

    directory = Path(directory)
    table = Table.read(directory)  # FileNotFoundError if it is neither
    plots = directory / "plots"
    if not all((plots / f"{name}.png").is_file() for name in ("accuracy_vs_snr", "per_user")):
        plot_directory(directory)
    body = _sweep(directory, table) if table.is_sweep else _run(directory)
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(body[0])}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body[1])
        + "\n</body></html>\n"
    )
    out = directory / "report.html"
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return out


def _run(directory: Path) -> tuple[str, list[str]]:
    metrics = json.loads((directory / "metrics.json").read_text())
    name = metrics["scenario"]
    low, high = metrics["accuracy_ci95"]
    latency = metrics["latency_ms"]
    headline = [
        ("accuracy", f"<span id='accuracy'>{metrics['accuracy']:.3f}</span> (95 % interval {low:.3f}-{high:.3f}, "
                     f"{metrics['tasks']} tasks; always the majority answer: {metrics['majority_answer_rate']:.3f})"),
        ("latency", f"mean {latency['mean']:.2f} ms, p50 {latency['p50']:.2f}, p95 {latency['p95']:.2f}, "
                    f"p99 {latency['p99']:.2f}; deadline missed by {100 * metrics['deadline_miss_rate']:.1f} %"),
        ("bits per task", f"{metrics['bits_per_task']:.0f} ({metrics['bits_kind']})"),
        ("compression ratio", f"{metrics['compression_ratio']:.3g}:1"),
        ("token NMSE", f"{metrics['token_nmse']:.3f}"),
        ("scheduler, traffic", f"{metrics['scheduler']}, {metrics['traffic']}"),
    ]  # fmt: skip
    if "link" in metrics:
        link = metrics["link"]
        headline.append(
            (
                "digital link",
                f"{link['fidelity']}; first-attempt BLER {link['tb_first_attempt_bler']:.3f}, "
                f"residual {link['tb_residual_bler']:.4f}, mean MCS {link['mcs']:.1f}",
            )
        )
    groups = [
        {
            "group": g["id"],
            "users": " ".join(g["users"]),
            "accuracy": g["accuracy"],
            "95 % interval": f"{g['accuracy_ci95'][0]:.3f}-{g['accuracy_ci95'][1]:.3f}",
            "latency ms": g["latency_ms"],
            "bits per task": g["bits_per_task"],
            "compression": f"{g['compression_ratio']:.3g}:1",
        }
        for g in metrics["groups"]
    ]
    parts = [
        f"<h1>tokensim run: <span id='scenario'>{html.escape(name)}</span></h1>",
        f"<p>{html.escape(str(directory))}</p>",
        "<table class='headline'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in headline) + "</table>",
        "<h2>Groups</h2>",
        _table(groups, "groups"),
        "<h2>Users</h2>",
        _table(read_csv(directory / "per_user.csv"), "per-user"),
        "<h2>Figures</h2>",
        *_figures(directory, RUN_FIGURES),
        *_image(directory / "convergence.png", "Training: loss and validation accuracy per step"),
        "<h2>Scenario (resolved)</h2>",
        _pre(directory / "scenario.yaml"),
        "<h2>Manifest</h2>",
        _pre(directory / "manifest.json"),
    ]
    return f"tokensim: {name}", parts


def _sweep(directory: Path, table) -> tuple[str, list[str]]:
    import yaml

    spec = yaml.safe_load((directory / "sweep.yaml").read_text())
    keys = [k for k in (*spec["zip"], *spec["grid"])]
    columns = [*keys, "compression_ratio", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "bits_per_task",
               "latency_mean_ms", "latency_p95_ms", "token_nmse", "replicates"]  # fmt: skip
    rows = [{c: r.get(c, "") for c in columns if c in r} for r in table.overall()]
    name = Path(spec["scenario"]).stem
    parts = [
        f"<h1>tokensim sweep: <span id='scenario'>{html.escape(name)}</span></h1>",
        f"<p>{html.escape(str(directory))}: {len(rows)} points over {html.escape(', '.join(keys) or 'nothing')}"
        f"{', replicated over model seeds' if table.replicated else ''}</p>",
        "<h2>Results (every user together)</h2>",
        _table(rows, "results"),
        "<h2>Figures</h2>",
        *_figures(directory, SWEEP_FIGURES),
        "<h2>Sweep</h2>",
        _pre(directory / "sweep.yaml"),
    ]
    return f"tokensim sweep: {name}", parts


def _cell(value) -> str:
    if isinstance(value, float) or (isinstance(value, str) and _is_float(value)):
        number = float(value)
        return f"{number:.4g}" if abs(number) < 1e4 else f"{number:.0f}"
    return html.escape(str(value))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return "." in text or "e" in text.lower()


def _table(rows: list[dict], name: str) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    table = f"<table id='{name}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div style='overflow-x: auto'>{table}</div>"


def _figures(directory: Path, names: dict[str, str]) -> list[str]:
    return [part for name, caption in names.items() for part in _image(directory / "plots" / f"{name}.png", caption)]


def _image(path: Path, caption: str) -> list[str]:
    if not path.is_file():
        return []
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return [
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    ]


def _pre(path: Path) -> str:
    return f"<pre>{html.escape(path.read_text())}</pre>" if path.is_file() else "<p>(missing)</p>"
