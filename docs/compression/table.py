"""The compression sweep's table: accuracy (mean ± std over model seeds, t interval) per compression ratio and SNR.

Reads a sweep's ``results.csv`` (the overall rows) and prints a Markdown table:

    tokensim sweep scenarios/compression_sweep.yaml --workers 2 --out results/compression_sweep
    tokensim plot results/compression_sweep
    python docs/compression/table.py results/compression_sweep/results.csv

(``docs/compression/results.csv``, the default, is the copy of the sweep's results this folder keeps.)
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict


def table(path: str) -> str:
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["user"] == "all" and not r.get("error")]
    cells, snrs, ratios = defaultdict(dict), set(), {}
    for r in rows:
        length, snr = int(r["tokens.text.length"]), float(r["snr_db"])
        snrs.add(snr)
        ratios[length] = r["compression_ratio"]
        std = float(r["accuracy_std"]) if r.get("accuracy_std") else float("nan")
        cells[length][snr] = (float(r["accuracy"]), std, r["replicates"])
    snrs = sorted(snrs)
    lines = [
        "| tokens per modality (ratio) | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
        "|---|" + "---:|" * len(snrs),
    ]
    for length in sorted(cells):
        ratio = float(ratios[length])
        values = [f"{cells[length][s][0]:.3f} ± {cells[length][s][1]:.3f}" if s in cells[length] else "–" for s in snrs]
        lines.append(f"| {length} ({ratio:.0f}:1) | " + " | ".join(values) + " |")
    seeds = ", ".join(sorted({c[2] for by_snr in cells.values() for c in by_snr.values()}))
    lines += ["", f"Mean ± sample std over {seeds} model seeds per point; results.csv holds the t intervals."]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="docs/compression/results.csv", help="a sweep's results.csv")
    print(table(parser.parse_args().results))
