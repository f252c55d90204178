"""Every user's tokens as one payload, and the channel training goes through.

Tasks arrive as per-modality token tensors, ``[num_slots * num_groups, length,
dim]`` (slot-major). The uplink packs each user's modalities into one payload
``[num_slots, num_users, num_values]`` and unpacks received payloads into the
same per-modality layout for the edge. Evaluation carries the payloads through
the cell loop (:mod:`sim.cell`), on the PRBs the scheduler grants.

Training goes through a channel that needs no scheduler: every user on its
equal share of the carrier at an SNR drawn per slot, all
``num_slots * num_users`` links through :class:`~sim.phy.analog.AnalogLink` at
once (differentiable), or, with ``link.mode: digital``, the digital link's
noise proxy (quantisation and TB erasures, :class:`~sim.phy.digital.DigitalProxy`).
"""

from __future__ import annotations

import torch
from sionna.phy.ofdm import ResourceGrid
from torch import nn

from models.compression import sliding_window_pool
from models.config import MODALITIES
from sim.mac.allocation import EqualShare
from sim.phy.analog import AnalogLink
from sim.phy.channels import channel_model
from sim.phy.digital import DigitalProxy
from sim.phy.numerology import (
    NUM_OFDM_SYMBOLS_PER_SLOT,
    NUM_SUBCARRIERS_PER_PRB,
    pilot_symbol_indices,
)
from sim.topology import cell_geometry


class Uplink(nn.Module):
    """All users of a scenario transmitting their tokens in the same slots.

    :param scenario: a validated :class:`~sim.scenario.Scenario`
    :param device: torch device of the link
    :param token_factor: per user, how many times fewer tokens it sends than ``tokens.<modality>.length``
        (pooled on the device, repeated back at the edge); ``None``: every user sends them all

    :input tokens: ``{modality: [num_slots * num_groups, length, dim]}``, float.
    :input snr_db: [num_slots, num_users], float.
    :output: ``{modality: [num_slots * num_groups, length, dim]}`` received through the analog link, each
        user on its equal share (the training channel's link; in digital mode :meth:`training_channel` goes
        through the digital proxy instead, and no analog link is built).
    """

    def __init__(self, scenario, device: torch.device, token_factor: list[int] | None = None):
        super().__init__()
        self.user_ids = [u.id for u in scenario.users]
        self.num_groups = len(scenario.groups)
        user_index = {uid: i for i, uid in enumerate(self.user_ids)}
        users = scenario.users_by_id()
        # tokens a user sends of each modality: the scenario's length over its factor (at least one)
        self.token_factor = list(token_factor or [1] * len(self.user_ids))
        self.token_shapes = {m: (t.length, t.dim) for m, t in scenario.tokens.items()}

        # Where each (group, modality) sits in its sender's payload, by the length it is sent at.
        self.values_per_user = [0] * len(self.user_ids)
        placement: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        for g, group in enumerate(scenario.groups):
            for uid in group.users:
                u = user_index[uid]
                for m in (m for m in MODALITIES if m in users[uid].modalities):
                    length, dim = self.token_shapes[m]
                    sent = max(1, length // self.token_factor[u])
                    placement.setdefault((m, sent), []).append((g, u, self.values_per_user[u]))
                    self.values_per_user[u] += sent * dim
        self.num_values = max(self.values_per_user)
        self._groups, self._indices = {}, {}
        for (m, sent), places in placement.items():
            groups, users, offsets = (torch.tensor(c) for c in zip(*places))
            flat = (users * self.num_values + offsets)[:, None] + torch.arange(sent * self.token_shapes[m][1])
            self._groups[(m, sent)] = groups.to(device)
            self._indices[(m, sent)] = flat.flatten().to(device)
        reduced = torch.tensor([f > 1 for f in self.token_factor], device=device)
        self.register_buffer("_reduced", reduced, persistent=False)

        cell = scenario.cell
        self.share = EqualShare(cell.num_prbs, len(self.user_ids), len(cell.pilot_ofdm_symbol_indices))
        num_slots = max(self.share.slots_for(v // 2) for v in self.values_per_user)
        self.resource_grid = ResourceGrid(
            num_ofdm_symbols=NUM_OFDM_SYMBOLS_PER_SLOT * num_slots,
            fft_size=NUM_SUBCARRIERS_PER_PRB * self.share.prbs_per_user,
            subcarrier_spacing=cell.subcarrier_spacing_hz,
            num_tx=1,
            num_streams_per_tx=1,
            pilot_pattern="kronecker",
            pilot_ofdm_symbol_indices=pilot_symbol_indices(num_slots, cell.pilot_ofdm_symbol_indices),
            device=str(device),  # "cpu" or "cuda:0", as Sionna names devices
        )
        self.device = torch.device(device)
        self.link, self.digital = None, None  # the channel training goes through: one or the other
        if scenario.link.mode == "analog":
            ch = scenario.channel
            model = channel_model(
                ch.model,
                carrier_frequency_hz=cell.carrier_frequency_hz,
                delay_spread_s=ch.delay_spread_s,
                speed_mps=ch.speed_mps,
                device=self.resource_grid.device,
                geometry=cell_geometry(scenario),  # the users' places, for the 3GPP umi/uma/rma fading
            )
            self.link = AnalogLink(self.resource_grid, model, csi=ch.csi, device=self.resource_grid.device)
        else:
            ln = scenario.link
            self.digital = DigitalProxy(
                num_prbs=self.share.prbs_per_user,
                num_pilot_symbols=len(cell.pilot_ofdm_symbol_indices),
                bits_per_value=ln.bits_per_value,
                mcs=ln.mcs,
                bler_target=ln.bler_target,
                mcs_table=ln.mcs_table,
                max_retx=ln.harq.max_retx,
                device=self.resource_grid.device,
            )

    def forward(self, tokens: dict[str, torch.Tensor], snr_db: torch.Tensor) -> dict[str, torch.Tensor]:
        num_slots, num_users = snr_db.shape
        payload, gain = self.normalise(self.pack(tokens))
        received = self.link(payload.reshape(num_slots * num_users, self.num_values), snr_db.flatten())["tokens"]
        return self.unpack(received.reshape(payload.shape) / gain, tokens)

    def normalise(self, payload: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Payloads of users sending fewer tokens back to mean power 1/2 per value (pooling lowers it).

        The gain [num_slots, num_users, 1] rides along as side information (one number per payload,
        negligible next to the tokens) and the edge divides it out.
        """
        if not bool(self._reduced.any()):
            return payload, torch.ones_like(payload[..., :1])
        used = torch.arange(self.num_values, device=payload.device) < torch.tensor(
            self.values_per_user, device=payload.device
        ).unsqueeze(-1)
        power = (payload.square() * used).sum(-1, keepdim=True) / used.sum(-1, keepdim=True)
        gain = torch.where(self._reduced[:, None], torch.sqrt(0.5 / power.clamp(min=1e-12)), 1.0)
        return payload * gain, gain

    def pack(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{modality: [num_slots * num_groups, length, dim]}`` -> payloads [num_slots, num_users, num_values].

        A user with a token factor above 1 sends its tokens pooled to fewer
        (the transmitter's own sliding-window pooling, over its output tokens).
        """
        first = next(iter(tokens.values()))
        num_slots = first.shape[0] // self.num_groups
        payload = first.new_zeros(num_slots, len(self.user_ids) * self.num_values)
        for (m, sent), index in self._indices.items():
            pooled = tokens[m] if sent == tokens[m].shape[1] else sliding_window_pool(tokens[m], sent)
            chosen = pooled.reshape(num_slots, self.num_groups, -1)[:, self._groups[(m, sent)]]
            payload = payload.index_copy(1, index, chosen.flatten(1))
        return payload.reshape(num_slots, len(self.user_ids), self.num_values)

    def unpack(self, payload: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Payloads [num_slots, num_users, num_values] -> tokens in the layout of ``like``.

        Pooled tokens are repeated over the positions of their window, so the edge sees the full length.
        """
        num_slots = payload.shape[0]
        flat = payload.reshape(num_slots, -1)
        out = {}
        for m, (length, dim) in self.token_shapes.items():
            rx = like[m].new_zeros(num_slots, self.num_groups, length, dim)
            for (modality, sent), index in self._indices.items():
                if modality == m:
                    got = flat.index_select(1, index).reshape(num_slots, -1, sent, dim)
                    window = torch.arange(length, device=payload.device) * sent // length  # window of each position
                    rx = rx.index_copy(1, self._groups[(m, sent)], got[:, :, window])
            out[m] = rx.reshape(num_slots * self.num_groups, length, dim)
        return out

    def training_channel(self, snr_db_range: tuple[float, float], generator: torch.Generator):
        """Channel function for training: each user's SNR drawn uniformly per slot."""
        low, high = snr_db_range

        def channel(tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            num_slots = next(iter(tokens.values())).shape[0] // self.num_groups
            snr = low + (high - low) * torch.rand(num_slots, len(self.user_ids), generator=generator)
            if self.digital is None:
                return self(tokens, snr.to(self.device))
            return self.unpack(self.digital(self.pack(tokens), snr.to(self.device), generator), tokens)

        return channel
