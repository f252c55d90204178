"""A scenario's YAML: reading it strictly (duplicate keys are errors), ``--set`` overrides on the raw
mapping (``key=value``, ``key+=value``, list items by index or id), and the resolved form written back."""

from __future__ import annotations

from pathlib import Path

import yaml

from sim.errors import ScenarioError
from sim.schema import Scenario


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
        raise ScenarioError(dotted(where) or "scenario", None, "refers to itself (a recursive YAML alias)")
    if id(node) in done:
        return
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict = {}
        for key_node, value_node in node.value:
            key = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                raise ScenarioError(dotted((*where, key[1])), None, f"is given twice, at lines {lines[key]} and {line}")
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


def dotted(loc: tuple) -> str:
    """A location as a scenario key: ``("users", 3, "snr_db")`` -> ``users[3].snr_db``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
