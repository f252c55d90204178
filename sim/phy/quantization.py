"""Scalar quantisation of token values into bits for the digital link."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

TOKEN_VALUE_STD = math.sqrt(0.5)  # token transmitters normalise to mean power 1/2 per real value


@lru_cache(maxsize=None)
def gaussian_uniform_step(bits_per_value: int) -> float:
    """Step of the ``2**bits``-level uniform quantiser with least MSE for a unit Gaussian.

    Max (1960) tabulates these steps; they are computed here instead from the
    MSE, so any bit width works. The MSE of a cell ``[a, b)`` reconstructed at
    ``c`` has a closed form in the Gaussian's density and distribution
    (``int (x - c)^2 phi = (1 + c^2) dPhi - [x phi] + 2 c [phi]``), summed over
    all cells at once.
    """
    from scipy import optimize, stats

    levels = 2**bits_per_value
    index = np.arange(levels) - levels / 2

    def mse(step: float) -> float:
        low = np.concatenate([[-np.inf], (index[1:]) * step])
        high = np.concatenate([(index[1:]) * step, [np.inf]])
        centre = (index + 0.5) * step

        def x_pdf(x):  # x phi(x), 0 at the infinite ends
            return np.where(np.isfinite(x), np.nan_to_num(x) * stats.norm.pdf(x), 0.0)

        mass = stats.norm.cdf(high) - stats.norm.cdf(low)
        density = stats.norm.pdf(high) - stats.norm.pdf(low)
        return float(((1 + centre**2) * mass - (x_pdf(high) - x_pdf(low)) + 2 * centre * density).sum())

    # The optimum clips the Gaussian at 0.8 sigma (1 bit) to 5.9 sigma (16 bits), so its step lies between
    # 1.6 / levels and 12 / levels; the search spans 1 / levels to 16 / levels. The search runs on log(step): the step
    # spans four decades over the widths, and a tolerance on the log is a relative one at every width.
    found = optimize.minimize_scalar(
        lambda log_step: mse(math.exp(log_step)),
        bounds=(math.log(1.0 / levels), math.log(16.0 / levels)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(found.x))


class UniformQuantizer(nn.Module):
    r"""Mid-rise uniform quantiser of token values, MSE-optimal for Gaussian values.

    Values of standard deviation ``std`` are clipped to
    :math:`\pm 2^{b-1}\Delta` and mapped to ``2**bits_per_value`` levels;
    each level index is sent as ``bits_per_value`` bits, most significant
    first. In training, :meth:`forward` passes gradients straight through
    the rounding (the straight-through estimator).

    :param bits_per_value: bits per real token value, 1..16
    :param std: standard deviation the step is scaled to

    :input values: [..., num_values], float.
    :output: [..., num_values], float, the reconstruction (``forward``).

    >>> q = UniformQuantizer(8)
    >>> bits = q.to_bits(values)          # [..., num_values * 8], float 0/1
    >>> values_hat = q.from_bits(bits)    # [..., num_values]
    """

    def __init__(self, bits_per_value: int, std: float = TOKEN_VALUE_STD):
        super().__init__()
        if not 1 <= bits_per_value <= 16:
            raise ValueError(f"bits_per_value must be 1..16, not {bits_per_value}")
        self.bits_per_value = bits_per_value
        self.levels = 2**bits_per_value
        self.step = gaussian_uniform_step(bits_per_value) * std

    def indices(self, values: torch.Tensor) -> torch.Tensor:
        """[..., num_values], int64 level indices in 0..levels-1."""
        return torch.clamp(torch.floor(values / self.step) + self.levels // 2, 0, self.levels - 1).long()

    def reconstruct(self, indices: torch.Tensor) -> torch.Tensor:
        return (indices.float() - self.levels // 2 + 0.5) * self.step

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        quantised = self.reconstruct(self.indices(values)).to(values.dtype)
        return values + (quantised - values).detach()

    def to_bits(self, values: torch.Tensor) -> torch.Tensor:
        """[..., num_values] float -> [..., num_values * bits_per_value] float 0/1, MSB first."""
        shifts = torch.arange(self.bits_per_value - 1, -1, -1, device=values.device)
        bits = (self.indices(values)[..., None] >> shifts) & 1
        return bits.flatten(-2).float()

    def from_bits(self, bits: torch.Tensor) -> torch.Tensor:
        """[..., num_values * bits_per_value] 0/1 -> [..., num_values] float reconstructions."""
        weights = 2 ** torch.arange(self.bits_per_value - 1, -1, -1, device=bits.device)
        groups = bits.reshape(*bits.shape[:-1], -1, self.bits_per_value).long()
        return self.reconstruct((groups * weights).sum(-1))
