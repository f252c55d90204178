"""Transport-block PHY abstraction: post-equalisation SINR -> BLER -> ACK/NACK, through Sionna's ``PHYAbstraction``.

Long system-level runs cannot afford LDPC decoding of every transport block (the link-level chain in
``sim/phy/digital.py`` decodes some 10^5 bits/s on a CPU). Sionna's ``PHYAbstraction`` maps an effective SINR to
the block error rate from AWGN BLER tables that Sionna simulated per MCS and code-block size, and draws the HARQ
feedback from it; ``tests/sim/test_abstraction.py`` holds it against link-level decoding.

Conventions of the uplink this wraps: PUSCH, one layer, no transform precoding, Sionna MCS category 0 (PUSCH);
a slot of 14 OFDM symbols with 2 full pilot symbols gives 144 data REs per PRB.
"""

from __future__ import annotations

import contextlib
import functools
import os

import sionna.sys
import torch
from sionna.phy import Block, config
from sionna.phy.nr.utils import MCSDecoderNR, TransportBlockNR
from sionna.phy.utils import lin_to_db
from sionna.sys import EESM, PHYAbstraction

PUSCH_CATEGORY = 0  # Sionna's mcs_category for PUSCH (1 is PDSCH)
PUSCH_MCS_TABLES = (1, 2)  # Sionna ships PUSCH BLER tables (and EESM betas) for 38.214 tables 1 (64-QAM), 2 (256-QAM)
DATA_RES_PER_PRB = 144  # 12 subcarriers x (14 - 2 pilot) OFDM symbols


class _RecordingTransportBlockNR(TransportBlockNR):
    """Sionna's 5G NR TB sizing that keeps the sizes of its last call.

    ``PHYAbstraction`` computes the TB size of every link but returns only ``tb_size * ack``; keeping its own
    numbers reports exactly the sizes it used, without computing them twice (that would cost a third of the
    abstraction's time).
    """

    last_tb_size: torch.Tensor | None = None

    def transport_block_size(self, modulation_order, target_coderate, num_coded_bits, **kwargs):
        tb_size, cb_size, num_cb = super().transport_block_size(
            modulation_order, target_coderate, num_coded_bits, **kwargs
        )
        self.last_tb_size = tb_size
        return tb_size, cb_size, num_cb


@functools.lru_cache(maxsize=None)
def _pusch_blocks(mcs_table_index: int, precision: str, device: str) -> tuple:
    # Interpolating all six of Sionna's BLER tables takes ~20 s on 2 cores, the one PUSCH table in use ~1 s; one
    # instance per (table, precision, device) serves every block of the process (it holds no per-link state).
    path = os.path.join(os.path.dirname(sionna.sys.__file__), "bler_tables", f"PUSCH_table{mcs_table_index}.json")
    eesm = EESM(precision=precision, device=device)
    tb_sizing = _RecordingTransportBlockNR(precision=precision, device=device)
    # Sionna interpolates the tables with scipy; on a 2-core machine shared with other jobs two OpenBLAS threads
    # took 8.3 s where one took 0.12 s (threadpoolctl ships with scikit-learn; without it, just slower)
    with _one_blas_thread():
        phy_abstraction = PHYAbstraction(
            mcs_decoder_fun=MCSDecoderNR(precision=precision, device=device),
            transport_block_fun=tb_sizing,
            sinr_effective_fun=eesm,
            load_bler_tables_from=[path],
            precision=precision,
            device=device,
        )
    return phy_abstraction, eesm, tb_sizing


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _check_mcs_table(mcs_table_index: int) -> None:
    if mcs_table_index not in PUSCH_MCS_TABLES:
        allowed = ", ".join(map(str, PUSCH_MCS_TABLES))
        raise ValueError(f"MCS table {mcs_table_index} has no PUSCH BLER table in Sionna (tables {allowed} have)")


def pusch_phy_abstraction(mcs_table_index: int = 1, precision: str | None = None, device: str | None = None):
    """Sionna's ``PHYAbstraction`` loaded with the PUSCH BLER table of ``mcs_table_index`` only, shared per process.

    :param mcs_table_index: 38.214 MCS table, 1 (up to 64-QAM) or 2 (up to 256-QAM)
    :param precision: ``"single"`` | ``"double"``; ``None`` takes Sionna's ``config.precision``
    :param device: torch device string; ``None`` takes Sionna's ``config.device``
    """
    _check_mcs_table(mcs_table_index)
    return _pusch_blocks(mcs_table_index, precision or config.precision, device or config.device)[0]


def calibrated_mcs(phy_abstraction: PHYAbstraction, mcs_table_index: int = 1) -> list[int]:
    """MCS indices of ``mcs_table_index`` that Sionna's PUSCH BLER tables cover (table 1: 3..27)."""
    table = phy_abstraction.bler_table["category"][PUSCH_CATEGORY]["index"][mcs_table_index]["MCS"]
    return sorted(table)


def eesm_beta(mcs_index: torch.Tensor, mcs_table_index: int = 1) -> torch.Tensor:
    """[...] float: the beta of Sionna's EESM for each PUSCH MCS of ``mcs_index`` [...]."""
    eesm = _pusch_blocks(mcs_table_index, config.precision, str(mcs_index.device))[1]
    return eesm.beta_tensor[mcs_table_index - 1].to(mcs_index.device)[mcs_index.long().clamp_min(0)]


def effective_sinr(sinr: torch.Tensor, mcs_index: torch.Tensor, mcs_table_index: int = 1) -> torch.Tensor:
    """Sionna's EESM of each link's SINRs, with the beta of its MCS.

    :param sinr: [..., n], float, linear. Zeros mark unused entries, which EESM skips; entries may be per RE
        or per PRB (EESM averages).
    :param mcs_index: [...], int. MCS whose beta weighs the exponential average (must have a BLER table).
    :output: [...], float, linear effective SINR (0 where every entry is 0).
    """
    eesm = _pusch_blocks(mcs_table_index, config.precision, str(sinr.device))[1]
    # Sionna's EESM wants [..., num_ofdm_symbols, num_subcarriers, num_ut, num_streams]: one link, one stream
    return eesm(
        sinr[..., None, :, None, None],
        mcs_index=mcs_index.to(torch.int32)[..., None],
        mcs_table_index=mcs_table_index,
        per_stream=False,
    )[..., 0]


class TransportBlockAbstraction(Block):
    r"""Fate of each link's transport block in a slot, from its SINR, without decoding it.

    Wraps :class:`sionna.sys.PHYAbstraction` (PUSCH, one layer): per-RE SINRs are reduced to one effective SINR
    with Sionna's EESM (its beta depends on the MCS), the TB is segmented into code blocks by Sionna's 5G NR TB
    sizing of ``modulation_order * num_allocated_re`` coded bits, the code-block BLER is read from Sionna's AWGN
    tables at that SINR and code-block size, and the TB error rate is :math:`1 - (1 - \mathrm{BLER})^{C}` for
    :math:`C` code blocks. The ACK is a Bernoulli draw from Sionna's torch generator, so a run is repeatable
    for a given ``sionna.phy.config.seed``.

    Chase-combining HARQ: a retransmission repeats the same coded bits (same MCS and REs), and the receiver adds
    the soft values, so the SINRs of the transmissions add per RE. Pass the running sum of the earlier
    transmissions' SINRs as ``harq_sinr`` (zeros, or ``None``, for a first transmission); the output
    ``"harq_sinr"`` is the sum including this one, to pass to the next retransmission of the same TB and to drop
    on ACK. With ``sinr_eff`` instead of per-RE SINRs the effective SINRs are added, which is exact on channels
    flat over the TB and optimistic otherwise.

    Links batch over any leading dimensions (users, slots, drops); nothing loops over links.

    :param mcs_table_index: 38.214 PUSCH MCS table, 1 (64-QAM, default) or 2 (256-QAM)
    :param precision: ``"single"`` | ``"double"``; ``None`` takes Sionna's ``config.precision``
    :param device: ``None`` takes Sionna's ``config.device``

    :input mcs_index: [...], int. MCS index of each link's TB; a scheduled link's must have a BLER table
        (:attr:`available_mcs`: 3..27 in table 1, 9..27 in table 2), else ``ValueError`` (the scenario checks
        refuse a fixed ``link.mcs`` outside them first).
    :input sinr: [..., num_res], float | ``None``. Linear post-equalisation SINR of each RE of the TB. Zeros
        mark unused entries (links with fewer REs), which EESM skips. The entries may also be coarser than REs
        (one per PRB or subband, all representing equally many REs), since EESM averages them; give
        ``num_allocated_re`` then.
    :input sinr_eff: [...], float | ``None``. Linear effective SINR, instead of ``sinr``.
    :input num_allocated_re: [...] int | int | ``None``. Data REs of the TB (144 per PRB in a 14-symbol slot with
        2 pilot symbols); 0 means the link is not scheduled. Required with ``sinr_eff``; with ``sinr``,
        defaults to the number of its positive entries.
    :input harq_sinr: same shape as the SINR given, float | ``None``. Summed linear SINR of the earlier
        transmissions of this TB (Chase combining).

    :output: dict of tensors, each [...]:
        ``"tb_ok"``: bool, ACK drawn from the BLER (False when not scheduled);
        ``"harq_feedback"``: int32, 1 ACK, 0 NACK, -1 not scheduled (what ``LinkAdaptation.update`` takes);
        ``"bler"``: float, probability that the TB fails (transport BLER; -1 when not scheduled);
        ``"cb_bler"``: float, BLER of one of its code blocks (-1 when not scheduled);
        ``"sinr_eff_db"``: float, effective SINR in dB (of the combined SINR on retransmissions);
        ``"tb_size"``: int32, information bits of the TB, CRC excluded (0 when not scheduled);
        ``"num_decoded_bits"``: int32, ``tb_size`` on ACK, else 0;
        ``"harq_sinr"``: float, shape of the SINR given, combined SINR including this transmission.

    >>> tba = TransportBlockAbstraction()
    >>> out = tba(torch.tensor([5, 14, 20]), sinr_eff=torch.tensor([1.0, 6.0, 20.0]),
    ...           num_allocated_re=torch.tensor([144, 288, 144]))
    >>> out["bler"], out["tb_ok"], out["tb_size"]
    """

    def __init__(self, mcs_table_index: int = 1, precision: str | None = None, device: str | None = None):
        super().__init__(precision=precision, device=device)
        self.mcs_table_index = mcs_table_index
        _check_mcs_table(mcs_table_index)
        self.phy_abstraction, self._eesm, self._tb_sizing = _pusch_blocks(mcs_table_index, self.precision, self.device)
        self.available_mcs = calibrated_mcs(self.phy_abstraction, mcs_table_index)
        # the range check in call() relies on it
        assert self.available_mcs == list(range(self.available_mcs[0], self.available_mcs[-1] + 1))

    def call(
        self,
        mcs_index: torch.Tensor,
        sinr: torch.Tensor | None = None,
        sinr_eff: torch.Tensor | None = None,
        num_allocated_re: torch.Tensor | int | None = None,
        harq_sinr: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if (sinr is None) == (sinr_eff is None):
            raise ValueError("give exactly one of sinr (per RE) and sinr_eff")
        combined = sinr if sinr is not None else sinr_eff
        if harq_sinr is not None:
            combined = combined + harq_sinr
        if num_allocated_re is None:
            if sinr is None:
                raise ValueError("num_allocated_re is required with sinr_eff")
            num_allocated_re = (combined > 0).sum(-1, dtype=torch.int32)
        num_allocated_re = torch.as_tensor(num_allocated_re, dtype=torch.int32, device=self.device).expand(
            mcs_index.shape
        )
        scheduled = num_allocated_re > 0

        lowest, highest = self.available_mcs[0], self.available_mcs[-1]
        mcs_index = mcs_index.to(torch.int32)
        outside = (mcs_index < lowest) | (mcs_index > highest)
        if bool(outside.any()):
            if bool((outside & scheduled).any()):
                raise ValueError(
                    f"MCS {sorted(set(mcs_index[outside & scheduled].tolist()))} of PUSCH MCS table "
                    f"{self.mcs_table_index} have no BLER table in Sionna (MCS {lowest}..{highest} have)"
                )
            # an unscheduled link's MCS may be anything (OLLA fills 0); Sionna's look-ups index tables with it
            mcs_index = torch.where(outside, lowest, mcs_index)

        if sinr is not None:
            # Sionna's EESM wants [..., num_ofdm_symbols, num_subcarriers, num_ut, num_streams]; one TB is one
            # "user" with one stream whose REs all lie on one axis
            sinr_eff_now = self._eesm(
                combined[..., None, :, None, None],
                mcs_index=mcs_index[..., None],
                mcs_table_index=self.mcs_table_index,
                per_stream=False,
            )[..., 0]
        else:
            sinr_eff_now = combined

        num_decoded_bits, harq_feedback, sinr_eff_now, tbler, bler = self.phy_abstraction(
            mcs_index,
            sinr_eff=sinr_eff_now,
            num_allocated_re=num_allocated_re,
            mcs_table_index=self.mcs_table_index,
            mcs_category=PUSCH_CATEGORY,
            check_mcs_index_validity=False,  # checked above, with the scenario key in the message
        )
        tb_size = self._tb_sizing.last_tb_size
        return {
            "tb_ok": harq_feedback == 1,
            "harq_feedback": harq_feedback,
            "bler": tbler,
            "cb_bler": bler,
            "sinr_eff_db": lin_to_db(sinr_eff_now, precision=self.precision),
            "tb_size": torch.where(scheduled, tb_size, 0),
            "num_decoded_bits": num_decoded_bits,
            "harq_sinr": combined,
        }
