"""The README's reference tables of the results, read back so tests can hold every output key to a line."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
DATA_KEYED = {"accuracy_by_question_type", "accuracy_ci95_by_question_type"}  # keys are question types


def _table_after(marker: str) -> dict[str, str]:
    """The Markdown table after the line ``marker``: {each backticked name of a row's first cell: the row}."""
    lines = README.read_text().splitlines()
    start = lines.index(marker)
    rows = {}
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first):
            rows[name] = line
    return rows


def _names(text: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", text))


ROW_OF = {"breakdown": "latency_ms"}  # a nested dict explained in another key's row ("the terms of latency_ms")


def undocumented_metrics(metrics: dict) -> list[str]:
    """Key paths of ``metrics`` (list items as ``[]``) that the README's ``metrics.json`` table does not
    name: a top-level key must head a row; a nested key must be named in the row of the nearest key above
    it that heads a row of its own (``users[].link.mcs`` in the ``link`` row, ``users[].tasks`` in the
    ``users`` row)."""
    table = _table_after("`metrics.json`:")
    missing = []

    def walk(value, path: list[str], top: str):
        if isinstance(value, dict):
            for key, inner in value.items():
                check(path + [str(key)], top)
                if key not in DATA_KEYED:
                    walk(inner, path + [str(key)], top)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                walk(item, path, top)

    def check(path: list[str], top: str):
        owner = top
        for name in path[:-1]:  # the nearest enclosing key with a row of its own
            name = ROW_OF.get(name, name)
            owner = name if name in table else owner
        if path[-1] not in _names(table[owner]):
            missing.append(".".join([top, *path]))

    for key, value in metrics.items():
        if key not in table:
            missing.append(key)
        elif key not in DATA_KEYED:
            walk(value, [], key)
    return sorted(set(missing))


def undocumented_columns(per_task_header: list[str], per_user_header: list[str], metrics: dict) -> list[str]:
    """CSV columns the README does not explain: ``per_task.csv``'s in its table, ``per_user.csv``'s as a
    ``users`` key of ``metrics.json`` or in the paragraph on ``per_user.csv``."""
    per_task = _table_after("`per_task.csv`, one row per test task:")
    text = README.read_text()
    paragraph = text[text.index("`per_user.csv` has one row per user") :].split("\n\n")[0]
    user_keys = {k for u in metrics["users"] for k in u}
    user_keys |= {f"link_{k}" for u in metrics["users"] for k in u.get("link", {})}
    missing = [f"per_task.csv:{c}" for c in per_task_header if c not in per_task]
    named = _names(paragraph)
    missing += [
        f"per_user.csv:{c}"
        for c in per_user_header
        if c not in user_keys and c not in named and not (c.startswith("link_") and "link_<key>" in named)
    ]
    return missing
