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

from pydantic import BaseModel, Tag, ValidationError

from sim.errors import ScenarioError, ScenarioErrors
from sim.scenario_checks import _short, cross_check, resolve
from sim.scenario_yaml import apply_override, dotted, read_mapping, relative_to_file
from sim.schema import Scenario


def load_scenario(path: str | Path, overrides: list[str] = ()) -> Scenario:
    """Read, override and validate a scenario file. Raises ``ScenarioError``."""
    path = Path(path)
    raw = read_mapping(path)
    for item in overrides:
        apply_override(raw, item)
    return validate_scenario(relative_to_file(raw, path))


def validate_scenario(raw: dict) -> Scenario:
    """Validate a scenario mapping; fill defaults; check cross-references."""
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        raise ScenarioErrors([_describe(e) for e in err.errors()]) from None
    errors = cross_check(scenario) + _check_model_source(scenario)
    if errors:
        raise ScenarioErrors(errors)
    return resolve(scenario)


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


def model_source(s: Scenario) -> Scenario | None:
    """The scenario named by ``model_from`` (validated), whose checkpoint this one uses; ``None`` if unset."""
    return load_scenario(s.model_from) if s.model_from else None


# ---------------------------------------------------------------- pydantic errors


def _describe(error: dict) -> ScenarioError:
    """One pydantic error as a ScenarioError naming the dotted key."""
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
    key = dotted(_walk(loc)[0]) or "scenario"
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        node = _walk(loc[:-1])[1]
        allowed = list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []
        return ScenarioError(key, None, "is not a known key", ", ".join(allowed))
    if kind == "union_tag_invalid":  # the one section that is one of several, dataset, is told apart by its name
        return ScenarioError(f"{key}.name", error["ctx"]["tag"], "is not one of the choices",
                             error["ctx"]["expected_tags"].replace("'", ""))  # fmt: skip
    if kind == "missing":
        return ScenarioError(key, None, "is required")
    if kind in ("literal_error", "enum"):
        return ScenarioError(key, value, "is not one of the choices", error["ctx"]["expected"].replace("'", ""))
    message = error["msg"].removeprefix("Value error, ")
    return ScenarioError(key, value, message[0].lower() + message[1:])


def _walk(loc: tuple) -> tuple[tuple, object]:
    """Follow an error's ``loc`` down the schema: the location without the tags pydantic adds after a field
    that is one of several sections (``("dataset", "folder", "path")`` -> ``("dataset", "path")``), and the
    section (or type) it ends at; ``None`` past a key the schema does not have."""
    node, kept = Scenario, []
    for part in loc:
        variants = _tagged(node)
        if part in variants:
            node = variants[part]
            continue
        kept.append(part)
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel) and isinstance(part, str):
            node = node.model_fields[part].annotation if part in node.model_fields else None
        else:  # list item or dict value
            args = typing.get_args(_unwrap(node))
            node = args[-1] if args else node
    return tuple(kept), _unwrap(node)


def _tagged(annotation) -> dict:
    """``{tag: section}`` of a field that is one of several tagged sections (``dataset``); else empty."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    return {
        meta.tag: typing.get_args(arg)[0]
        for arg in typing.get_args(annotation)
        if typing.get_origin(arg) is typing.Annotated
        for meta in typing.get_args(arg)[1:]
        if isinstance(meta, Tag)
    }


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
