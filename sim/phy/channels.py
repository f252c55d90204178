"""Registry of the fading channels between a user and the base station.

Every model is a Sionna block producing channel impulse responses for one
SISO link; :class:`sionna.phy.channel.OFDMChannel` turns them into frequency
responses on the resource grid and adds noise. Users are folded into the
batch dimension so each (sample, user) pair draws its own realisation: Sionna's
TDL with ``num_tx > 1`` would give every user the same channel.
"""

from __future__ import annotations

CHANNEL_MODELS = ("awgn", "rayleigh", "tdl-a", "tdl-b", "tdl-c", "tdl-d", "tdl-e")


def channel_model(
    name: str, *, carrier_frequency_hz: float, delay_spread_s: float, speed_mps: float, precision=None, device=None
):
    """The Sionna channel model called ``name``; ``None`` for AWGN (h = 1).

    :param name: one of :data:`CHANNEL_MODELS`
    :output: a :class:`sionna.phy.channel.ChannelModel` with one transmit and
        one receive antenna, or ``None``
    """
    from sionna.phy.channel import RayleighBlockFading
    from sionna.phy.channel.tr38901 import TDL

    if name == "awgn":
        return None
    if name == "rayleigh":
        return RayleighBlockFading(num_rx=1, num_rx_ant=1, num_tx=1, num_tx_ant=1, precision=precision, device=device)
    if name.startswith("tdl-"):
        return TDL(
            name[-1].upper(),
            delay_spread=delay_spread_s,
            carrier_frequency=carrier_frequency_hz,
            min_speed=speed_mps,
            max_speed=speed_mps,
            precision=precision,
            device=device,
        )
    raise KeyError(f"channel.model {name!r} is not one of {', '.join(CHANNEL_MODELS)}")
