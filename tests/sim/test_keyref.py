"""The key reference is generated from the schema: docs/keys.md must be its current output, and every key
must say what it means."""

from pathlib import Path

from sim.cli import main
from sim.keyref import key_rows, markdown
from sim.schema import Scenario

DOCS = Path(__file__).resolve().parents[2] / "docs" / "keys.md"


def test_docs_keys_md_is_the_generated_reference():
    assert DOCS.read_text() == markdown(), "docs/keys.md is stale: run `tokensim keys > docs/keys.md`"


def test_every_key_is_listed_and_described(capsys):
    rows = {r["key"]: r for r in key_rows()}
    assert not [k for k, r in rows.items() if not r["description"]]
    # leaves of every section the scenario has, in the form --set takes them
    for key in ("seed", "channel.csi", "link.harq.max_retx", "users[].snr_db", "tokens.<image|audio|text>.dim"):
        assert key in rows
    assert (
        len([k for k in rows if k.startswith("training.finetune.")])
        == len(Scenario.model_fields["training"].annotation.model_fields["finetune"].annotation.model_fields) + 2
    )  # lr_multipliers is a section of three keys
    assert rows["link.mcs"]["allowed"] == "auto; 0..28" and rows["seed"]["default"] == "0"
    assert rows["users[].id"]["default"] == "required" and "layered-oms" in rows["link.decoder"]["allowed"]
    assert rows["users"]["type"] == "list of sections" and rows["users"]["default"] == "required"
    assert rows["training.finetune.snr_db_range"]["type"] == "tuple[float, float]"  # a pair: the arity shows
    assert main(["keys"]) == 0 and '| `channel.csi` | one of | `"ls"` | perfect, ls |' in capsys.readouterr().out
