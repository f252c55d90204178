"""What one field of the schema cannot check alone (references, group makeup, token sizes, what the digital
link can code), and the resolution that fills in what follows from other keys (replicas, PRBs, groups,
SNRs from geometry). Pure: nothing here reads another scenario file (``model_from`` is checked by
:func:`sim.scenario.validate_scenario`)."""

from __future__ import annotations

from pydantic import BaseModel

from models.config import (
    MODALITIES,
)
from models.data.splits import SPLITS
from sim.errors import ScenarioError
from sim.mac import SCHEDULER_POLICIES
from sim.mac.allocation import EqualShare
from sim.phy.numerology import (
    MAX_NUM_PRBS,
    num_prbs_for_bandwidth,
)
from sim.schema import LinkConfig, Scenario
from sim.topology import geometry_errors, is_placed, resolve_geometry


def cross_check(s: Scenario) -> list[ScenarioError]:
    """What one field cannot check alone: references, group makeup, token sizes."""
    from models.encoders import encoder_output_shape, resolve_model_path

    errors, dataset = _open_dataset(s)
    ids = [u.id for u in s.users]
    users = s.users_by_id()
    for i, uid in enumerate(ids):
        if users[uid] is not s.users[i]:
            errors.append(ScenarioError(f"users[{i}].id", uid, "is used by another user"))

    group_of: dict[str, str] = {}
    group_ids = [g.id for g in s.groups]
    for gi, group in enumerate(s.groups):
        if group_ids.index(group.id) != gi:
            errors.append(ScenarioError(f"groups[{gi}].id", group.id, "is used by another group"))
        senders: dict[str, str] = {}
        for ui, uid in enumerate(group.users):
            key = f"groups[{gi}].users[{ui}]"
            if uid not in users:
                errors.append(ScenarioError(key, uid, "is not a user", ", ".join(ids)))
                continue
            if uid in group_of:
                errors.append(ScenarioError(key, uid, f"is already in group {group_of[uid]!r}; a user is in one group"))
                continue
            group_of[uid] = group.id
            for m in users[uid].modalities:
                if m in senders:
                    errors.append(
                        ScenarioError(key, uid, f"sends {m!r} like {senders[m]!r}; a group has one sender per modality")
                    )
                senders[m] = uid
        if "text" not in senders:
            errors.append(
                ScenarioError(f"groups[{gi}].users", group.users, "has no user sending 'text' (the question)")
            )
        elif dataset is not None:  # a data set that does not open has no questions to check against
            errors += _unanswerable(s, dataset, gi, senders.keys())
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
    if dataset is not None:
        errors += _missing_items(s, dataset)

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
    if s.traffic.arrival == "poisson" and s.traffic.rate_per_s is None:
        errors.append(ScenarioError("traffic.rate_per_s", None, "is required with traffic.arrival: poisson"))
    if s.link.mode == "digital":
        share = EqualShare(num_prbs, num_users, len(cell.pilot_ofdm_symbol_indices))
        errors += _check_digital_link(s.link, share.prbs_per_user, len(cell.pilot_ofdm_symbol_indices))
    return errors


def _open_dataset(s: Scenario) -> tuple[list[ScenarioError], object | None]:
    """The scenario's data set, or what keeps it from opening: fashion-avqa's Debian packages missing,
    or everything wrong with a folder set's tasks.jsonl and files (one error per problem)."""
    from models.data import DATASETS, DataFolderError, MissingDataError

    try:
        return [], DATASETS[s.dataset.name](s.dataset)
    except MissingDataError as err:
        problem = f"{err.problem}; install with: sudo apt-get install {err.package}"
        return [ScenarioError(err.key, str(err.value), problem)], None
    except DataFolderError as err:
        errors = [
            ScenarioError("dataset.path", str(err.folder) if p.line is None else None, str(p)) for p in err.problems
        ]
        if err.more:
            errors.append(ScenarioError("dataset.path", None, f"and {err.more} more problems"))
        return errors, None


def _unanswerable(s: Scenario, dataset, gi: int, senders) -> list[ScenarioError]:
    """An error if group ``gi``, sending ``senders``, can answer no question of some split."""
    needs = dataset.question_needs
    for split in SPLITS:
        asked = dataset.question_types_in(split)
        if not any(needs[q] <= senders for q in asked):
            # fashion-avqa asks every type in every split; a folder set's types are those of its tasks
            where = "dataset.question_types" if s.dataset.name == "fashion-avqa" else f"the {split} tasks"
            return [ScenarioError(f"groups[{gi}].users", s.groups[gi].users,
                                  f"sends too little to answer any of {where}", ", ".join(asked))]  # fmt: skip
    return []


def _missing_items(s: Scenario, dataset) -> list[ScenarioError]:
    """An error per modality users send that a split holds none of (a folder set may have no clips)."""
    errors = []
    for m in ("image", "audio"):
        senders = [u.id for u in s.users if m in u.modalities]
        empty = [split for split in SPLITS if senders and not dataset.num_items(split, m)]
        if empty:
            errors.append(ScenarioError("dataset.path", None, f"has no {m} in its {' and '.join(empty)} tasks, "
                                        f"which {', '.join(senders)} send(s)"))  # fmt: skip
    return errors


def _short(value):
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _check_digital_link(link: LinkConfig, prbs_per_user: int, num_pilot_symbols: int) -> list[ScenarioError]:
    """A fixed MCS must be one Sionna can code on each user's PRBs and abstract; decoders must exist."""
    from sim.phy.digital import usable_mcs
    from sim.phy.tb_decoders import TB_DECODERS

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


def resolve(s: Scenario) -> Scenario:
    """Fill in what follows from other keys: copies of the cell, PRBs, groups and SNRs of users."""
    _replicate(s)
    if s.cell.num_prbs is None:
        s.cell.num_prbs = (
            num_prbs_for_bandwidth(s.cell.bandwidth_hz, s.cell.subcarrier_spacing_hz)
            if s.cell.bandwidth_hz is not None
            else 24
        )
    users = s.users_by_id()
    for group in s.groups:
        for uid in group.users:
            users[uid].group = group.id
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
