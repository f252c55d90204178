"""Digital token link: quantised tokens in 5G NR transport blocks (LDPC, QAM, OFDM, HARQ).

The blocks:

- :class:`OfdmStage` carries QAM symbols over the OFDM stage of
  :class:`~sim.phy.analog.AnalogLink` (resource grid, Sionna channel, LS or
  perfect CSI, one-tap equaliser) and gives the demapper's and the
  abstraction's SINRs.
- :class:`TransportBlockLink` sends transport blocks of one MCS over one PRB
  allocation, one TB per slot: Sionna's ``TBEncoder`` (CRC, segmentation,
  5G LDPC, rate matching, scrambling; :class:`~sim.phy.tb_encoder.TransportBlockEncoder`
  computes only the parity bits it sends), ``Mapper`` (QAM), an :class:`OfdmStage`,
  :class:`~sim.phy.qam_demapper.QamDemapper` (Sionna's APP demapper, one PAM per dimension) and a TB
  decoder of :mod:`sim.phy.ldpc`.
- :class:`TransportBlockTable`: TB sizes and usable MCSs of every grant size
  of the carrier, for the cell loop, which forms one TB per user and slot
  on the PRBs the scheduler grants, runs HARQ and erases the values of TBs
  that fail for good (:mod:`sim.cell`).
- :class:`DigitalProxy`: the noise training sees (quantisation and TB erasures).
"""

from __future__ import annotations

import torch
from sionna.phy import Block
from sionna.phy.mapping import Mapper
from sionna.phy.nr.utils import calculate_tb_size, decode_mcs_index
from sionna.phy.ofdm import ResourceGrid
from torch import nn

from sim.phy.abstraction import TransportBlockAbstraction
from sim.phy.analog import AnalogLink
from sim.phy.estimation import abstraction_sinr
from sim.phy.link_adaptation import LinkAdaptation
from sim.phy.numerology import NUM_OFDM_SYMBOLS_PER_SLOT, NUM_SUBCARRIERS_PER_PRB, pilot_symbol_indices
from sim.phy.qam_demapper import QamDemapper
from sim.phy.quantization import UniformQuantizer
from sim.phy.tb_decoders import tb_decoder
from sim.phy.tb_encoder import TransportBlockEncoder

MAX_MCS_INDEX = {1: 28, 2: 27}  # PUSCH MCS tables of TS 38.214 6.1.4.1 (index 28+ / 29+ are reserved)
MIN_CODE_RATE = 1 / 5  # Sionna's LDPC5GEncoder rejects lower rates (NR repeats the circular buffer there)


def transport_block_size(mcs_index: int, num_prbs: int, num_pilot_symbols: int, mcs_table: int = 1) -> dict:
    """TB size and coded bits of one slot on ``num_prbs`` PRBs (TS 38.214 6.1.4.2, PUSCH).

    :output: dict with ``tb_size`` (information bits), ``num_coded_bits``,
        ``num_data_res`` (data resource elements), ``bits_per_symbol``,
        ``code_rate`` (target) and ``supported`` (False where the code rate
        with CRC falls below :data:`MIN_CODE_RATE`).
    """
    bits_per_symbol, code_rate = (float(t) for t in decode_mcs_index(mcs_index, table_index=mcs_table, is_pusch=True))
    bits_per_symbol = int(bits_per_symbol)
    num_data_res = num_prbs * NUM_SUBCARRIERS_PER_PRB * (NUM_OFDM_SYMBOLS_PER_SLOT - num_pilot_symbols)
    tb_size, cb_size, num_cbs, *_ = calculate_tb_size(
        bits_per_symbol,
        code_rate,
        num_prbs=num_prbs,
        num_ofdm_symbols=NUM_OFDM_SYMBOLS_PER_SLOT,
        num_dmrs_per_prb=NUM_SUBCARRIERS_PER_PRB * num_pilot_symbols,
    )
    num_coded_bits = num_data_res * bits_per_symbol
    return {
        "tb_size": int(tb_size),
        "num_coded_bits": num_coded_bits,
        "num_data_res": num_data_res,
        "bits_per_symbol": bits_per_symbol,
        "code_rate": code_rate,
        "supported": int(cb_size) * int(num_cbs) >= MIN_CODE_RATE * num_coded_bits,
    }


def usable_mcs(num_prbs: int, num_pilot_symbols: int, mcs_table: int = 1) -> list[int]:
    """MCS indices both fidelities can use: codable on ``num_prbs`` PRBs and covered by Sionna's BLER tables."""
    from sim.phy.abstraction import calibrated_mcs, pusch_phy_abstraction

    calibrated = calibrated_mcs(pusch_phy_abstraction(mcs_table), mcs_table)
    return [m for m in supported_mcs(num_prbs, num_pilot_symbols, mcs_table) if m in calibrated]


def supported_mcs(num_prbs: int, num_pilot_symbols: int, mcs_table: int = 1) -> list[int]:
    """MCS indices whose TBs on ``num_prbs`` PRBs Sionna's 5G LDPC encoder can code."""
    return [
        m
        for m in range(MAX_MCS_INDEX[mcs_table] + 1)
        if transport_block_size(m, num_prbs, num_pilot_symbols, mcs_table)["supported"]
    ]


class OfdmStage(nn.Module):
    r"""QAM symbols of consecutive slots through the OFDM stage of :class:`~sim.phy.analog.AnalogLink`.

    QAM symbols are complex values on the data resource elements, as analog
    tokens are, so the digital link reuses the analog link's grid, channel,
    estimator and equaliser, and turns its MMSE estimates into the unbiased
    ones a demapper expects. Links are folded in the batch as the uplink folds
    users (element ``b * num_users + u``), which per-user channel models rely on.

    :input symbols: [batch_size, num_slots, num_data_res], complex.
    :input snr_db: [batch_size], float.
    :output: dict with ``"x"`` (unbiased estimates, same shape as ``symbols``),
        ``"sinr"`` ([batch_size, num_slots, num_data_res], float): the
        receiver's post-equalisation SINR :math:`|\hat h|^2 / (N_0 + \sigma^2_e)`,
        which the demapper uses, and ``"sinr_abstraction"`` (same shape), which
        the PHY abstraction uses: the same for the MMSE channel estimate
        :math:`c \hat h`, :math:`c = 1 / (1 + \sigma^2_e)` for unit-power
        channels, with error variance :math:`c \sigma^2_e`. The two agree with
        perfect CSI and at high SNR; at low SNR an LS estimate's
        :math:`|\hat h|^2` is mostly noise, which would make the abstraction
        deliver more than the channel's capacity.
    """

    def __init__(self, num_prbs, subcarrier_spacing_hz, pilot_ofdm_symbol_indices, channel_model, csi, device=None):
        super().__init__()
        self.num_prbs = num_prbs
        self.subcarrier_spacing_hz = subcarrier_spacing_hz
        self.pilot_ofdm_symbol_indices = list(pilot_ofdm_symbol_indices)
        self.channel_model, self.csi, self.device = channel_model, csi, device
        self._links: dict[int, AnalogLink] = {}

    def link(self, num_slots: int) -> AnalogLink:
        """The analog link of ``num_slots`` consecutive slots (built once per count)."""
        if num_slots not in self._links:
            grid = ResourceGrid(
                num_ofdm_symbols=NUM_OFDM_SYMBOLS_PER_SLOT * num_slots,
                fft_size=NUM_SUBCARRIERS_PER_PRB * self.num_prbs,
                subcarrier_spacing=self.subcarrier_spacing_hz,
                pilot_pattern="kronecker",
                pilot_ofdm_symbol_indices=pilot_symbol_indices(num_slots, self.pilot_ofdm_symbol_indices),
                device=self.device,
            )
            self._links[num_slots] = AnalogLink(grid, self.channel_model, csi=self.csi, device=self.device)
        return self._links[num_slots]

    def forward(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, num_slots, num_res = symbols.shape
        out = self.link(num_slots)(torch.view_as_real(symbols.reshape(batch, -1)).reshape(batch, -1), snr_db)
        sinr = out["sinr"].reshape(batch, num_slots, num_res)
        # Unbiased (zero-forcing) estimate: the MMSE estimate times (1 + 1/SINR); its noise variance is 1/SINR.
        x = out["symbols"].reshape(batch, num_slots, num_res) * (1 + 1 / sinr.clamp_min(1e-12))
        sinr_mmse = abstraction_sinr(out["h_hat"], out["err_var"], torch.pow(10.0, -snr_db / 10)[:, None])
        return {"x": x, "sinr": sinr, "sinr_abstraction": sinr_mmse.reshape(batch, num_slots, num_res)}


class TransportBlockLink(Block):
    r"""Transport blocks of one MCS on ``num_prbs`` PRBs, one TB per slot, folded links in the batch.

    :param mcs_index: PUSCH MCS index of table ``mcs_table`` (TS 38.214 6.1.4.1)
    :param num_prbs: PRBs granted in every slot
    :param subcarrier_spacing_hz: NR subcarrier spacing
    :param pilot_ofdm_symbol_indices: full pilot OFDM symbols of each slot
    :param channel_model: Sionna channel model or ``None`` (AWGN)
    :param csi: ``"perfect"`` or ``"ls"``
    :param decoder: TB decoder algorithm of :mod:`sim.phy.ldpc`
    :param num_bp_iter: belief-propagation iterations at most
    :param stage: an :class:`OfdmStage` to share (built from the grid arguments if ``None``)

    :input bits: [batch_size, num_slots, tb_size], float 0/1. TB ``s`` of a
        link goes in its slot ``s``; the channel of a link evolves over its slots.
    :input snr_db: [batch_size], float. Es/N0 of each link.
    :output: dict with ``"llr"`` [batch_size, num_slots, num_coded_bits],
        float (Sionna's sign: log p(1)/p(0)), and ``"sinr"``
        [batch_size, num_slots, num_data_res], float, post-equalisation SINR.

    >>> link = TransportBlockLink(16, num_prbs=2, subcarrier_spacing_hz=30e3,
    ...                           pilot_ofdm_symbol_indices=[2, 11], channel_model=None, csi="perfect")
    >>> out = link(bits, snr_db)
    >>> bits_hat, crc_ok = link.decode(out["llr"])
    """

    def __init__(
        self,
        mcs_index: int,
        num_prbs: int,
        subcarrier_spacing_hz: float,
        pilot_ofdm_symbol_indices: list[int],
        channel_model=None,
        csi: str = "ls",
        mcs_table: int = 1,
        decoder: str | None = None,
        num_bp_iter: int | None = None,
        stage: OfdmStage | None = None,
        precision=None,
        device=None,
    ):
        super().__init__(precision=precision, device=device)
        self.mcs_index = mcs_index
        tb = transport_block_size(mcs_index, num_prbs, len(pilot_ofdm_symbol_indices), mcs_table)
        if not tb["supported"]:
            raise ValueError(
                f"MCS {mcs_index} on {num_prbs} PRBs codes below rate {MIN_CODE_RATE:g}, which Sionna's 5G LDPC "
                "encoder does not support"
            )
        self.tb_size, self.num_coded_bits = tb["tb_size"], tb["num_coded_bits"]
        self.num_data_res, self.bits_per_symbol = tb["num_data_res"], tb["bits_per_symbol"]
        self.code_rate = tb["code_rate"]  # target
        self.encoder = TransportBlockEncoder(
            target_tb_size=self.tb_size,
            num_coded_bits=self.num_coded_bits,
            target_coderate=self.code_rate,
            num_bits_per_symbol=self.bits_per_symbol,
            precision=precision,
            device=device,
        )
        self.decoder = tb_decoder(self.encoder, **_given(algorithm=decoder, num_iter=num_bp_iter))
        self.mapper = Mapper("qam", self.bits_per_symbol, precision=precision, device=device)
        self.demapper = QamDemapper(self.bits_per_symbol, precision=precision, device=device)
        self.stage = stage or OfdmStage(
            num_prbs, subcarrier_spacing_hz, pilot_ofdm_symbol_indices, channel_model, csi, device=self.device
        )

    def call(self, bits: torch.Tensor, snr_db: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.modem(self.encoder(bits), snr_db)

    def modem(self, coded_bits: torch.Tensor, snr_db: torch.Tensor) -> dict[str, torch.Tensor]:
        """Coded bits [batch_size, num_slots, num_coded_bits] -> QAM -> OFDM channel -> LLRs (same shape)."""
        out = self.stage(self.mapper(coded_bits), snr_db)
        return {"llr": self.demap(out["x"], out["sinr"]), "sinr": out["sinr"]}

    def demap(self, x: torch.Tensor, sinr: torch.Tensor) -> torch.Tensor:
        """Unbiased symbol estimates [..., num_data_res] and their SINR -> LLRs [..., num_coded_bits]."""
        return self.demapper(x, 1 / sinr.clamp_min(1e-12))

    def decode(self, llr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., num_coded_bits] LLRs -> (bits [..., tb_size] float, crc_ok [...] bool)."""
        return self.decoder(llr)


def _given(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


class TransportBlockTable:
    """Every (MCS, PRBs) pair of one carrier: TB size, coded bits, and whether both fidelities can use it.

    TS 38.214 6.1.4.2 through Sionna's ``calculate_tb_size`` (PUSCH, one layer, a 14-symbol slot with the
    scenario's pilot symbols), for ``b = 0 .. num_prbs`` PRBs at once. ``usable`` is True where Sionna's 5G
    LDPC encoder can code the TB (rate >= :data:`MIN_CODE_RATE`) and Sionna's BLER tables cover the MCS.

    :param num_prbs: PRBs of the carrier
    :param num_pilot_symbols: pilot OFDM symbols per slot
    :param mcs_table: TS 38.214 PUSCH MCS table

    ``tb_size``, ``coded_bits``: [num_mcs, num_prbs + 1] int64; ``usable``: same shape, bool;
    ``bits_per_symbol``: [num_mcs] int64; ``data_res_per_prb``: int.

    >>> table = TransportBlockTable(24, 2)
    >>> table.tb_size[20, 2], table.usable[3, 1]
    """

    def __init__(self, num_prbs: int, num_pilot_symbols: int, mcs_table: int = 1):
        from sim.phy.abstraction import calibrated_mcs, pusch_phy_abstraction

        num_mcs = MAX_MCS_INDEX[mcs_table] + 1
        mcs = torch.arange(num_mcs)[:, None].expand(num_mcs, num_prbs + 1)
        prbs = torch.arange(num_prbs + 1)[None, :].expand(num_mcs, num_prbs + 1)
        bits_per_symbol, code_rate = decode_mcs_index(
            mcs, table_index=mcs_table, is_pusch=True, transform_precoding=False
        )
        tb_size, cb_size, num_cbs, *_ = calculate_tb_size(
            bits_per_symbol,
            code_rate,
            num_prbs=prbs.clamp_min(1),
            num_ofdm_symbols=NUM_OFDM_SYMBOLS_PER_SLOT,
            num_dmrs_per_prb=NUM_SUBCARRIERS_PER_PRB * num_pilot_symbols,
            return_cw_length=False,
        )
        self.data_res_per_prb = NUM_SUBCARRIERS_PER_PRB * (NUM_OFDM_SYMBOLS_PER_SLOT - num_pilot_symbols)
        self.bits_per_symbol = bits_per_symbol[:, 0].long()
        self.coded_bits = (prbs * self.data_res_per_prb * bits_per_symbol).long()
        self.tb_size = torch.where(prbs > 0, tb_size.long(), 0)
        codable = (cb_size.long() * num_cbs.long() >= MIN_CODE_RATE * self.coded_bits) & (prbs > 0)
        calibrated = torch.zeros(num_mcs, dtype=torch.bool)
        calibrated[calibrated_mcs(pusch_phy_abstraction(mcs_table), mcs_table)] = True
        self.usable = codable & calibrated[:, None]
        self.mcs_table = mcs_table


class DigitalProxy(nn.Module):
    r"""The noise of the digital link as training sees it: quantisation, and TB erasures at the link's residual BLER.

    Values are quantised with gradients passed straight through
    (:class:`~sim.phy.quantization.UniformQuantizer`); each user's payload is
    split into TBs of the MCS link adaptation would pick at ``snr_db`` on
    ``num_prbs`` PRBs (without the outer loop; or the fixed ``mcs``), and each
    TB is lost with the BLER Sionna's PHY abstraction gives an AWGN link at
    that SNR after ``max_retx`` Chase-combined retransmissions (the last
    attempt sees ``(1 + max_retx)`` times the SINR). A lost TB erases its
    values to 0. Differentiable in the values; no bit is decoded. Evaluation
    runs the real link in the cell loop (:mod:`sim.cell`).

    :param num_prbs: PRBs a user's TBs are sized for (the reference share)
    :param num_pilot_symbols: pilot OFDM symbols per slot
    :param bits_per_value: ``link.bits_per_value``
    :param mcs: fixed MCS index or ``"auto"``
    :param bler_target: first-attempt BLER link adaptation aims at
    :param mcs_table: TS 38.214 PUSCH MCS table
    :param max_retx: ``link.harq.max_retx``

    :input values: [batch_size, num_users, num_values], float.
    :input snr_db: [batch_size, num_users], float.
    :input generator: torch generator of the erasure draws.
    :output: [batch_size, num_users, num_values], float.
    """

    def __init__(self, num_prbs, num_pilot_symbols, bits_per_value, mcs, bler_target=0.1, mcs_table=1, max_retx=0,
                 device=None):  # fmt: skip
        super().__init__()
        self.quantizer = UniformQuantizer(bits_per_value)
        self.mcs, self.max_retx = mcs, max_retx
        table = TransportBlockTable(num_prbs, num_pilot_symbols, mcs_table)
        self._tb_sizes = table.tb_size[:, num_prbs]  # indexed by MCS
        self._num_data_res = table.data_res_per_prb * num_prbs
        usable = torch.nonzero(table.usable[:, num_prbs]).squeeze(-1)
        self._mcs_range = (int(usable.min()), int(usable.max()))
        self.abstraction = TransportBlockAbstraction(mcs_table_index=mcs_table, device=device)
        if mcs == "auto":
            self._inner_loop = LinkAdaptation(1, bler_target, mcs_table, olla=False, device=device)

    def forward(self, values: torch.Tensor, snr_db: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if isinstance(self.mcs, int):
            mcs = torch.full(snr_db.shape, self.mcs, dtype=torch.long, device=snr_db.device)
        else:
            mcs = self._inner_loop(snr_db, self._num_data_res).long().clamp(*self._mcs_range)
        tb_size = self._tb_sizes.to(snr_db.device)[mcs]  # [batch, users]
        sinr = torch.pow(10.0, snr_db / 10) * (1 + self.max_retx)
        residual = self.abstraction(mcs, sinr_eff=sinr, num_allocated_re=self._num_data_res)["bler"]
        num_values = values.shape[-1]
        first_bit = torch.arange(num_values, device=values.device) * self.quantizer.bits_per_value
        first_tb = torch.div(first_bit, tb_size[..., None], rounding_mode="floor")
        last_tb = torch.div(first_bit + self.quantizer.bits_per_value - 1, tb_size[..., None], rounding_mode="floor")
        max_tbs = int(last_tb.max()) + 1
        draws = torch.rand(*snr_db.shape, max_tbs, generator=generator).to(values.device)
        lost = draws < residual[..., None]
        erased = lost.gather(-1, first_tb) | lost.gather(-1, last_tb)
        return self.quantizer(values) * ~erased
