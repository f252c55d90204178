"""Analog token link: real token values ride as complex symbols on OFDM resource elements."""

from __future__ import annotations

import torch
from sionna.phy import Block
from sionna.phy.channel import AWGN, OFDMChannel
from sionna.phy.ofdm import ResourceGrid, ResourceGridMapper

from sim.phy.estimation import PilotLSEstimator, mmse_equalize


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
        if self._estimator is None:
            h_hat, err_var = h, 0.0
        else:
            h_hat, err_var = self._estimator(y, no)
            h_hat, err_var = (t.flatten(1).index_select(1, used) for t in (h_hat, err_var))
        y = y[:, 0, 0].flatten(1).index_select(1, used)
        x_hat = mmse_equalize(y, h_hat, no[:, None], err_var)
        sinr = (h_hat.real.square() + h_hat.imag.square()) / (no[:, None] + err_var)
        return {
            "tokens": torch.view_as_real(x_hat).reshape(batch, num_values),
            "symbols": x_hat,
            "h": h,
            "h_hat": h_hat,
            "err_var": torch.as_tensor(err_var, dtype=sinr.dtype, device=sinr.device).expand_as(sinr),
            "sinr": sinr,
        }
