"""What each TB configuration of a carrier needs, made once per process: its codec, its llr-mi BLER curve,
the carrier's TB table and link adaptation's SINR thresholds, and the EESM of a user's best PRBs.

A (MCS, PRBs) pair fixes a TB's size, its LDPC code and its modulation; a run meets the same few dozen pairs
again and again, so each is built once (:func:`functools.lru_cache`) and the llr-mi curves also kept on disk.
"""

from __future__ import annotations

import functools
import json

import torch

from models.cache import load_or_build
from models.paths import cache_dir, digest
from sim.phy.abstraction import eesm_beta, effective_sinr
from sim.phy.digital import TransportBlockLink, TransportBlockTable
from sim.phy.link_adaptation import sinr_thresholds_db
from sim.phy.llr_mi import CALIBRATION_VERSION, BlerCurve, calibrate
from sim.runtime import sionna_rng_untouched


def eesm_of_best(sinr_prb: torch.Tensor, mcs: torch.Tensor, mcs_table: int, best_first: bool) -> torch.Tensor:
    """[..., num_prbs]: for every grant size ``b``, Sionna's EESM (beta of ``mcs``) of the ``b`` largest of
    ``sinr_prb`` [..., num_prbs] (``best_first``), or of all of them for every ``b``.

    Sionna's formula, ``-beta ln(mean exp(-sinr / beta))``, for every ``b`` at once by a cumulative sum
    over the SINRs sorted best first (its EESM block would need a ``[..., num_prbs, num_prbs]`` input), in
    the log domain, where no exponential under- or overflows.
    """
    beta = eesm_beta(mcs, mcs_table).to(sinr_prb)[..., None]
    if not best_first:
        return effective_sinr(sinr_prb.float(), mcs, mcs_table)[..., None].expand_as(sinr_prb).to(sinr_prb)
    ordered = sinr_prb.sort(-1, descending=True).values
    counts = torch.arange(1, sinr_prb.shape[-1] + 1, device=sinr_prb.device)
    return -beta * (torch.logcumsumexp(-ordered / beta, dim=-1) - torch.log(counts))


@functools.lru_cache(maxsize=512)
def tb_codec(mcs, prbs, subcarrier_spacing_hz, pilots, mcs_table, decoder, num_bp_iter, device) -> TransportBlockLink:
    """The encoder, mapper, demapper and decoder of one (MCS, PRBs) TB, built once per process (building a 5G
    LDPC code takes tens of milliseconds; a run meets the same few dozen again and again)."""
    return TransportBlockLink(
        mcs,
        prbs,
        subcarrier_spacing_hz=subcarrier_spacing_hz,
        pilot_ofdm_symbol_indices=list(pilots),
        mcs_table=mcs_table,
        decoder=decoder,
        num_bp_iter=num_bp_iter,
        device=device,
    )


@functools.lru_cache(maxsize=None)
def calibrated_curve(mcs, prbs, subcarrier_spacing_hz, pilots, mcs_table, decoder, num_bp_iter, centre_db) -> BlerCurve:
    """:func:`~sim.phy.llr_mi.calibrate` for one (MCS, PRBs) TB on the CPU, kept in the cache (``llr-mi/``)
    across processes: a calibration decodes some 400 TBs, a fraction of a second to a minute by their size."""
    key = {
        "version": CALIBRATION_VERSION,
        "mcs": mcs,
        "prbs": prbs,
        "pilots": list(pilots),
        "mcs_table": mcs_table,
        "decoder": decoder,
        "num_bp_iter": num_bp_iter,
        "centre_db": round(centre_db, 6),
    }

    def build(tmp):
        codec = tb_codec(mcs, prbs, subcarrier_spacing_hz, pilots, mcs_table, decoder, num_bp_iter, "cpu")
        curve = calibrate(codec, centre_db, seed=1000 * mcs + prbs)
        tmp.write_text(json.dumps(key | {"mi50": curve.mi50, "width": curve.width}))

    def load(path):
        saved = json.loads(path.read_text())
        return BlerCurve(mi50=saved["mi50"], width=saved["width"])

    return load_or_build(cache_dir() / "llr-mi" / f"{digest(key)}.json", load, build)


@functools.lru_cache(maxsize=16)
def transport_block_table(num_prbs: int, num_pilot_symbols: int, mcs_table: int) -> TransportBlockTable:
    """The carrier's :class:`~sim.phy.digital.TransportBlockTable`, made once per process."""
    return TransportBlockTable(num_prbs, num_pilot_symbols, mcs_table)


@functools.lru_cache(maxsize=16)
def carrier_tables(num_prbs: int, num_pilot_symbols: int, mcs_table: int, bler_target: float):
    """The carrier's TB table and link adaptation's SINR thresholds, made once per process (both are fixed).

    The thresholds come from the PHY abstraction, which draws an ACK on every call: Sionna's generator is put
    back, so a run draws the same channels and noise whether these were cached or not.
    """
    table = transport_block_table(num_prbs, num_pilot_symbols, mcs_table)
    with sionna_rng_untouched():
        return table, sinr_thresholds_db(table, bler_target)


def tb_size_at(tb_size: torch.Tensor, mcs: torch.Tensor) -> torch.Tensor:
    """``tb_size[mcs[..., b], b]`` for ``mcs`` [..., num_prbs] (b = 1..num_prbs along the last axis)."""
    prbs = torch.arange(mcs.shape[-1], device=mcs.device).expand_as(mcs)
    return tb_size[mcs.clamp_min(0), prbs]
