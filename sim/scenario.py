"""The scenario: a strict, typed model of the YAML a user writes.

``load_scenario(path, overrides)`` reads the YAML, applies ``--set`` overrides
(dotted keys), validates every field and the cross-references between them,
and returns a :class:`Scenario` with every default filled in. Anything wrong
raises :class:`~sim.errors.ScenarioError` naming the key, the value and what
is allowed.
"""

from __future__ import annotations

import functools
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from models.config import (
    MODALITIES,
    Modality,
    ModelsConfig,
    Seed,
    SnrDb,
    Strict,
    TokensConfig,
    TrainingConfig,
)
from models.data import FashionAVQAConfig
from sim.errors import ScenarioError, ScenarioErrors
from sim.mac import SCHEDULER_POLICIES
from sim.mac.allocation import AllocationConfig, EqualShare
from sim.mac.traffic import TrafficConfig
from sim.phy.channels import CHANNEL_MODELS
from sim.phy.numerology import (
    MAX_NUM_PRBS,
    NUM_OFDM_SYMBOLS_PER_SLOT,
    SUBCARRIER_SPACINGS_HZ,
    num_prbs_for_bandwidth,
)
from sim.topology import RadioConfig, TopologyConfig, geometry_errors, is_placed, resolve_geometry

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
        "link", description="digital: decode every bit, or draw TB outcomes from Sionna's PHYAbstraction"
    )
    harq: HarqConfig = Field(default_factory=HarqConfig)
    decoder: str | None = Field(None, description="digital: LDPC TB decoder (sim/phy/ldpc.py)")
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
    dataset: FashionAVQAConfig = Field(default_factory=FashionAVQAConfig)
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

    def group_modalities(self, group: GroupConfig) -> frozenset[str]:
        return frozenset(m for uid in group.users for m in self.user(uid).modalities)


# ---------------------------------------------------------------- loading


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Read, override and validate a scenario file. Raises ``ScenarioError``."""
    path = Path(path)
    raw = read_mapping(path)
    for item in overrides:
        apply_override(raw, item)
    return validate_scenario(relative_to_file(raw, path))


def read_mapping(path: Path, loader: type = yaml.SafeLoader) -> dict:
    """The mapping a scenario file holds (:func:`read_yaml`); a missing or empty file, or another kind of
    document, is a ``ScenarioError``."""
    if not path.is_file():
        raise ScenarioError("scenario", str(path), "is not a file")
    raw = read_yaml(path, loader)
    if raw is None:
        raise ScenarioError("scenario", str(path), "is empty")
    if not isinstance(raw, dict):
        raise ScenarioError("scenario", str(path), f"must be a mapping of keys to values, not a {type(raw).__name__}")
    return raw


def read_yaml(path: Path, loader: type = yaml.SafeLoader):
    """The YAML document in ``path``, read strictly with ``loader`` (a safe loader): UTF-8 only, and no
    key twice in one mapping.

    PyYAML keeps the last of two equal keys without a word; here the second is a ``ScenarioError``
    naming the dotted key and both lines.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError("scenario", str(path), f"is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                            f"{err.start})") from None  # fmt: skip
    reader = None
    try:
        reader = loader(text)  # checks the characters first: a control character is a YAML error here
        node = reader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, ())
        return reader.construct_document(node)
    except yaml.YAMLError as err:
        raise ScenarioError("scenario", str(path), f"is not valid YAML ({err})") from None
    finally:
        if reader is not None:
            reader.dispose()


def _check_unique_keys(node, where: tuple, done: set | None = None, open_: set | None = None) -> None:
    """Raise on the first key (in document order) that a mapping gives twice, naming its dotted key, and
    on an alias that refers to a node containing it. Nodes shared through aliases are checked once, so an
    alias bomb costs no more than its text."""
    done, open_ = (set() if done is None else done), (set() if open_ is None else open_)
    if id(node) in open_:
        raise ScenarioError(_dotted(where) or "scenario", None, "refers to itself (a recursive YAML alias)")
    if id(node) in done:
        return
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict = {}
        for key_node, value_node in node.value:
            key = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                raise ScenarioError(
                    _dotted((*where, key[1])), None, f"is given twice, at lines {lines[key]} and {line}"
                )
            if key is not None:
                lines[key] = line
            _check_unique_keys(value_node, (*where, key[1] if key else "?"), done, open_)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_unique_keys(item, (*where, index), done, open_)
    open_.discard(id(node))
    done.add(id(node))


def relative_to_file(raw: dict, path: Path) -> dict:
    """Make the scenario's file references (``model_from``) absolute, from the directory of the file at ``path``
    (idempotent: an absolute reference stays as it is)."""
    if isinstance(raw.get("model_from"), str):
        raw["model_from"] = str((Path(path).parent / raw["model_from"]).resolve())
    return raw


def validate_scenario(raw: dict) -> Scenario:
    """Validate a scenario mapping; fill defaults; check cross-references."""
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        raise ScenarioErrors([_describe(e) for e in err.errors()]) from None
    errors = _cross_check(scenario)
    if errors:
        raise ScenarioErrors(errors)
    return _resolve(scenario)


def parse_yaml_value(item: str, text: str):
    """``text`` (the value of the ``--set`` ``item``) as YAML; a ``ScenarioError`` naming the item if it is
    not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = str(getattr(err, "problem", None) or err).splitlines()[0]
        raise ScenarioError("--set", item, f"has a value that is not valid YAML ({problem})") from None


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``dotted.key=value`` or ``dotted.key+=value`` to a raw scenario mapping, in place.

    The value is parsed as YAML (``3``, ``-2.5``, ``true``, ``[2, 11]``,
    ``{id: cam5, modalities: [image], snr_db: 3}``). A segment under a list is
    an index or the ``id`` of an item: ``users.cam1.snr_db=5`` and
    ``users.0.snr_db=5`` both work. ``key+=value`` appends ``value`` to the
    list at ``key`` (made if absent): ``users+={id: cam5, ...}`` adds a user,
    ``groups.g1.users+=cam5`` puts it in a group.
    """
    key, sep, text = item.partition("=")
    if not sep or not key.removesuffix("+"):
        raise ScenarioError("--set", item, "is not of the form dotted.key=value or dotted.key+=value")
    if key.endswith("+") and not text.strip():
        raise ScenarioError(f"--set {key}", None, "appends nothing; give the item to append", f"{key}=VALUE")
    apply_value(raw, key, parse_yaml_value(item, text) if text.strip() else None)


def apply_value(raw: dict, key: str, value) -> None:
    """Set ``value`` (a Python value) at the dotted ``key`` of a raw scenario mapping, in place, or append
    it to the list there when ``key`` ends in ``+`` (see :func:`apply_override`)."""
    append = key.endswith("+")
    key = key.removesuffix("+")
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where)
            if not last:
                node = node[index]
            elif append:
                _append(node, index, value, where)
            else:
                node[index] = value
        elif isinstance(node, dict):
            if not last:
                node = node.setdefault(part, {})
            elif append:
                node.setdefault(part, [])
                _append(node, part, value, where)
            else:
                node[part] = value
        else:
            raise ScenarioError(f"--set {key}", node, f"cannot hold key {part!r}")


def _append(node, index, value, where: str) -> None:
    if not isinstance(node[index], list):
        raise ScenarioError(f"--set {where}+", node[index], "is not a list, so nothing can be appended to it")
    node[index].append(value)


def _list_index(items: list, part: str, where: str) -> int:
    if part.lstrip("-").isdigit() and -len(items) <= int(part) < len(items):
        return int(part)
    ids = [item.get("id") for item in items if isinstance(item, dict)]
    if part in ids:
        return ids.index(part)
    raise ScenarioError(
        f"--set {where}",
        part,
        "is neither an index nor an id of that list",
        ", ".join(map(str, ids)) or f"0..{len(items) - 1}",
    )


def resolved_yaml(scenario: Scenario) -> str:
    """The scenario with every default filled in, as YAML (short lists on one line)."""
    return yaml.dump(scenario.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False)


class _Dumper(yaml.SafeDumper):
    def represent_list(self, data):
        flow = all(not isinstance(item, (dict, list)) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


# ---------------------------------------------------------------- checks


def _cross_check(s: Scenario) -> list[ScenarioError]:
    """What one field cannot check alone: references, group makeup, token sizes."""
    from models.data.fashion_avqa import QUESTION_TYPES, FashionAVQA, MissingDataError
    from models.encoders import encoder_output_shape, resolve_model_path

    errors: list[ScenarioError] = []
    try:
        FashionAVQA(s.dataset)  # only checks that the Debian packages' files are there
    except MissingDataError as err:
        errors.append(
            ScenarioError(err.key, str(err.value), f"{err.problem}; install with: sudo apt-get install {err.package}")
        )
    ids = [u.id for u in s.users]
    for i, uid in enumerate(ids):
        if ids.index(uid) != i:
            errors.append(ScenarioError(f"users[{i}].id", uid, "is used by another user"))

    group_of: dict[str, str] = {}
    group_ids = [g.id for g in s.groups]
    for gi, group in enumerate(s.groups):
        if group_ids.index(group.id) != gi:
            errors.append(ScenarioError(f"groups[{gi}].id", group.id, "is used by another group"))
        senders: dict[str, str] = {}
        for ui, uid in enumerate(group.users):
            key = f"groups[{gi}].users[{ui}]"
            if uid not in ids:
                errors.append(ScenarioError(key, uid, "is not a user", ", ".join(ids)))
                continue
            if uid in group_of:
                errors.append(ScenarioError(key, uid, f"is already in group {group_of[uid]!r}; a user is in one group"))
                continue
            group_of[uid] = group.id
            for m in s.user(uid).modalities:
                if m in senders:
                    errors.append(
                        ScenarioError(key, uid, f"sends {m!r} like {senders[m]!r}; a group has one sender per modality")
                    )
                senders[m] = uid
        if "text" not in senders:
            errors.append(
                ScenarioError(f"groups[{gi}].users", group.users, "has no user sending 'text' (the question)")
            )
        elif not any(QUESTION_TYPES[q].needs <= senders.keys() for q in s.dataset.question_types):
            errors.append(
                ScenarioError(
                    f"groups[{gi}].users",
                    group.users,
                    "sends too little to answer any of dataset.question_types",
                    ", ".join(s.dataset.question_types),
                )
            )
    for i, user in enumerate(s.users):
        if user.snr_db is None and s.snr_db is None and not is_placed(s, user):
            errors.append(
                ScenarioError(
                    f"users[{i}].snr_db",
                    None,
                    "is required unless the top-level snr_db is set or the user is placed (its SNR from geometry)",
                    "a number; or users[i].position_m / distance_m; or topology.drop: cell | hex",
                )
            )
        if user.id not in group_of:
            errors.append(ScenarioError(f"users[{i}].id", user.id, "is in no group; every user sends for one group"))
        elif user.group is not None and user.group != group_of[user.id]:
            errors.append(
                ScenarioError(
                    f"users[{i}].group",
                    user.group,
                    f"disagrees with groups, which put {user.id!r} in {group_of[user.id]!r}",
                )
            )

    errors += geometry_errors(s)

    used = {m for u in s.users for m in u.modalities}
    for m in sorted(used):
        if m not in s.tokens:
            errors.append(ScenarioError(f"tokens.{m}", None, f"is missing; users send {m!r}", "length and dim"))
            continue
        length, _ = encoder_output_shape(m, s.models)
        if s.tokens[m].length > length:
            errors.append(
                ScenarioError(
                    f"tokens.{m}.length",
                    s.tokens[m].length,
                    f"is longer than the {m} encoder's output ({length} tokens)",
                    f"1..{length}",
                )
            )
    for key in ("text_encoder", "backbone"):
        try:
            resolve_model_path(getattr(s.models, key))
        except FileNotFoundError as err:
            errors.append(ScenarioError(f"models.{key}", getattr(s.models, key), str(err)))

    cell = s.cell
    num_prbs = cell.num_prbs or 24
    if cell.bandwidth_hz is not None:
        try:
            prbs = num_prbs_for_bandwidth(cell.bandwidth_hz, cell.subcarrier_spacing_hz)
        except KeyError:
            allowed = ", ".join(f"{mhz:g}e6" for mhz in MAX_NUM_PRBS[cell.subcarrier_spacing_hz])
            errors.append(
                ScenarioError(
                    "cell.bandwidth_hz",
                    cell.bandwidth_hz,
                    f"is not a 3GPP channel bandwidth at {cell.subcarrier_spacing_hz:g} Hz spacing",
                    allowed,
                )
            )
        else:
            if cell.num_prbs is not None and cell.num_prbs != prbs:
                errors.append(
                    ScenarioError("cell.num_prbs", cell.num_prbs, f"disagrees with cell.bandwidth_hz ({prbs} PRBs)")
                )
            num_prbs = prbs
    num_users = len(s.users) * s.replicas
    if s.scheduler.policy in ("equal-share", "token-aware") and num_prbs < num_users:
        others = ", ".join(p for p in SCHEDULER_POLICIES if p not in ("equal-share", "token-aware"))
        errors.append(
            ScenarioError(
                "scheduler.policy",
                s.scheduler.policy,
                f"needs a PRB per user ({num_prbs} PRBs, {num_users} users)",
                f"more PRBs (cell.bandwidth_hz), or a policy that shares PRBs over slots: {others}",
            )
        )
    if s.radio.reference_prbs is not None and s.radio.reference_prbs > num_prbs:
        errors.append(
            ScenarioError(
                "radio.reference_prbs",
                s.radio.reference_prbs,
                f"exceeds the carrier's {num_prbs} PRBs",
                f"1..{num_prbs}",
            )
        )
    errors += _check_model_source(s)
    if s.traffic.arrival == "poisson" and s.traffic.rate_per_s is None:
        errors.append(ScenarioError("traffic.rate_per_s", None, "is required with traffic.arrival: poisson"))
    if s.link.mode == "digital":
        share = EqualShare(num_prbs, num_users, len(cell.pilot_ofdm_symbol_indices))
        errors += _check_digital_link(s.link, share.prbs_per_user, len(cell.pilot_ofdm_symbol_indices))
    return errors


def _check_model_source(s: Scenario) -> list[ScenarioError]:
    """``model_from`` must name a scenario that trains the same model on the same data, and not borrow one itself."""
    if s.model_from is None:
        return []
    try:
        source = load_scenario(s.model_from)
    except ScenarioError as err:
        return [ScenarioError("model_from", s.model_from, f"does not load ({err})")]
    if source.model_from is not None:
        return [ScenarioError("model_from", s.model_from, "borrows its model too", "a scenario that trains its own")]
    errors = []
    for key in ("dataset", "models", "link.mode", "link.bits_per_value"):
        mine, theirs = (functools.reduce(getattr, key.split("."), x) for x in (s, source))
        if mine != theirs:
            errors.append(ScenarioError(key, _short(mine), f"differs from that of model_from {s.model_from}"))
    if set(s.tokens) - set(source.tokens) or any(s.tokens[m] != source.tokens[m] for m in s.tokens):
        errors.append(ScenarioError("tokens", None, f"differ from those of model_from {s.model_from}"))
    return errors


def _short(value):
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _check_digital_link(link: LinkConfig, prbs_per_user: int, num_pilot_symbols: int) -> list[ScenarioError]:
    """A fixed MCS must be one Sionna can code on each user's PRBs and abstract; decoders must exist."""
    from sim.phy.digital import usable_mcs
    from sim.phy.ldpc import TB_DECODERS

    errors = []
    allowed = usable_mcs(prbs_per_user, num_pilot_symbols, link.mcs_table)
    if link.mcs != "auto" and link.mcs not in allowed:
        errors.append(
            ScenarioError(
                "link.mcs",
                link.mcs,
                f"is not codable on {prbs_per_user} PRBs per user by Sionna's 5G LDPC encoder (rate >= 1/5), "
                f"or has no BLER table for its abstraction (MCS table {link.mcs_table})",
                f"{min(allowed)}..{max(allowed)}, auto",
            )
        )
    if link.decoder is not None and link.decoder not in TB_DECODERS:
        errors.append(ScenarioError("link.decoder", link.decoder, "is not a TB decoder", ", ".join(TB_DECODERS)))
    return errors


def _resolve(s: Scenario) -> Scenario:
    """Fill in what follows from other keys: copies of the cell, PRBs, groups and SNRs of users."""
    _replicate(s)
    if s.cell.num_prbs is None:
        s.cell.num_prbs = (
            num_prbs_for_bandwidth(s.cell.bandwidth_hz, s.cell.subcarrier_spacing_hz)
            if s.cell.bandwidth_hz is not None
            else 24
        )
    for group in s.groups:
        for uid in group.users:
            s.user(uid).group = group.id
    for user in s.users:
        if s.snr_db is not None:
            user.snr_db = s.snr_db
        if user.device_gflops is None:
            user.device_gflops = s.compute.device_gflops
    # Placed users without an SNR get it from geometry, their power spread over the reference share of PRBs.
    share = EqualShare(s.cell.num_prbs, len(s.users), len(s.cell.pilot_ofdm_symbol_indices))
    resolve_geometry(s, s.radio.reference_prbs or share.prbs_per_user)
    sent = {m for u in s.users for m in u.modalities}
    s.tokens = {m: s.tokens[m] for m in MODALITIES if m in sent}  # nothing else is encoded or trained
    return s


def _replicate(s: Scenario) -> None:
    """``replicas: n`` -> n copies of every user and group, ids suffixed ``.1`` .. ``.n``; then ``replicas: 1``.

    The resolved scenario lists every copy, so it loads again as it is.
    Copies share explicit SNRs and positions; dropped users are dropped anew.
    """
    if s.replicas == 1:
        return
    users, groups = [], []
    for r in range(1, s.replicas + 1):
        users += [u.model_copy(update={"id": f"{u.id}.{r}"}) for u in s.users]
        groups += [
            g.model_copy(update={"id": f"{g.id}.{r}", "users": [f"{uid}.{r}" for uid in g.users]}) for g in s.groups
        ]
    s.users, s.groups, s.replicas = users, groups, 1


def model_source(s: Scenario) -> Scenario | None:
    """The scenario named by ``model_from`` (validated), whose checkpoint this one uses; ``None`` if unset."""
    return load_scenario(s.model_from) if s.model_from else None


# ---------------------------------------------------------------- pydantic errors


def _describe(error: dict) -> ScenarioError:
    """One pydantic error as a ScenarioError naming the dotted key."""
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
    key = _dotted(loc) or "scenario"
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        allowed = _keys_at(Scenario, loc[:-1])
        return ScenarioError(key, None, "is not a known key", ", ".join(allowed))
    if kind == "missing":
        return ScenarioError(key, None, "is required")
    if kind in ("literal_error", "enum"):
        return ScenarioError(key, value, "is not one of the choices", error["ctx"]["expected"].replace("'", ""))
    message = error["msg"].removeprefix("Value error, ")
    return ScenarioError(key, value, message[0].lower() + message[1:])


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _keys_at(model: type, loc: tuple) -> list[str]:
    """Field names of the section found by walking ``loc`` down from ``model``."""
    node = model
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel) and isinstance(part, str):
            node = node.model_fields[part].annotation
        else:  # list item or dict value
            args = typing.get_args(_unwrap(node))
            node = args[-1] if args else node
    node = _unwrap(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unwrap(annotation):
    """``Optional[X]`` / ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation
