"""docs/check.py: every command the README and docs show parses, the cheap ones run, and the check fails
on a command that no longer works as written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_check", ROOT / "docs" / "check.py")
check = importlib.util.module_from_spec(spec)
sys.modules["docs_check"] = check  # dataclasses look their module up
spec.loader.exec_module(check)


def test_every_documented_command_works_as_written():
    found = check.commands()
    texts = [c.text for c in found]
    # the kinds of command the docs show are all found: runs, sweeps, validate, doc scripts, tables
    assert any(t.startswith("tokensim validate scenarios/cell_10users.yaml --set 'users+=") for t in texts)
    assert any(t.startswith("tokensim sweep scenarios/cell_10users.yaml --set snr_db=0,10") for t in texts)
    assert any("docs/digital/harq.py" in t for t in texts) and any("bench_table.py" in t for t in texts)
    assert check.check_all(found) == []


def test_the_check_fails_on_commands_that_no_longer_work(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `tokensim run scenarios/cell_10users.yaml --no-such-flag` or\n"
        "`PYTHONPATH=. .venv/bin/python docs/digital/harq.py --bogus 3` or `python docs/nowhere.py`.\n"
        "A synopsis `tokensim run SCENARIO [--out DIR]` and output `tokensim validate: error` are not commands.\n"
        "A span broken over lines: `tokensim run scenarios/cell_10users.yaml\n--set no.such.key=1`, a sweep\n"
        "`tokensim sweep scenarios/cell_10users.yaml --set snr_db=0,1000`, and a flag only in help text:\n"
        "`PYTHONPATH=. .venv/bin/python docs/digital/cliff.py --tables x --out y --default`.\n"
        "\n"
        "```\n"
        "$ tokensim validate scenarios/cell_10users.yaml --set tokens.image.length=9\n"
        "tokensim validate: error in scenarios/cell_10users.yaml:\n"
        "tokens.image.length: 9 is longer than the image encoder's output (4 tokens); allowed: 1..4\n"
        "something else entirely\n"
        "```\n"
    )
    found = check.commands([page])
    assert len(found) == 7
    failures = check.check_all(found)
    assert len(failures) == 7
    assert "does not parse" in failures[0] and "--no-such-flag" in failures[0]
    assert "flags not in its --help: --bogus" in failures[1]
    assert "does not exist" in failures[2]
    assert "no.such" in failures[3] and "does not validate" in failures[3]
    assert "sweep point snr_db=1000" in failures[4]
    assert "flags not in its --help: --default" in failures[5]  # "(default: --out)" is help text, not a flag
    assert "the page shows 'something else entirely'" in failures[6]  # one shown line the error lacks
