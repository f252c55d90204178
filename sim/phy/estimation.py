"""Channel estimation and equalisation for SISO OFDM links."""

from __future__ import annotations

import torch
from sionna.phy import Block
from sionna.phy.ofdm import ResourceGrid


class PilotLSEstimator(Block):
    r"""LS channel estimates at pilot OFDM symbols, linearly interpolated in time.

    Gives the same estimates and error variances as Sionna's
    ``LSChannelEstimator(resource_grid, interpolation_type="lin")`` for a
    single-stream grid whose pilot OFDM symbols carry a pilot on every
    subcarrier (Sionna's ``"kronecker"`` pattern with one stream). Written
    here because for that pattern the interpolation is one fixed
    ``[num_ofdm_symbols, num_pilot_symbols]`` matrix, which runs several
    times faster than Sionna's general gather-based interpolator (see
    ``tokensim bench``); ``tests/sim/test_phy.py`` checks both agree.

    :param resource_grid: single-stream grid with full pilot OFDM symbols

    :input y: [batch_size, 1, 1, num_ofdm_symbols, fft_size], complex.
        Received resource grid.
    :input no: [batch_size], float. Noise variance per complex symbol.

    :output h_hat: [batch_size, num_ofdm_symbols, fft_size], complex.
    :output err_var: [batch_size, num_ofdm_symbols, fft_size], float.

    >>> rg = ResourceGrid(14, 24, 30e3, pilot_pattern="kronecker", pilot_ofdm_symbol_indices=[2, 11])
    >>> h_hat, err_var = PilotLSEstimator(rg)(y, no)
    """

    def __init__(self, resource_grid: ResourceGrid, precision=None, device=None):
        super().__init__(precision=precision, device=device)
        mask = resource_grid.pilot_pattern.mask  # [num_tx, num_streams, num_ofdm_symbols, num_subcarriers]
        pilot_rows = mask[0, 0].all(dim=-1)
        full_rows_only = (mask[0, 0].any(dim=-1) == pilot_rows).all()
        if (
            mask.shape[:2] != (1, 1)
            or not full_rows_only
            or not pilot_rows.any()
            or any(resource_grid.num_guard_carriers)
            or resource_grid.dc_null
        ):
            raise ValueError(
                "PilotLSEstimator needs one stream, no guard or DC carriers, and "
                "pilot OFDM symbols that carry a pilot on every subcarrier"
            )
        pilot_symbols = torch.nonzero(pilot_rows).squeeze(-1).tolist()
        pilots = resource_grid.pilot_pattern.pilots[0, 0].reshape(len(pilot_symbols), -1)
        self.register_buffer("_pilot_symbols", torch.tensor(pilot_symbols, device=self.device))
        self.register_buffer("_pilots_inv", (pilots.conj() / pilots.abs().square()).to(self.cdtype).to(self.device))
        self.register_buffer("_pilot_energy_inv", (1 / pilots.abs().square()).to(self.dtype).to(self.device))
        self.register_buffer(
            "_interp",
            _linear_interpolation_matrix(resource_grid.num_ofdm_symbols, pilot_symbols).to(self.dtype).to(self.device),
        )

    def call(self, y: torch.Tensor, no: torch.Tensor):
        y_pilots = y[:, 0, 0].index_select(-2, self._pilot_symbols)  # [batch, num_pilot_symbols, fft]
        h_pilots = y_pilots * self._pilots_inv
        err_pilots = no[:, None, None] * self._pilot_energy_inv
        h_hat = torch.einsum("sp,bpf->bsf", self._interp.to(h_pilots.dtype), h_pilots)
        err_var = torch.einsum("sp,bpf->bsf", self._interp, err_pilots).clamp_min(0)
        return h_hat, err_var


def _linear_interpolation_matrix(num_symbols: int, pilot_symbols: list[int]) -> torch.Tensor:
    """[num_symbols, num_pilots] weights of linear inter- and extrapolation between
    consecutive pilot OFDM symbols, as Sionna's ``LinearInterpolator`` does."""
    weights = torch.zeros(num_symbols, len(pilot_symbols), dtype=torch.float64)
    if len(pilot_symbols) == 1:
        weights[:, 0] = 1
        return weights
    for t in range(num_symbols):
        # segment [p0, p1] that Sionna uses for symbol t (the last one extrapolates)
        k = max(0, min(len(pilot_symbols) - 2, sum(p < t for p in pilot_symbols) - 1))
        p0, p1 = pilot_symbols[k], pilot_symbols[k + 1]
        frac = (t - p0) / (p1 - p0)
        weights[t, k], weights[t, k + 1] = 1 - frac, frac
    return weights


def mmse_equalize(y: torch.Tensor, h_hat: torch.Tensor, no: torch.Tensor, err_var: torch.Tensor | float = 0.0):
    r"""One-tap MMSE estimate of unit-power symbols, :math:`\hat x = \hat h^* y / (|\hat h|^2 + N_0 + \sigma^2_e)`.

    The biased (MMSE) form, not the unbiased one Sionna's ``LMMSEEqualizer``
    returns: dividing by :math:`|\hat h|^2` makes analog tokens explode in deep
    fades, while this estimate shrinks towards zero there. It equals Sionna's
    unbiased output ``x`` scaled by ``1 / (1 + no_eff)``.

    :input y: [...], complex. Received symbols.
    :input h_hat: [...], complex. Channel estimates.
    :input no: broadcastable to [...], float. Noise variance.
    :input err_var: broadcastable to [...], float. Channel estimation error variance.
    :output x_hat: [...], complex.
    """
    gain = h_hat.real.square() + h_hat.imag.square()  # |h|^2 without a square root
    return h_hat.conj() * y / (gain + no + err_var)


def abstraction_sinr(h_hat: torch.Tensor, err_var: torch.Tensor, no: torch.Tensor) -> torch.Tensor:
    r"""Per-RE SINR the PHY abstraction judges a link by: that of the MMSE channel estimate.

    For a unit-power channel the MMSE estimate is :math:`c \hat h` with :math:`c = 1 / (1 + \sigma^2_e)`,
    and its error variance is :math:`c \sigma^2_e`, so the SINR is
    :math:`c^2 |\hat h|^2 / (c \sigma^2_e + N_0)`. It equals the receiver's own
    :math:`|\hat h|^2 / (N_0 + \sigma^2_e)` with perfect CSI and at high SNR; at low SNR an LS estimate's
    :math:`|\hat h|^2` is mostly noise, and the receiver's SINR would have the abstraction deliver more
    than the channel's capacity.

    :input h_hat: [...], complex. :input err_var: [...], float. :input no: broadcastable to [...], float.
    :output: [...], float, linear.
    """
    shrink = 1 / (1 + err_var)
    gain = shrink.square() * (h_hat.real.square() + h_hat.imag.square())
    return gain / (shrink * err_var + no)
