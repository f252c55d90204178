"""Property-based fuzzing of the scenario schema, ``--set`` and the YAML reader (hypothesis).

Every input either validates or raises a ``ScenarioError`` that names a key; nothing else escapes. The
profile is fixed (derandomised, a bounded number of examples) so that CI runs the same cases each time.
"""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import ScenarioError
from sim.scenario import load_scenario, validate_scenario
from sim.scenario_yaml import apply_override, resolved_yaml
from tests.conftest import ROOT

PROFILE = settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DEFAULT_TEXT = (ROOT / "scenarios" / "cell_10users.yaml").read_text()
RESOLVED = yaml.safe_load(resolved_yaml(load_scenario(ROOT / "scenarios" / "cell_10users.yaml")))


def _keys(node, prefix=()) -> list[str]:
    """Every dotted key of a resolved scenario, leaves and sections, list items by index."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        dotted = (*prefix, str(k))
        found.append(".".join(dotted))
        found += _keys(v, dotted)
    return found


KEYS = sorted(set(_keys(RESOLVED)))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "tdl-a", "ls", "digital", "text", "nan", ".inf", "1e400", "-0", "[]", "{}"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _check(raw) -> None:
    """Validates, or raises a ScenarioError whose every problem names a key of the scenario (not just
    "scenario")."""
    try:
        validate_scenario(raw)
    except ScenarioError as err:
        problems = getattr(err, "errors", [err])
        assert all(e.key and e.key != "scenario" for e in problems), str(err)


@PROFILE
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_at_any_key_validates_or_names_the_key(key, value):
    raw = copy.deepcopy(RESOLVED)
    try:
        apply_override(raw, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    except ScenarioError:
        return
    _check(raw)


@PROFILE
@given(item=st.one_of(st.text(max_size=40), st.builds("{}={}".format, st.sampled_from(KEYS), st.text(max_size=20))))
def test_any_set_item_is_applied_or_refused_cleanly(item):
    raw = copy.deepcopy(RESOLVED)
    try:
        apply_override(raw, item)
    except ScenarioError:
        return
    _check(raw)


EDITS = st.lists(
    st.tuples(st.sampled_from(["delete", "insert", "duplicate", "swap"]), st.integers(0, 10**6), st.text(max_size=3)),
    min_size=1,
    max_size=4,
)


@PROFILE
@given(edits=EDITS)
def test_random_edits_of_the_default_yaml_load_or_fail_cleanly(tmp_path_factory, edits):
    text = DEFAULT_TEXT
    for kind, where, chars in edits:
        lines = text.splitlines(keepends=True)
        at = where % max(len(text), 1)
        if kind == "delete":
            text = text[:at] + text[at + 1 + len(chars) :]
        elif kind == "insert":
            text = text[:at] + chars + text[at:]
        elif kind == "duplicate" and lines:
            i = where % len(lines)
            text = "".join(lines[: i + 1] + lines[i:])
        elif kind == "swap" and len(lines) > 1:
            i = where % (len(lines) - 1)
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
            text = "".join(lines)
    path = tmp_path_factory.mktemp("fuzz") / "scenario.yaml"
    path.write_text(text)
    try:
        load_scenario(path)
    except ScenarioError as err:  # the file's problem ("scenario: <path> ...") or a key's
        problems = getattr(err, "errors", [err])
        assert all(e.key != "scenario" or str(path) in str(e) for e in problems), str(err)
