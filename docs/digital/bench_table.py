"""The README's digital-link tables, from the JSON of ``tokensim bench --only digital``:

tokensim bench --only digital --repeats 3 > docs/digital/bench.json
python docs/digital/bench_table.py docs/digital/bench.json
"""

from __future__ import annotations

import json
import sys


def tables(report: dict) -> str:
    digital = report["digital"]
    lines = [
        f"Digital link, {digital['channel'].upper()} with LS estimates, {digital['num_prbs']} PRBs, one TB per link "
        f"and slot, batch {digital['batch_size']}, {digital['torch_threads']} threads, median of {digital['repeats']} "
        f"(load average {digital['load_average_1min']:.1f}); Sionna's chain on the first {digital['reference_tbs']} "
        "links, once:",
        "",
        "| MCS | SNR dB | tokensim Mbit/s (no early stop) | BLER | Sionna Mbit/s (same algorithm) | BLER, same TBs "
        "| same TB outcomes | speed-up | tokensim Mbit/s (early stop) | BLER |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: |",
    ]
    for r in digital["results"]:
        lines.append(
            f"| {r['mcs']} | {r['snr_db']:g} | {r['tokensim_full_mbit_per_s']:.2f} | {r['tokensim_full_bler']:.3f} "
            f"| {r['sionna_mbit_per_s']:.4f} | {r['sionna_bler']:.3f} vs {r['tokensim_full_bler_same_tbs']:.3f} "
            f"| {'yes' if r['same_tb_outcomes'] else 'no'} | {r['speedup']:.0f}x "
            f"| {r['tokensim_mbit_per_s']:.2f} | {r['tokensim_bler']:.3f} |"
        )
    only = digital["decoder_only"]
    lines += [
        "",
        f"Decoder only: {only['code']}, {only['num_iter']} iterations, at the Eb/N0 where early stopping gives "
        f"10 % BLER; information Mbit/s per busy core (CPU time of the one decoding thread; load average "
        f"{only['load_average_1min']:.1f}):",
        "",
        "| code rate | Eb/N0 dB | layered-oms (early stop) | mean iterations | BLER | layered-oms-full | BLER "
        "| layered-oms-frames (float32) | bit-identical to full | layered-oms-int16 | BLER "
        "| failed only in int16 / only in float | Sionna layered offset min-sum | same outcomes |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for r in only["results"]:
        fast, full, ref = r["layered-oms"], r["layered-oms-full"], r["sionna-layered-oms"]
        frames, int16 = r["layered-oms-frames"], r["layered-oms-int16"]
        lines.append(
            f"| {r['rate']:.3f} | {r['ebno_db']:.2f} | {fast['mbit_per_s_per_core']:.1f} "
            f"| {fast['mean_iterations']:.1f} | {fast['bler']:.3f} | {full['mbit_per_s_per_core']:.1f} "
            f"| {full['bler']:.3f} | {frames['mbit_per_s_per_core']:.1f} "
            f"| {'yes' if frames['bit_identical'] else 'no'} | {int16['mbit_per_s_per_core']:.1f} "
            f"| {int16['bler']:.3f} | {int16['failed_only_here']} / {int16['failed_only_in_float']} "
            f"| {ref['mbit_per_s_per_core']:.4f} ({ref['codewords']} codewords) "
            f"| {'yes' if ref['same_outcomes'] else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "docs/digital/bench.json") as f:
        print(tables(json.load(f)))
