"""The scenario key reference, generated from the schema: every key with its type, default, allowed
values and description (``tokensim keys``; ``docs/keys.md`` is its output, and a test keeps the two equal).

Written here rather than taken from pydantic's JSON schema: that schema names types in JSON's terms
(``number``, ``anyOf``) and buries nested sections under ``$defs``, while a scenario author wants the dotted
key they type after ``--set`` and the bounds in the form the error messages use.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel

from sim.schema import Scenario

_BOUNDS = ((Ge, "≥", "ge"), (Gt, ">", "gt"), (Le, "≤", "le"), (Lt, "<", "lt"))


def _decoders() -> str:
    from sim.phy.tb_decoders import DEFAULT_TB_DECODER, TB_DECODERS

    return ", ".join(TB_DECODERS) + f" (null: {DEFAULT_TB_DECODER})"


# keys whose values a registry holds (checked by the scenario's cross-checks, not by their type)
_REGISTRIES = {"link.decoder": _decoders}


def key_rows(model: type[BaseModel] = Scenario, prefix: str = "") -> list[dict[str, str]]:
    """One row per leaf key of ``model``, depth first in the schema's order: ``key``, ``type``,
    ``default``, ``allowed`` and ``description``. A list of sections is ``key[]``, a mapping of sections
    ``key.<name>``; a section with a description of its own also gets a row."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        variants = _variants(field.annotation)
        if variants:
            rows.extend(_variant_rows(key, field, variants))
            continue
        section, suffix = _section(field.annotation)
        if section is not None:
            if field.description or field.is_required():
                kind = "list of sections" if suffix == "[]" else "section"
                allowed = _allowed(field) if suffix == "[]" else ""
                rows.append(_row(key, kind, _default(field) if field.is_required() else "", allowed,
                                 field.description or ""))  # fmt: skip
            rows.extend(key_rows(section, f"{key}{suffix}."))
            continue
        allowed = "; ".join(filter(None, [_allowed(field), _REGISTRIES.get(key, lambda: "")()]))
        rows.append(_row(key, _type_name(field.annotation), _default(field), allowed, field.description or ""))
    return rows


def _variants(annotation) -> list[type[BaseModel]]:
    """The sections a field may be one of (``dataset``: one per data set), or [] for any other field."""
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    sections = [_section(a)[0] for a in typing.get_args(annotation)]
    return sections if all(sections) else []


def _variant_rows(key: str, field, variants: list[type[BaseModel]]) -> list[dict[str, str]]:
    """A field that is one of several sections, told apart by a literal key they share (``dataset.name``):
    that key once, allowing every variant, then each variant's other keys, the description saying whose."""
    tag = next(n for n in variants[0].model_fields if all(_literals(v.model_fields[n].annotation) for v in variants))
    names = [_literals(v.model_fields[tag].annotation)[0][0] for v in variants]
    rows = [_row(key, "section", "", "", field.description)] if field.description else []
    for name, variant in zip(names, variants):
        for row in key_rows(variant, f"{key}."):
            if row["key"] != f"{key}.{tag}":
                rows.append(row | {"description": f"{tag}: {name}. {row['description']}"})
            elif name == names[0]:
                rows.append(row | {"allowed": ", ".join(names)})
    return rows


def _row(key, type_, default, allowed, description) -> dict[str, str]:
    return {"key": key, "type": type_, "default": default, "allowed": allowed, "description": description}


def _section(annotation) -> tuple[type[BaseModel] | None, str]:
    """The section model a field holds (itself, a list of them, a mapping to them), and the key's suffix."""
    annotation = _strip_none(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _section(args[0])
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        keys = typing.get_args(_strip_annotated(args[0]))
        return args[1], ".<" + ("|".join(map(str, keys)) if keys else _type_name(args[0])) + ">"
    return None, ""


def _strip_annotated(annotation):
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def _strip_none(annotation):
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is Literal:
        kinds = {type(a).__name__ for a in args}
        return "one of" if kinds == {"str"} else " or ".join(sorted(kinds))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:  # fixed length: one type per element
        return f"tuple[{', '.join(_type_name(a) for a in args if a is not Ellipsis)}]"
    if origin is list:
        return f"list[{', '.join(sorted({_type_name(a) for a in args}))}]"
    if origin is dict:
        return f"mapping[{_type_name(args[0])}, {_type_name(args[1])}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, default=str, ensure_ascii=False)


def _allowed(field) -> str:
    """Literal values and numeric or length bounds, of the field and of the items or elements it holds."""
    parts = []
    for literal in _literals(field.annotation):
        parts.append(", ".join(map(str, literal)))
    bounds = list(field.metadata) + _inner_metadata(field.annotation)
    unit = "character(s)" if _strip_none(field.annotation) is str else "item(s)"
    for kind, sign, attr in _BOUNDS:
        for meta in bounds:
            if isinstance(meta, kind):
                parts.append(f"{sign} {_number(getattr(meta, attr))}")
    for meta in bounds:
        if isinstance(meta, MinLen):
            parts.append(f"at least {meta.min_length} {unit}")
        elif isinstance(meta, MaxLen):
            parts.append(f"at most {meta.max_length} {unit}")
        elif getattr(meta, "pattern", None):
            parts.append(f"matches `{meta.pattern}`")
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "allowed" in extra:
        parts.append(extra["allowed"])
    return "; ".join(dict.fromkeys(parts))  # a tuple's elements share their bounds: each once


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _literals(annotation) -> list[tuple]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return [args]
    return [lit for a in args for lit in _literals(a)] if args else []


def _inner_metadata(annotation) -> list:
    """Bounds of ``Annotated`` types inside a field's type (``SnrDb``, ``list[Annotated[float, ...]]``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        out = []
        for meta in args[1:]:
            out.extend(getattr(meta, "metadata", [meta]))
        return out + _inner_metadata(args[0])
    return [m for a in args for m in _inner_metadata(a)] if args else []


def markdown() -> str:
    """The reference as Markdown: what ``tokensim keys`` prints and ``docs/keys.md`` holds."""
    lines = [
        "# Scenario keys",
        "",
        "Generated from the schema by `tokensim keys > docs/keys.md` (`tests/sim/test_keyref.py` fails when",
        "the two differ). A key is what `--set` takes: `users[]` items go by index or id (`users.cam1.snr_db`),",
        "`tokens.<modality>` by modality (`tokens.image.length`). `tokensim validate SCENARIO` prints a",
        "scenario's values.",
        "",
        "| key | type | default | allowed | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in key_rows():
        cells = [f"`{row['key']}`", row["type"], f"`{row['default']}`" if row["default"] else ""]
        cells += [row["allowed"], row["description"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
