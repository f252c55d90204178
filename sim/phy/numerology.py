"""5G NR numerology: PRBs for a channel bandwidth, slot duration, OFDM grids."""

NUM_SUBCARRIERS_PER_PRB = 12
NUM_OFDM_SYMBOLS_PER_SLOT = 14

# Maximum transmission bandwidth configuration N_RB, 3GPP TS 38.101-1 Table 5.3.2-1
# (FR1) and TS 38.101-2 Table 5.3.2-1 (FR2). Typed in by hand: neither Sionna
# nor any maintained PyPI package ships the table.
# {subcarrier spacing [Hz]: {channel bandwidth [MHz]: N_RB}}
MAX_NUM_PRBS = {
    15e3: {5: 25, 10: 52, 15: 79, 20: 106, 25: 133, 30: 160, 35: 188, 40: 216, 45: 242, 50: 270},
    30e3: {
        5: 11,
        10: 24,
        15: 38,
        20: 51,
        25: 65,
        30: 78,
        35: 92,
        40: 106,
        45: 119,
        50: 133,
        60: 162,
        70: 189,
        80: 217,
        90: 245,
        100: 273,
    },
    60e3: {
        10: 11,
        15: 18,
        20: 24,
        25: 31,
        30: 38,
        35: 44,
        40: 51,
        45: 58,
        50: 65,
        60: 79,
        70: 93,
        80: 107,
        90: 121,
        100: 135,
        200: 264,
    },
    120e3: {50: 32, 100: 66, 200: 132, 400: 264},
}
SUBCARRIER_SPACINGS_HZ = tuple(MAX_NUM_PRBS)


def num_prbs_for_bandwidth(bandwidth_hz: float, subcarrier_spacing_hz: float) -> int:
    """N_RB of a 3GPP channel bandwidth; ``KeyError`` if the pair is not in the tables."""
    return MAX_NUM_PRBS[subcarrier_spacing_hz][round(bandwidth_hz / 1e6)]


def slot_duration_s(subcarrier_spacing_hz: float) -> float:
    """Slot length of numerology mu = log2(scs / 15 kHz): 1 ms / 2**mu."""
    from sionna.phy.nr import CarrierConfig

    carrier = CarrierConfig(subcarrier_spacing=subcarrier_spacing_hz / 1e3)
    return carrier.sub_frame_duration / carrier.num_slots_per_subframe


def pilot_symbol_indices(num_slots: int, per_slot: list[int]) -> list[int]:
    """OFDM symbols carrying pilots when ``num_slots`` slots are stacked in one grid."""
    return [s * NUM_OFDM_SYMBOLS_PER_SLOT + i for s in range(num_slots) for i in per_slot]
