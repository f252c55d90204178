"""Where Sionna's PHY abstraction and the link-level chain part: one TB at a time, no HARQ, no link adaptation.

Each point sends ``--tbs`` transport blocks of one MCS on 2 PRBs through the cell loop's receiver
(:class:`~sim.phy.analog.GrantedPrbLink`: Sionna's grid mapper and OFDM channel, LS or perfect CSI, one-tap
MMSE) and decodes every one (the link level), and compares the BLER with what the abstraction predicts for
the same TBs:

- EESM: Sionna's ``PHYAbstraction`` at Sionna's EESM of the per-RE SINRs of the MMSE-corrected channel
  estimate (``sinr_abstraction``; ``link.abstraction: eesm``);
- LLR information on Sionna's tables: the same BLER tables at the SINR whose AWGN bit-interleaved mutual
  information equals the mean bit information of the TB's own LLRs, ``1 - log2(1 + exp(-s L))`` over its
  coded bits (s = +-1 the sent bit; the demapper's LLRs as the decoder gets them). It sees what the per-RE
  SINR cannot: LLRs made over-confident and wrong by an estimate whose phase is off;
- LLR information, calibrated (``link.abstraction: llr-mi``, :mod:`sim.phy.llr_mi`): the same information
  on a BLER curve measured on AWGN with this chain's own encoder, demapper and decoder.

Channels: ``awgn`` (h = 1) and ``block`` (one Rayleigh gain per PRB, flat over its 12 subcarriers and the slot:
TDL-A with 100 ns over a 360 kHz PRB, nearly). Writes ``abstraction-gap.md``/``.csv`` into ``--out``
(default ``results/docs-digital``; ``--out docs/digital`` rewrites the copy the digital page shows):

    PYTHONPATH=. .venv/bin/python docs/digital/abstraction_gap.py [--tbs 1000] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from sim.phy.llr_mi import bit_information
from sim.results import write_csv

PRBS = 2
# (channel, CSI, decoder, MCS, SNRs in dB): near each MCS's cliff on that channel
POINTS = [
    ("awgn", "perfect", None, 3, (-3, -2)),
    ("awgn", "perfect", None, 9, (3, 4)),
    ("awgn", "perfect", None, 16, (8, 9)),
    ("awgn", "perfect", "sionna-bp", 9, (3, 4)),
    ("block", "perfect", None, 3, (0, 3, 6)),
    ("block", "perfect", None, 9, (6, 10, 14)),
    ("block", "perfect", None, 16, (12, 16, 20)),
    ("block", "ls", None, 3, (0, 3, 6)),
    ("block", "ls", None, 9, (6, 10, 14)),
    ("block", "ls", None, 16, (12, 16, 20)),
]


_CURVES: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # bits per symbol -> curve: one per modulation


def awgn_information_curve(codec, num_bits: int = 40000) -> tuple[torch.Tensor, torch.Tensor]:
    """(SNR dB, mean bit information) of ``codec``'s QAM and demapper on AWGN with perfect CSI (made once per
    modulation; every MCS of one modulation shares it)."""
    if codec.bits_per_symbol not in _CURVES:
        _CURVES[codec.bits_per_symbol] = _information_curve(codec, num_bits)
    return _CURVES[codec.bits_per_symbol]


def _information_curve(codec, num_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    snr_db = torch.arange(-15.0, 35.01, 0.25)
    m = codec.bits_per_symbol
    generator = torch.Generator().manual_seed(1)
    bits = torch.randint(0, 2, (len(snr_db), num_bits // m * m), generator=generator).float()
    x = codec.mapper(bits)
    no = torch.pow(10.0, -snr_db / 10)[:, None]
    noise = torch.complex(torch.randn(x.shape, generator=generator), torch.randn(x.shape, generator=generator))
    llr = codec.demapper(x + torch.sqrt(no / 2) * noise, no.expand(x.shape))
    return snr_db, torch.cummax(bit_information(llr, bits).mean(-1), 0).values


def information_to_sinr(curve, information: torch.Tensor) -> torch.Tensor:
    """Linear SINR at which the AWGN curve reaches ``information`` (linear interpolation in dB)."""
    snr_db, mi = curve
    i = torch.searchsorted(mi.contiguous(), information.clamp(float(mi[0]), float(mi[-1])).contiguous())
    i = i.clamp(1, len(mi) - 1)
    t = ((information - mi[i - 1]) / (mi[i] - mi[i - 1]).clamp_min(1e-12)).clamp(0, 1)
    return torch.pow(10.0, (snr_db[i - 1] + t * (snr_db[i] - snr_db[i - 1])) / 10)


def measure(channel, csi, decoder, mcs, snr_db, num_tbs, seed=0) -> dict:
    from sionna.phy import config

    from sim.cell.tb_configs import calibrated_curve, carrier_tables, tb_codec
    from sim.phy.abstraction import TransportBlockAbstraction
    from sim.phy.analog import GrantedPrbLink

    torch.manual_seed(seed)
    config.seed = seed  # Sionna's channel and noise draw from generators of their own
    codec = tb_codec(mcs, PRBS, 30e3, (2, 11), 1, decoder, None, "cpu")
    link = GrantedPrbLink(30e3, [2, 11], csi=csi)
    bits = torch.randint(0, 2, (num_tbs, 1, codec.tb_size)).float()
    coded = codec.encoder(bits)
    symbols = codec.mapper(coded).reshape(num_tbs * PRBS, -1)
    if channel == "awgn":
        h = torch.ones(num_tbs * PRBS, 12, dtype=torch.complex64)
    else:
        h = (torch.randn(num_tbs * PRBS, 1, dtype=torch.complex64)).expand(-1, 12)  # CN(0, 1) per PRB
    out = link(symbols, h, torch.full((num_tbs * PRBS,), 10 ** (-snr_db / 10)))
    llr = codec.demap(out["x"].reshape(num_tbs, 1, -1), out["sinr"].reshape(num_tbs, 1, -1))
    link_bler = 1 - float(codec.decode(llr)[1].float().mean())
    abstraction = TransportBlockAbstraction(1)
    mcs_index = torch.full((num_tbs,), mcs)
    eesm = float(abstraction(mcs_index, sinr=out["sinr_abstraction"].reshape(num_tbs, -1))["bler"].mean())
    information = bit_information(llr.reshape(num_tbs, -1), coded.reshape(num_tbs, -1)).mean(-1)
    sinr_eff = information_to_sinr(awgn_information_curve(codec), information)
    llr_mi = abstraction(mcs_index, sinr_eff=sinr_eff, num_allocated_re=codec.num_data_res)["bler"]
    centre_db = float(carrier_tables(PRBS, 2, 1, 0.1)[1][mcs, PRBS])
    calibrated = calibrated_curve(mcs, PRBS, 30e3, (2, 11), 1, decoder, None, centre_db).bler(information)
    return {
        "channel": channel,
        "csi": csi,
        "decoder": decoder or "layered-oms",
        "mcs": mcs,
        "snr_db": snr_db,
        "tbs": num_tbs,
        "link_bler": link_bler,
        "link_std_error": math.sqrt(max(link_bler * (1 - link_bler), 1 / num_tbs) / num_tbs),
        "eesm_bler": eesm,
        "llr_mi_bler": float(llr_mi.mean()),
        "llr_mi_calibrated_bler": float(calibrated.mean()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tbs", type=int, default=1000, help="TBs per point")
    parser.add_argument("--out", type=Path, default=Path("results/docs-digital"))
    args = parser.parse_args(argv)
    rows = []
    for channel, csi, decoder, mcs, snrs in POINTS:
        for snr in snrs:
            rows.append(measure(channel, csi, decoder, mcs, snr, args.tbs))
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "abstraction-gap.csv", rows)
    lines = [
        "| channel | CSI | decoder | MCS | SNR dB | link BLER ± std. error | EESM, Sionna's tables (`eesm`) "
        "| LLR information, Sionna's tables | LLR information, calibrated (`llr-mi`) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['channel']} | {r['csi']} | {r['decoder']} | {r['mcs']} | {r['snr_db']:g} "
            f"| {r['link_bler']:.3f} ± {r['link_std_error']:.3f} | {r['eesm_bler']:.3f} | {r['llr_mi_bler']:.3f} "
            f"| {r['llr_mi_calibrated_bler']:.3f} |"
        )
    (args.out / "abstraction-gap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
