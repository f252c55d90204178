"""The scenario schema: every section of the YAML a user writes, as strict pydantic models.

Each field carries its bounds and a description (``tokensim keys`` lists them); what one field cannot check
alone is in :mod:`sim.scenario_checks`, reading and overriding the YAML in :mod:`sim.scenario_yaml`, and
:func:`sim.scenario.load_scenario` puts them together.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from models.config import (
    Modality,
    ModelsConfig,
    Seed,
    SnrDb,
    Strict,
    TokensConfig,
    TrainingConfig,
)
from models.data import DatasetConfig, FashionAVQAConfig
from sim.mac import SCHEDULER_POLICIES
from sim.mac.allocation import AllocationConfig
from sim.mac.traffic import TrafficConfig
from sim.phy.channels import CHANNEL_MODELS
from sim.phy.numerology import (
    NUM_OFDM_SYMBOLS_PER_SLOT,
    SUBCARRIER_SPACINGS_HZ,
)
from sim.topology import RadioConfig, TopologyConfig

MAX_MCS = 28  # the highest PUSCH MCS index of TS 38.214's tables (6.1.4.1)


class CellConfig(Strict):
    """One NR carrier. Give ``num_prbs`` or a 3GPP ``bandwidth_hz`` (or both, consistent)."""

    carrier_frequency_hz: float = Field(3.5e9, ge=410e6, le=71e9, description="NR FR1 and FR2: 410 MHz to 71 GHz")
    subcarrier_spacing_hz: float = Field(
        30e3,
        description="NR numerology",
        json_schema_extra={"allowed": ", ".join(f"{s:g}" for s in SUBCARRIER_SPACINGS_HZ)},
    )
    bandwidth_hz: float | None = Field(
        None, gt=0, le=2e9, description="channel bandwidth; gives num_prbs by TS 38.101-1/-2's N_RB tables"
    )
    num_prbs: int | None = Field(None, gt=0, description="PRBs of the carrier (12 subcarriers each)")
    pilot_ofdm_symbol_indices: list[int] = Field(
        default_factory=lambda: [2, 11],
        min_length=1,
        description="OFDM symbols of each 14-symbol slot that carry pilots (DMRS) on every subcarrier",
        json_schema_extra={"allowed": f"distinct indices 0..{NUM_OFDM_SYMBOLS_PER_SLOT - 1}"},
    )

    @field_validator("subcarrier_spacing_hz")
    @classmethod
    def _nr_spacing(cls, scs: float) -> float:
        if scs not in SUBCARRIER_SPACINGS_HZ:
            raise ValueError(
                f"is not an NR subcarrier spacing; allowed: {', '.join(f'{s:g}' for s in SUBCARRIER_SPACINGS_HZ)}"
            )
        return scs

    @field_validator("pilot_ofdm_symbol_indices")
    @classmethod
    def _in_slot(cls, indices: list[int]) -> list[int]:
        if len(set(indices)) != len(indices) or not all(0 <= i < NUM_OFDM_SYMBOLS_PER_SLOT for i in indices):
            raise ValueError(f"must be distinct OFDM symbol indices in 0..{NUM_OFDM_SYMBOLS_PER_SLOT - 1}")
        return sorted(indices)


class ChannelConfig(Strict):
    """Fading model between every user and the base station, and how the BS learns it."""

    model: Literal[tuple(CHANNEL_MODELS)] = Field(  # type: ignore[valid-type]
        "tdl-a", description="awgn; rayleigh (one tap); TR 38.901 TDL-A..E; umi/uma/rma: TR 38.901 system-level fading"
    )
    csi: Literal["perfect", "ls"] = Field(
        "ls", description="perfect: the BS knows the channel; ls: LS estimates at the pilots, linear in time"
    )
    delay_spread_s: float = Field(100e-9, gt=0, le=10e-6, description="RMS delay spread of TDL models")
    speed_mps: float = Field(1.0, ge=0, le=500, description="user speed (Doppler) of TDL models; 500 m/s at most")


class HarqConfig(Strict):
    """Retransmissions of transport blocks that fail their CRC (Chase combining)."""

    max_retx: int = Field(3, ge=0, le=15, description="retransmissions of a TB at most (NR: up to 3 is usual)")
    round_trip_slots: int = Field(
        4, ge=1, le=1000, description="slots from a TB attempt until its ACK/NACK is known; only then a retransmission"
    )


class LinkConfig(Strict):
    """How tokens go on air: analog symbols, or quantised bits in 5G NR transport blocks."""

    mode: Literal["analog", "digital"] = Field(
        "analog", description="analog: token values as complex symbols; digital: quantised, LDPC-coded, QAM"
    )
    bits_per_value: int = Field(8, ge=1, le=16, description="digital: bits per real token value")
    mcs: int | Literal["auto"] = Field(
        "auto",
        description=f"digital: PUSCH MCS index 0..{MAX_MCS} for every user, or auto (link adaptation)",
        json_schema_extra={"allowed": f"0..{MAX_MCS}"},
    )
    mcs_table: Literal[1, 2] = Field(1, description="digital: TS 38.214 MCS table (1: up to 64-QAM, 2: 256-QAM)")
    bler_target: float = Field(0.1, gt=0, lt=1, description="digital: first-transmission BLER link adaptation aims at")
    fidelity: Literal["link", "abstraction"] = Field(
        "link", description="digital: decode every bit, or draw TB outcomes from a PHY abstraction (link.abstraction)"
    )
    abstraction: Literal["llr-mi", "eesm"] = Field(
        "llr-mi",
        description="digital: llr-mi: BLER from the combined LLRs' mutual information on curves calibrated on "
        "this chain (no decoding); eesm: Sionna's PHYAbstraction at the EESM of the per-RE SINR (no symbols)",
    )
    harq: HarqConfig = Field(default_factory=HarqConfig)
    decoder: str | None = Field(None, description="digital: LDPC TB decoder (sim/phy/tb_decoders.py)")
    num_bp_iter: int | None = Field(None, gt=0, description="digital: BP iterations at most")

    @field_validator("mcs")
    @classmethod
    def _mcs_index(cls, mcs):
        if isinstance(mcs, int) and not 0 <= mcs <= MAX_MCS:
            raise ValueError(f"is not an MCS index 0..{MAX_MCS} or auto")
        return mcs


class UserConfig(Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="name used by groups and --set")
    modalities: list[Modality] = Field(min_length=1, description="what the device sends, each its own tokens")
    snr_db: SnrDb | None = Field(
        None, description="Es/N0 at the receiver, dB; required unless the top-level snr_db is set or the user is placed"
    )
    position_m: list[Annotated[float, Field(ge=-1e5, le=1e5)]] | None = Field(
        None, min_length=3, max_length=3, description="[x, y, z]; the base station is at [0, 0, topology.bs_height_m]"
    )
    distance_m: float | None = Field(
        None,
        gt=0,
        le=1e5,
        description="horizontal distance from the BS; alone, at azimuth 360 deg * user index / users",
    )
    indoor: bool | None = Field(None, description="drawn with topology.indoor_probability when a placed user omits it")
    los: bool | None = Field(None, description="LoS of the link's outdoor part (TR 38.901 7.4.2); drawn if omitted")
    pathloss_db: float | None = Field(
        None, ge=0, le=400, description="TR 38.901 path loss incl. O2I; filled in for placed users"
    )
    shadow_fading_db: float | None = Field(
        None, ge=-100, le=100, description="log-normal shadow fading loss; filled in likewise"
    )
    group: str | None = Field(None, description="filled in from groups")
    device_gflops: float | None = Field(None, gt=0, description="defaults to compute.device_gflops")

    @field_validator("modalities")
    @classmethod
    def _distinct(cls, modalities: list[str]) -> list[str]:
        if len(set(modalities)) != len(modalities):
            raise ValueError("names a modality twice")
        return modalities


class GroupConfig(Strict):
    """Users whose tokens the edge fuses to answer one task (one sender per modality)."""

    id: str = Field(min_length=1, description="name in results")
    users: list[str] = Field(min_length=1, description="user ids: one sender per modality, one of them of text")


class ComputeConfig(Strict):
    device_gflops: float = Field(20.0, gt=0, description="user device throughput, GFLOP/s")
    edge_gflops: float = Field(5000.0, gt=0, description="edge server throughput, GFLOP/s")


class SchedulerConfig(Strict):
    """Who gets which PRBs in which slot (:mod:`sim.mac.scheduler`)."""

    policy: Literal[SCHEDULER_POLICIES] = Field(  # type: ignore[valid-type]
        "equal-share", description="the MAC's policy each slot (sim.mac.scheduler)"
    )
    pf_beta: float = Field(0.98, gt=0, lt=1, description="proportional-fair: discount of the average rate")
    cqi_delay_slots: int = Field(
        0, ge=0, le=1000, description="slots between the channel the CQI reports and the slot it schedules"
    )
    power_headroom: bool = Field(
        True,
        description="digital: grant a user no more PRBs than its power fills (those that carry the most bits); "
        "false: up to its backlog whatever its power",
    )
    allocation: AllocationConfig = Field(default_factory=AllocationConfig, description="token-aware: the objective")


class EvaluationConfig(Strict):
    tasks_per_group: int = Field(1000, gt=0, description="test-split tasks each group answers")
    batch_size: int = Field(256, gt=0, description="task slots per evaluation batch")


class Scenario(Strict):
    name: str = Field(min_length=1, description="names the default results folder, results/<name>/")
    seed: Seed = Field(0, description="the model's seed: initialisation, training batches, channel draws")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    dataset: DatasetConfig = Field(
        default_factory=FashionAVQAConfig, description="the tasks: fashion-avqa, or a folder of your own"
    )
    cell: CellConfig = Field(default_factory=CellConfig)
    channel: ChannelConfig = Field(default_factory=ChannelConfig)
    link: LinkConfig = Field(default_factory=LinkConfig)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    radio: RadioConfig = Field(default_factory=RadioConfig)
    snr_db: SnrDb | None = Field(None, description="if set, every user's snr_db")
    replicas: int = Field(
        1, ge=1, description="users and groups repeated this many times (ids get .1, .2, ...); dropped anew"
    )
    model_from: str | None = Field(
        None, description="scenario file (relative to this one) whose trained model this scenario evaluates"
    )
    users: list[UserConfig] = Field(min_length=1, description="the user devices, each one uplink")
    groups: list[GroupConfig] = Field(min_length=1, description="users whose tokens answer one task together")
    tokens: TokensConfig
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def user(self, user_id: str) -> UserConfig:
        return next(u for u in self.users if u.id == user_id)

    def users_by_id(self) -> dict[str, UserConfig]:
        """Each user by its id (the first, where two share one): made once by a loop over groups and their
        users, which then looks each up in constant time."""
        return {u.id: u for u in reversed(self.users)}

    def group_of_user(self) -> list[int]:
        """Each user's group, as an index into ``groups``, in the order of ``users``."""
        index = {uid: g for g, group in enumerate(self.groups) for uid in group.users}
        return [index[u.id] for u in self.users]

    def group_modalities(self, group: GroupConfig) -> frozenset[str]:
        users = self.users_by_id()
        return frozenset(m for uid in group.users for m in users[uid].modalities)
