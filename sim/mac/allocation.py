"""Resource allocation of the uplink."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.phy.numerology import NUM_OFDM_SYMBOLS_PER_SLOT, NUM_SUBCARRIERS_PER_PRB


@dataclass(frozen=True)
class EqualShare:
    """Every user holds the same whole number of PRBs in every slot (OFDMA, no scheduling yet).

    :param num_prbs: PRBs of the carrier
    :param num_users: users sharing them
    :param num_pilot_symbols: pilot OFDM symbols per slot (no data there)

    >>> share = EqualShare(num_prbs=24, num_users=10, num_pilot_symbols=2)
    >>> share.prbs_per_user, share.data_symbols_per_slot, share.slots_for(500)
    (2, 288, 2)
    """

    num_prbs: int
    num_users: int
    num_pilot_symbols: int

    @property
    def prbs_per_user(self) -> int:
        return self.num_prbs // self.num_users

    @property
    def prbs_used(self) -> int:
        return self.prbs_per_user * self.num_users

    @property
    def data_symbols_per_slot(self) -> int:
        """Data resource elements one user has in one slot."""
        return self.prbs_per_user * NUM_SUBCARRIERS_PER_PRB * (NUM_OFDM_SYMBOLS_PER_SLOT - self.num_pilot_symbols)

    def slots_for(self, num_symbols: int) -> int:
        """Slots a user needs to send ``num_symbols`` complex symbols."""
        return math.ceil(num_symbols / self.data_symbols_per_slot)
