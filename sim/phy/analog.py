"""Analog token link: real token values ride as complex symbols on OFDM resource elements."""

from __future__ import annotations

import torch
from sionna.phy import Block
from sionna.phy.channel import AWGN, OFDMChannel
from sionna.phy.ofdm import ResourceGrid, ResourceGridMapper

from sim.phy.estimation import PilotLSEstimator, abstraction_sinr, mmse_equalize
from sim.phy.numerology import NUM_OFDM_SYMBOLS_PER_SLOT, NUM_SUBCARRIERS_PER_PRB


class AnalogLink(Block):
    r"""A batch of SISO uplinks carrying real token values, differentiable end to end.

    Pairs of real values become complex symbols :math:`v_{2k} + j v_{2k+1}`
    that fill the grid's data resource elements in order (Sionna's
    ``ResourceGridMapper``; unused ones stay zero). Sionna's ``OFDMChannel``
    applies the fading model's frequency response and AWGN at each link's SNR
    (or Sionna's ``AWGN`` alone when there is no fading model). The base
    station estimates the channel (perfect, or LS at the pilots with linear
    interpolation) and takes the one-tap MMSE estimate of every symbol.

    Each batch element is its own link with its own channel realisation:
    fold users into the batch (``[batch * num_users, ...]``).

    :param resource_grid: single-stream grid (Kronecker pilots for ``csi="ls"``)
    :param channel_model: Sionna channel model, or ``None`` for AWGN
    :param csi: ``"perfect"`` or ``"ls"``

    :input tokens: [batch_size, num_values], float. Transmitted values; mean
        power 1/2 per value gives unit symbol energy, so ``snr_db`` is Es/N0.
        ``num_values`` is even and at most ``2 * resource_grid.num_data_symbols``.
    :input snr_db: [batch_size], float. Es/N0 of each link.

    :output: dict with
        ``"tokens"``: [batch_size, num_values], float, the MMSE estimates;
        ``"symbols"``: [batch_size, num_values / 2], complex, the same as symbols;
        ``"h"``: [batch_size, num_values / 2], complex, the true channel at those symbols;
        ``"h_hat"``: [batch_size, num_values / 2], complex, its estimate, and
        ``"err_var"`` (float, same shape) the estimate's error variance;
        ``"sinr"``: [batch_size, num_values / 2], float, post-equalisation SINR of each
        symbol, :math:`|\hat h|^2 / (N_0 + \sigma^2_e)` (the digital link demaps with it).

    >>> link = AnalogLink(rg, channel_model(...), csi="ls")
    >>> rx = link(tx_tokens, snr_db)["tokens"]
    """

    def __init__(self, resource_grid: ResourceGrid, channel_model=None, csi: str = "ls", precision=None, device=None):
        super().__init__(precision=precision, device=device)
        if csi not in ("perfect", "ls"):
            raise ValueError(f"csi must be 'perfect' or 'ls', not {csi!r}")
        self.resource_grid = resource_grid
        self.csi = csi
        self._mapper = ResourceGridMapper(resource_grid, precision=precision, device=device)
        self._channel = (
            OFDMChannel(channel_model, resource_grid, return_channel=True, precision=precision, device=device)
            if channel_model is not None
            else None
        )
        self._awgn = AWGN(precision=precision, device=device)
        self._estimator = PilotLSEstimator(resource_grid, precision=precision, device=device) if csi == "ls" else None
        data = torch.nonzero(resource_grid.build_type_grid()[0, 0].flatten() == 0).squeeze(-1)
        self.register_buffer("_data_indices", data.to(self.device), persistent=False)

    @property
    def num_data_symbols(self) -> int:
        return int(self._data_indices.numel())

    def call(self, tokens: torch.Tensor, snr_db: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, num_values = tokens.shape
        num_symbols = num_values // 2
        if num_values % 2 or num_symbols > self.num_data_symbols:
            raise ValueError(
                f"{num_values} values do not fit as symbols on {self.num_data_symbols} data resource elements"
            )
        x = torch.view_as_complex(tokens.reshape(batch, num_symbols, 2).contiguous())
        x = torch.nn.functional.pad(x, (0, self.num_data_symbols - num_symbols))
        grid = self._mapper(x[:, None, None, :])  # [batch, 1, 1, num_ofdm_symbols, fft_size]
        no = torch.pow(10.0, -snr_db / 10)

        used = self._data_indices[:num_symbols]  # only the resource elements carrying tokens are equalised
        if self._channel is not None:
            y, h = self._channel(grid, no)
            h = h[:, 0, 0, 0, 0].flatten(1).index_select(1, used)  # [batch, num_symbols]
        else:
            y = self._awgn(grid, no)
            h = torch.ones(batch, num_symbols, dtype=y.dtype, device=y.device)
        out = receive(y, h, no, used, self._estimator)
        out["tokens"] = torch.view_as_real(out["symbols"]).reshape(batch, num_values)
        return out


def receive(y: torch.Tensor, h: torch.Tensor, no: torch.Tensor, used: torch.Tensor, estimator=None) -> dict:
    r"""The base station's side of an OFDM link: channel estimate, one-tap MMSE, SINR, on the REs ``used``.

    :param y: [batch, 1, 1, num_ofdm_symbols, fft_size], complex. Received grid.
    :param h: [batch, num_used], complex. True channel on the used REs (perfect CSI, and reported).
    :param no: [batch], float. Noise variance per RE.
    :param used: [num_used], int64. Flat indices of the data REs that carry symbols.
    :param estimator: a :class:`~sim.phy.estimation.PilotLSEstimator`, or ``None`` for perfect CSI.
    :output: dict of [batch, num_used] tensors: ``"symbols"`` (complex MMSE estimates), ``"h"``, ``"h_hat"``,
        ``"err_var"`` and ``"sinr"`` (:math:`|\hat h|^2 / (N_0 + \sigma^2_e)`), as :class:`AnalogLink`'s.
    """
    if estimator is None:
        h_hat, err_var = h, 0.0
    else:
        h_hat, err_var = estimator(y, no)
        h_hat, err_var = (t.flatten(1).index_select(1, used) for t in (h_hat, err_var))
    y = y[:, 0, 0].flatten(1).index_select(1, used)
    x_hat = mmse_equalize(y, h_hat, no[:, None], err_var)
    sinr = (h_hat.real.square() + h_hat.imag.square()) / (no[:, None] + err_var)
    return {
        "symbols": x_hat,
        "h": h,
        "h_hat": h_hat,
        "err_var": torch.as_tensor(err_var, dtype=sinr.dtype, device=sinr.device).expand_as(sinr),
        "sinr": sinr,
    }


class GrantedPrbLink(Block):
    r"""One slot's symbols on the PRBs the scheduler granted, each PRB a 14-symbol, 12-subcarrier grid.

    Every row is one granted PRB of one user: Sionna's ``ResourceGridMapper``
    puts its data symbols around the slot's pilot OFDM symbols (Kronecker
    pattern), Sionna's ``ApplyOFDMChannel`` applies the channel the cell loop
    drew for that user on that PRB (held over the slot) and noise at the
    user's SNR per RE, and the base station estimates (LS at the PRB's own
    pilots, interpolated in time, or perfect) and equalises (one-tap MMSE), as
    :class:`AnalogLink` does. A PRB's LS estimate uses only its own pilots,
    so PRBs are independent and a user's grant needs no grid of its own.

    :param subcarrier_spacing_hz: NR subcarrier spacing
    :param pilot_ofdm_symbol_indices: the slot's pilot OFDM symbols
    :param csi: ``"perfect"`` or ``"ls"``

    :input symbols: [num_rows, num_data_res], complex. Unit-energy symbols, ``num_data_res = 12 * (14 - pilots)``.
    :input h: [num_rows, 12], complex. Channel on the PRB's subcarriers.
    :input no: [num_rows], float. Noise variance per RE (1 / SNR per RE).
    :output: dict of [num_rows, num_data_res] tensors: ``"symbols"`` (complex MMSE estimates), ``"x"``
        (unbiased estimates, for a demapper), ``"sinr"`` (:math:`|\hat h|^2 / (N_0 + \sigma^2_e)`, the
        demapper's), ``"sinr_abstraction"`` (the SINR of the MMSE-corrected estimate, the PHY abstraction's;
        see :class:`~sim.phy.digital.OfdmStage`).

    >>> link = GrantedPrbLink(30e3, [2, 11], csi="ls")
    >>> out = link(symbols, h, no)
    """

    def __init__(self, subcarrier_spacing_hz: float, pilot_ofdm_symbol_indices, csi: str = "ls", device=None):
        super().__init__(device=device)
        from sionna.phy.channel import ApplyOFDMChannel

        if csi not in ("perfect", "ls"):
            raise ValueError(f"csi must be 'perfect' or 'ls', not {csi!r}")
        grid = ResourceGrid(
            num_ofdm_symbols=NUM_OFDM_SYMBOLS_PER_SLOT,
            fft_size=NUM_SUBCARRIERS_PER_PRB,
            subcarrier_spacing=subcarrier_spacing_hz,
            pilot_pattern="kronecker",
            pilot_ofdm_symbol_indices=list(pilot_ofdm_symbol_indices),
            device=self.device,
        )
        self.resource_grid = grid
        self._mapper = ResourceGridMapper(grid, device=self.device)
        self._apply_channel = ApplyOFDMChannel(device=self.device)
        self._estimator = PilotLSEstimator(grid, device=self.device) if csi == "ls" else None
        data = torch.nonzero(grid.build_type_grid()[0, 0].flatten() == 0).squeeze(-1)
        self.register_buffer("_data_indices", data.to(self.device), persistent=False)
        # the data REs' subcarrier: h is flat over the slot, so a data RE sees the channel of its subcarrier
        self.register_buffer("_data_subcarrier", data.to(self.device) % NUM_SUBCARRIERS_PER_PRB, persistent=False)

    @property
    def num_data_res(self) -> int:
        return int(self._data_indices.numel())

    def call(self, symbols: torch.Tensor, h: torch.Tensor, no: torch.Tensor) -> dict[str, torch.Tensor]:
        grid = self._mapper(symbols[:, None, None, :].to(self.cdtype))  # [rows, 1, 1, 14, 12]
        h_grid = h.to(self.cdtype)[:, None, None, None, None, None, :].expand(-1, 1, 1, 1, 1, grid.shape[-2], -1)
        y = self._apply_channel(grid, h_grid, no.to(self.dtype))
        out = receive(y, h.to(self.cdtype).index_select(1, self._data_subcarrier), no.to(self.dtype),
                      self._data_indices, self._estimator)  # fmt: skip
        sinr = out["sinr"]
        # Unbiased (zero-forcing) estimate: the MMSE estimate times (1 + 1/SINR); its noise variance is 1/SINR.
        out["x"] = out["symbols"] * (1 + 1 / sinr.clamp_min(1e-12))
        out["sinr_abstraction"] = abstraction_sinr(out["h_hat"], out["err_var"], no.to(self.dtype)[:, None])
        return out
