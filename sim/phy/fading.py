"""Fading in the cell loop: every user's channel over the whole carrier, slot after slot.

The cell loop (:mod:`sim.cell`) needs each link's channel at the slot it is
in, for the CQI of every PRB and for the resource elements its tokens ride,
over however many slots the traffic lasts. A Sionna channel model draws a new
realisation on every call, so these blocks turn the scenario's model into a
*process* in time:

- ``tdl-a`` .. ``tdl-e`` and ``rayleigh``: :class:`SumOfSinusoidsFading`.
  Sionna's TDL is a sum-of-sinusoids model (Xiao, Zheng, Beaulieu 2006): a
  link's Doppler frequency, arrival angles and phases are drawn once and the
  taps are deterministic functions of time after that. The block draws them
  exactly as Sionna's ``TDL`` does and evaluates the taps at any absolute
  time, so a link's channel evolves continuously for as long as the
  simulation runs, correlated in time by ``channel.speed_mps`` (the diffuse
  part of a tap with the Jakes correlation J0(2 pi f_D tau); TDL-D and TDL-E
  add a specular component to their first tap). With the same draws it equals Sionna's
  ``TDL`` output (``tests/sim/test_cell.py``). ``rayleigh`` is one tap of unit
  power with the same Doppler process (Sionna's ``RayleighBlockFading``, which
  training uses, has the same marginal but no time evolution).
- ``umi``, ``uma``, ``rma``: :class:`RedrawnBlockFading`. Sionna's TR 38.901
  system-level models cannot be evaluated at a later time without redrawing,
  so, as in Sionna SYS's end-to-end tutorial, the channel is regenerated every
  ``block_slots`` slots (by default the coherence time 0.423 / f_D); inside a
  block Sionna's own Doppler evolution runs from slot to slot.
- ``awgn``: one tap of gain 1.

The channel is sampled once per slot (at the slot's start) and held over its
14 OFDM symbols: at 1 m/s and 3.5 GHz its phase turns by 0.04 rad in a
0.5 ms slot. Every block returns channel impulse responses; Sionna's
``cir_to_ofdm_channel`` turns them into frequency responses
(:func:`frequency_response`).
"""

from __future__ import annotations

import math

import torch

SPEED_OF_LIGHT_MPS = 299_792_458.0
MAX_BLOCK_SLOTS = 1024  # a TR 38.901 block holds at most this many slots of channel coefficients
CLARKE_COHERENCE = 0.423  # coherence time times the maximum Doppler frequency (Rappaport, 50 % correlation)


class SumOfSinusoidsFading:
    r"""Sionna's TDL model (or flat Rayleigh) for ``num_links`` links as a process in absolute time.

    Each tap is :math:`\sqrt{P_c / N} \sum_{n=1}^{N} e^{j(\omega_d t \cos\alpha_{c,n} + \phi_{c,n})}` with
    :math:`\alpha_{c,n} = 2 \pi n / N + \theta_{c,n}`; a LoS model adds the specular component
    :math:`\sqrt{P_{LoS}} e^{j(\omega_d t \cos\alpha_{LoS} + \phi_0)}` to the first tap. The random
    :math:`\omega_d, \theta, \phi, \phi_0` are drawn once per link, from Sionna's generator, in the order and
    with the distributions of Sionna's ``TDL.__call__``.

    :param tdl: a Sionna :class:`~sionna.phy.channel.tr38901.TDL` (the tap powers, delays, LoS and Doppler
        come from it), or ``None`` for one Rayleigh tap with ``doppler_hz``
    :param num_links: links to draw
    :param doppler_hz: maximum Doppler frequency of the Rayleigh tap (``tdl=None`` only)
    :param num_sinusoids: sinusoids per tap of the Rayleigh tap (a TDL brings its own)
    :param device: torch device
    :param generator: torch generator of the draws (``None``: Sionna's, seeded by ``sionna.phy.config.seed``)

    :input time_s: [n], float. Time of each link's sample, seconds.
    :input links: [n], int64. Which links.
    :output a: [n, num_paths], complex64. Path coefficients.
    :output tau: [n, num_paths], float32. Path delays, seconds.

    >>> fading = SumOfSinusoidsFading(TDL("A", 100e-9, 3.5e9, min_speed=1.0), num_links=20)
    >>> a, tau = fading(torch.full((20,), 0.5e-3), torch.arange(20))
    """

    def __init__(
        self, tdl, num_links: int, doppler_hz: float = 0.0, num_sinusoids: int = 20, device=None, generator=None
    ):
        from sionna.phy import config
        from sionna.phy.utils import rand

        device = str(device or config.device)
        generator = generator or config.torch_rng(device)
        dtype = torch.float32
        if tdl is not None:
            num_paths, num_sinusoids = tdl.num_clusters, tdl._num_sinusoids
            # the diffuse part of each tap (the public ``mean_powers`` adds the LoS power to the first)
            powers = tdl._mean_powers.real.to(device, dtype)
            delays = tdl.delays.to(device, dtype)
            min_doppler, max_doppler = float(tdl._min_doppler), float(tdl._max_doppler)
            los = bool(tdl.los)
            los_power = float(tdl.mean_power_los) if los else 0.0
            los_cos = math.cos(float(tdl._los_angle_of_arrival))
        else:
            num_paths = 1
            powers, delays = torch.ones(1, device=device), torch.zeros(1, device=device)
            min_doppler = max_doppler = 2 * math.pi * doppler_hz
            los, los_power, los_cos = False, 0.0, 0.0
        alpha_const = 2 * math.pi / num_sinusoids * torch.arange(1, num_sinusoids + 1, device=device, dtype=dtype)

        def draw(shape):
            return rand(shape, dtype=dtype, device=device, generator=generator)

        # Sionna's TDL draws Doppler, angle offsets, phases and the LoS phase in this order and these shapes
        # (its singleton antenna and time axes left out here)
        self.doppler = draw((num_links, 1, 1)) * (max_doppler - min_doppler) + min_doppler  # rad/s
        theta = draw((num_links, num_paths, num_sinusoids)) * (2 * math.pi / num_sinusoids) - math.pi / num_sinusoids
        self.cos_alpha = torch.cos(alpha_const + theta)
        self.phi = draw((num_links, num_paths, num_sinusoids)) * 2 * math.pi - math.pi
        self.los, self.los_cos, self.los_amplitude = los, los_cos, math.sqrt(los_power)
        self.phi_los = draw((num_links,)) * 2 * math.pi - math.pi if los else None
        self.amplitude = torch.sqrt(powers / num_sinusoids)
        self.delays = delays
        self.num_links, self.num_paths = num_links, num_paths

    def __call__(self, time_s: torch.Tensor, links: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # phases in float64, wrapped to one turn before float32: a float32 product of Doppler and an absolute
        # time of minutes would already be off by a tenth of a radian
        t = time_s.to(self.doppler.device, torch.float64)[:, None, None]
        turn = 2 * math.pi
        argument = torch.remainder(self.doppler[links].double() * t * self.cos_alpha[links] + self.phi[links], turn)
        argument = argument.float()  # [n, paths, sinusoids]
        a = torch.polar(self.amplitude[:, None].expand_as(argument), argument).sum(-1)
        if self.los:
            specular = self.doppler[links, 0, 0].double() * t[:, 0, 0] * self.los_cos + self.phi_los[links]
            specular = torch.remainder(specular, turn).float()
            a[:, 0] += self.los_amplitude * torch.polar(torch.ones_like(specular), specular)
        return a, self.delays.expand(len(links), -1)


class RedrawnBlockFading:
    """A Sionna channel model regenerated every ``block_slots`` slots, with its Doppler evolution inside a block.

    :param model: Sionna channel model called as ``model(batch_size, num_time_steps, sampling_frequency)``
        (for the TR 38.901 models, :class:`~sim.phy.channels.FoldedUsersChannel`)
    :param num_links: links, ``timelines * users`` in the folded order the model expects
    :param slot_s: slot duration, seconds
    :param block_slots: slots per realisation

    :input slot: int, the slot (asked in non-decreasing order, up to ``block_slots`` back).
    :input links: [n], int64.
    :output a: [n, num_paths], complex64; ``tau``: [n, num_paths], float32.
    """

    def __init__(self, model, num_links: int, slot_s: float, block_slots: int):
        self.model, self.num_links, self.slot_s, self.block_slots = model, num_links, slot_s, max(1, block_slots)
        self._blocks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _block(self, index: int):
        if index not in self._blocks:
            a, tau = self.model(self.num_links, self.block_slots, 1 / self.slot_s)
            # [links, 1, 1, 1, 1, paths, time] -> [links, time, paths]; tau [links, 1, 1, paths] -> [links, paths]
            self._blocks = {k: v for k, v in self._blocks.items() if k >= index - 1}  # the previous for a late CQI
            self._blocks[index] = (a[:, 0, 0, 0, 0].permute(0, 2, 1).to(torch.complex64), tau[:, 0, 0].float())
        return self._blocks[index]

    def __call__(self, slot: int, links: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = slot // self.block_slots
        if index < min(self._blocks, default=index):  # older than what is kept: the oldest slot kept stands in
            index, slot = min(self._blocks), min(self._blocks) * self.block_slots
        a, tau = self._block(index)
        return a[links, slot - index * self.block_slots], tau[links]


class UnitChannel:
    """AWGN: one path of gain 1 and delay 0 for every link."""

    def __call__(self, time_or_slot, links: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(links)
        return torch.ones(n, 1, dtype=torch.complex64, device=links.device), torch.zeros(n, 1, device=links.device)


def coherence_slots(speed_mps: float, carrier_frequency_hz: float, slot_s: float) -> int:
    """Slots in the channel's coherence time 0.423 / f_D (at most :data:`MAX_BLOCK_SLOTS`)."""
    doppler_hz = speed_mps * carrier_frequency_hz / SPEED_OF_LIGHT_MPS
    if doppler_hz == 0:
        return MAX_BLOCK_SLOTS
    return int(min(MAX_BLOCK_SLOTS, max(1, round(CLARKE_COHERENCE / doppler_hz / slot_s))))


class SlotFading:
    """The scenario's channel for ``num_links`` links as a process over slots.

    :param name: ``channel.model``
    :param model: the Sionna model of :func:`~sim.phy.channels.channel_model` (``None`` for AWGN)
    :param num_links: ``timelines * users`` links (element ``b * num_users + u``)
    :param slot_s: slot duration, seconds
    :param speed_mps: ``channel.speed_mps``; ``carrier_frequency_hz``: carrier frequency
    :param block_slots: TR 38.901 models: slots per realisation (``None``: the coherence time)
    :param seed: seed of the TDL and Rayleigh draws (``None``: Sionna's generator; the TR 38.901 models always
        draw from Sionna's)

    :input slot: int. :input links: [n], int64.
    :output a: [n, num_paths], complex64; ``tau``: [n, num_paths], float32.
    """

    def __init__(
        self, name, model, num_links, slot_s, speed_mps, carrier_frequency_hz, block_slots=None, device=None, seed=None
    ):
        self.slot_s = slot_s
        generator = None if seed is None else torch.Generator(device=str(device or "cpu")).manual_seed(seed)
        if model is None:
            self._process, self._timed = UnitChannel(), False
        elif name == "rayleigh":
            doppler_hz = speed_mps * carrier_frequency_hz / SPEED_OF_LIGHT_MPS
            process = SumOfSinusoidsFading(None, num_links, doppler_hz, device=device, generator=generator)
            self._process, self._timed = process, True
        elif name.startswith("tdl-"):
            self._process, self._timed = (
                SumOfSinusoidsFading(model, num_links, device=device, generator=generator),
                True,
            )
        else:
            block = block_slots or coherence_slots(speed_mps, carrier_frequency_hz, slot_s)
            self._process, self._timed = RedrawnBlockFading(model, num_links, slot_s, block), False

    def __call__(self, slot: int, links: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._timed:
            time_s = torch.full((len(links),), slot * self.slot_s, dtype=torch.float64, device=links.device)
            return self._process(time_s, links)
        return self._process(slot, links)

    def response(self, slot: int, links: torch.Tensor, frequencies_hz: torch.Tensor) -> torch.Tensor:
        """[len(links), len(frequencies_hz)] complex: the links' channel at ``slot`` on those frequencies."""
        a, tau = self(slot, links)
        if self._timed or isinstance(self._process, UnitChannel):
            # TDL and Rayleigh delays are the same for every link and slot: the steering of each path to each
            # frequency is computed once, and the response is one matrix product (Sionna's formula, batched)
            key = (frequencies_hz.data_ptr(), len(frequencies_hz))
            if getattr(self, "_steering_key", None) != key:
                self._steering = frequency_response(
                    torch.eye(a.shape[1], dtype=a.dtype, device=a.device),
                    tau[:1].expand(a.shape[1], -1),
                    frequencies_hz,
                )
                self._steering_key = key
            return a @ self._steering
        return frequency_response(a, tau, frequencies_hz)


def frequency_response(a: torch.Tensor, tau: torch.Tensor, frequencies_hz: torch.Tensor) -> torch.Tensor:
    """[n, num_paths] paths (complex) and delays -> [n, len(frequencies_hz)] complex, with Sionna's
    ``cir_to_ofdm_channel`` (no normalisation: the fading keeps its power)."""
    from sionna.phy.channel import cir_to_ofdm_channel

    h = cir_to_ofdm_channel(frequencies_hz, a[:, None, None, None, None, :, None], tau[:, None, None, :])
    return h[:, 0, 0, 0, 0, 0]
