"""The scenario schema: defaults, overrides, and clear errors for bad input."""

from __future__ import annotations

import pytest

from sim.cli import main
from sim.errors import ScenarioError
from sim.scenario import load_scenario, validate_scenario
from sim.scenario_yaml import apply_override, resolved_yaml
from tests.conftest import ROOT


def test_default_scenario_resolves_every_default():
    s = load_scenario(ROOT / "scenarios" / "cell_10users.yaml")
    assert len(s.users) == 10 and len(s.groups) == 4
    assert s.cell.num_prbs == 24  # 10 MHz at 30 kHz, TS 38.101-1
    assert {u.group for u in s.users} == {g.id for g in s.groups}
    assert all(u.device_gflops == s.compute.device_gflops for u in s.users)
    assert any(len(u.modalities) == 2 for u in s.users)
    snrs = [u.snr_db for u in s.users]
    assert min(snrs) <= -5 and max(snrs) >= 20
    text = resolved_yaml(s)
    for key in ("dataset:", "training:", "lora:", "deadline_ms:", "pilot_ofdm_symbol_indices:", "num_prbs: 24"):
        assert key in text
    assert validate_scenario(__import__("yaml").safe_load(text)) == s  # the resolved form validates to itself


def test_overrides_by_dotted_key_index_and_id(tiny):
    apply_override(tiny, "channel.model=tdl-c")
    apply_override(tiny, "users.cam1.snr_db=-2.5")
    apply_override(tiny, "users.0.snr_db=7")
    apply_override(tiny, "cell.pilot_ofdm_symbol_indices=[3]")
    s = validate_scenario(tiny)
    assert s.channel.model == "tdl-c" and s.user("cam1").snr_db == -2.5 and s.user("q1").snr_db == 7
    assert s.cell.pilot_ofdm_symbol_indices == [3]
    apply_override(tiny, "snr_db=4")
    assert {u.snr_db for u in validate_scenario(tiny).users} == {4}


def test_overrides_append_users_and_groups(tiny):
    apply_override(tiny, "users+={id: q3, modalities: [text], snr_db: 3}")
    apply_override(tiny, "users+={id: cam3, modalities: [image], snr_db: -1}")
    apply_override(tiny, "groups+={id: c, users: [q3]}")
    apply_override(tiny, "groups.c.users+=cam3")
    apply_override(tiny, "scheduler.policy=round-robin")  # 7 users on 6 PRBs share them over slots
    s = validate_scenario(tiny)
    assert [u.id for u in s.users][-2:] == ["q3", "cam3"] and s.user("cam3").snr_db == -1
    assert s.user("cam3").group == "c" and [g.id for g in s.groups] == ["a", "b", "c"]
    with pytest.raises(ScenarioError, match=r"channel\.model\+.*not a list"):
        apply_override(tiny, "channel.model+=tdl-a")


def _error(raw) -> str:
    with pytest.raises(ScenarioError) as info:
        validate_scenario(raw)
    return str(info.value)


BAD = [
    # (what, edit of the tiny scenario, texts the message must contain)
    ("unknown key", lambda s: s["channel"].update(modle="tdl-a"), ["channel.modle", "not a known key", "model"]),
    ("unknown top-level key", lambda s: s.update(userz=[]), ["userz", "users"]),
    ("wrong type", lambda s: s["users"][1].update(snr_db="loud"), ["users[1].snr_db", "'loud'", "number"]),
    (
        "unknown channel model",
        lambda s: s["channel"].update(model="tdl-z"),
        ["channel.model", "'tdl-z'", "tdl-a", "rayleigh"],
    ),
    ("empty users", lambda s: s.update(users=[]), ["users", "at least 1"]),
    (
        "group naming a missing user",
        lambda s: s["groups"][1]["users"].append("ghost"),
        ["groups[1].users[2]", "'ghost'", "is not a user", "q1, cam1"],
    ),
    (
        "token length over the encoder's output",
        lambda s: s["tokens"]["image"].update(length=9),
        ["tokens.image.length", "9", "4 tokens", "1..4"],
    ),
    ("negative dimension", lambda s: s["tokens"]["audio"].update(dim=-4), ["tokens.audio.dim", "-4", "greater than 0"]),
    ("odd dimension", lambda s: s["tokens"]["text"].update(dim=7), ["tokens.text.dim", "7", "even"]),
    (
        "missing data package",
        lambda s: s["dataset"].update(fashion_mnist_dir="/nonexistent/fmnist"),
        ["dataset.fashion_mnist_dir", "/nonexistent/fmnist", "apt-get install dataset-fashion-mnist"],
    ),
    (
        "missing espeak-ng",
        lambda s: s["dataset"].update(espeak_ng="no-such-espeak"),
        ["dataset.espeak_ng", "no-such-espeak", "apt-get install espeak-ng"],
    ),
    (
        "user in two groups",
        lambda s: s["groups"][1]["users"].append("cam1"),
        ["groups[1].users[2]", "'cam1'", "already in group"],
    ),
    ("group without the question", lambda s: s["groups"][1]["users"].remove("q2"), ["groups[1].users", "'text'"]),
    (
        "two senders of one modality",
        lambda s: s["groups"][0]["users"].append("both2") or s["groups"][1]["users"].remove("both2"),
        ["groups[0].users[3]", "'both2'", "one sender per modality"],
    ),
    (
        "user in no group",
        lambda s: s["users"].append({"id": "idle", "modalities": ["text"], "snr_db": 1}),
        ["users[5].id", "'idle'", "no group"],
    ),
    ("duplicate user id", lambda s: s["users"].append(dict(s["users"][0])), ["users[5].id", "'q1'", "another user"]),
    (
        "bandwidth not in 3GPP tables",
        lambda s: s["cell"].update(num_prbs=None, bandwidth_hz=12e6),
        ["cell.bandwidth_hz", "12000000.0", "3GPP", "10e6"],
    ),
    (
        "subcarrier spacing",
        lambda s: s["cell"].update(subcarrier_spacing_hz=20e3),
        ["cell.subcarrier_spacing_hz", "20000", "30000"],
    ),
    (
        "unknown question type",
        lambda s: s["dataset"].update(question_types=["image_item", "color"]),
        ["dataset.question_types", "'color'", "speech_item"],
    ),
    (
        "unknown modality",
        lambda s: s["users"][0].update(modalities=["smell"]),
        ["users[0].modalities[0]", "'smell'", "image"],
    ),
    (
        "backbone path",
        lambda s: s["models"].update(backbone="/no/model/here"),
        ["models.backbone", "/no/model/here", "config.json"],
    ),
    (
        "snr range order",
        lambda s: s["training"]["finetune"].update(snr_db_range=[10, -10]),
        ["training.finetune.snr_db_range", "low <= high"],
    ),
    ("device", lambda s: s.update(device="tpu"), ["device", "'tpu'", "auto"]),
    ("link mode", lambda s: s.update(link={"mode": "qam"}), ["link.mode", "'qam'", "analog or digital"]),
    ("MCS index", lambda s: s.update(link={"mode": "digital", "mcs": 31}), ["link.mcs", "31", "0..28"]),
    (
        "MCS below the LDPC code's lowest rate",
        lambda s: s.update(link={"mode": "digital", "mcs": 1}),
        ["link.mcs", "1", "rate >= 1/5", "auto"],
    ),
    (
        "LDPC decoder",
        lambda s: s.update(link={"mode": "digital", "decoder": "magic"}),
        ["link.decoder", "'magic'", "sionna-bp"],
    ),
    # every number finite and in a physical range
    ("NaN SNR", lambda s: s.update(snr_db=float("nan")), ["snr_db", "nan", "finite"]),
    ("NaN SNR as text", lambda s: s.update(snr_db="nan"), ["snr_db", "'nan'", "finite"]),
    ("infinite user SNR", lambda s: s["users"][1].update(snr_db=float("inf")), ["users[1].snr_db", "inf", "finite"]),
    ("absurd SNR", lambda s: s.update(snr_db=1e9), ["snr_db", "1000000000.0", "less than or equal to 100"]),
    ("SNR far below noise", lambda s: s["users"][0].update(snr_db=-150), ["users[0].snr_db", "-150", "-100"]),
    ("negative seed", lambda s: s.update(seed=-1), ["seed", "-1", "greater than or equal to 0"]),
    ("huge seed", lambda s: s.update(seed=2**40), ["seed", str(2**40), f"less than {2**32}"]),
    (
        "negative data seed",
        lambda s: s["dataset"].update(seed=-3),
        ["dataset.seed", "-3", "greater than or equal to 0"],
    ),
    ("speed of a rocket", lambda s: s["channel"].update(speed_mps=3e8), ["channel.speed_mps", "300000000.0", "500"]),
    (
        "negative frequency",
        lambda s: s["cell"].update(carrier_frequency_hz=-3.5e9),
        ["cell.carrier_frequency_hz", "-3"],
    ),
    (
        "infinite training SNR",
        lambda s: s["training"]["finetune"].update(snr_db_range=[-10, float("inf")]),
        ["training.finetune.snr_db_range[1]", "finite"],
    ),
    (
        "NaN learning rate",
        lambda s: s["training"]["finetune"].update(lr=float("nan")),
        ["training.finetune.lr", "finite"],
    ),
    (
        "NaN delay spread",
        lambda s: s["channel"].update(delay_spread_s=float("nan")),
        ["channel.delay_spread_s", "finite"],
    ),
    ("NaN position", lambda s: s["users"][0].update(position_m=[0, float("nan"), 1.5]), ["users[0].position_m[1]"]),
    (
        "underground user",
        lambda s: s.update(channel={"model": "umi"}) or s["users"][0].update(snr_db=None, position_m=[10, 0, -5]),
        ["users[0].position_m", "underground"],
    ),
    ("negative path loss", lambda s: s["users"][0].update(pathloss_db=-100), ["users[0].pathloss_db", "-100"]),
    ("huge data seed", lambda s: s["dataset"].update(seed=2**32), ["dataset.seed", str(2**32)]),
    ("speech noise SNR", lambda s: s["dataset"].update(noise_snr_db=[5, 1e6]), ["dataset.noise_snr_db[1]", "100"]),
    ("user power", lambda s: s.update(radio={"ut_max_power_dbm": 300}), ["radio.ut_max_power_dbm", "300", "60"]),
    ("bandwidth", lambda s: s["cell"].update(num_prbs=None, bandwidth_hz=1e12), ["cell.bandwidth_hz", "2000000000"]),
    ("delay spread", lambda s: s["channel"].update(delay_spread_s=1.0), ["channel.delay_spread_s", "1.0"]),
    ("far user", lambda s: s["users"][0].update(distance_m=1e7), ["users[0].distance_m", "100000"]),
    ("carrier above FR2", lambda s: s["cell"].update(carrier_frequency_hz=1e11), ["cell.carrier_frequency_hz", "71"]),
]


@pytest.mark.parametrize("what, edit, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_scenario_names_key_value_and_allowed(tiny, what, edit, expected):
    edit(tiny)
    message = _error(tiny)
    for text in expected:
        assert text in message, f"{what}: {text!r} not in {message!r}"


def test_all_problems_reported_at_once(tiny):
    tiny["channel"]["model"] = "nope"
    tiny["tokens"]["image"]["dim"] = -2
    message = _error(tiny)
    assert "channel.model" in message and "tokens.image.dim" in message


def test_bad_override_and_file(tiny, tmp_path):
    with pytest.raises(ScenarioError, match="dotted.key=value"):
        apply_override(tiny, "channel.model")
    with pytest.raises(ScenarioError, match="neither an index nor an id"):
        apply_override(tiny, "users.nobody.snr_db=3")
    with pytest.raises(ScenarioError, match="is not a file"):
        load_scenario(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(tmp_path / "broken.yaml")


def test_a_place_whose_link_budget_leaves_the_snr_range_is_refused_naming_the_user():
    """The SNR a placed user's geometry gives must lie in the range a written snr_db must: a resolved
    scenario always reloads."""
    with pytest.raises(ScenarioError, match=r"users\[0\]: 'phone1' is placed where its link budget gives an SNR of"):
        load_scenario(
            ROOT / "scenarios" / "cell_geometry.yaml", ["users.0.distance_m=90000", "radio.ut_max_power_dbm=-40"]
        )
    near = load_scenario(ROOT / "scenarios" / "cell_geometry.yaml", ["users.0.distance_m=11"])
    assert validate_scenario(__import__("yaml").safe_load(resolved_yaml(near))) == near


def test_yaml_is_read_strictly(tmp_path):
    """A key given twice, a file that is not UTF-8, an empty file, a list: one clean error each."""
    twice = tmp_path / "twice.yaml"
    for text, message in (
        ("name: x\nseed: 0\nchannel:\n  model: tdl-a\n  csi: ls\n  model: rayleigh\nseed: 5\n",
         r"channel.model: is given twice, at lines 4 and 6"),
        ("name: x\nseed: 0\nusers: []\nseed: 5\n", r"seed: is given twice, at lines 2 and 4"),
        ("name: x\ncell: {num_prbs: 10, num_prbs: 20}\n", r"cell.num_prbs: is given twice, at lines 2 and 2"),
        ("name: x\ncell: &c {pilot_ofdm_symbol_indices: [2], x: *c}\n", r"cell.x: refers to itself"),
    ):  # fmt: skip
        twice.write_text(text)
        with pytest.raises(ScenarioError, match=message):
            load_scenario(twice)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScenarioError, match=r"is not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_scenario(latin)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    with pytest.raises(ScenarioError, match="is empty"):
        load_scenario(empty)
    listed = tmp_path / "list.yaml"
    listed.write_text("- name: x\n")
    with pytest.raises(ScenarioError, match="must be a mapping of keys to values, not a list"):
        load_scenario(listed)


@pytest.mark.parametrize("body", [b"seed: 1\nseed: 2\n", b"\xff\xfe", b"", b"[1, 2]"])
def test_cli_reports_a_bad_file_in_one_line_without_a_traceback(tmp_path, capsys, body):
    path = tmp_path / "bad.yaml"
    path.write_bytes(body)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_cli_validate_reports_errors_with_exit_code_2(tiny, write_scenario, capsys):
    tiny["channel"]["model"] = "tdl-z"
    path = write_scenario(tiny)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "channel.model: 'tdl-z'" in err
    assert main(["validate", str(path), "--set", "channel.model=rayleigh"]) == 0
    assert "model: rayleigh" in capsys.readouterr().out


def test_top_level_snr_stands_in_for_every_user(tiny):
    from sim.scenario import validate_scenario

    for user in tiny["users"]:
        del user["snr_db"]
    with pytest.raises(ScenarioError) as err:
        validate_scenario(tiny)
    assert "users[0].snr_db: is required unless the top-level snr_db is set" in str(err.value)
    tiny["snr_db"] = 7
    assert [u.snr_db for u in validate_scenario(tiny).users] == [7] * 5


def test_model_from_on_the_command_line_is_the_scenario_files_like_in_the_file(
    tiny, write_scenario, tmp_path, monkeypatch, capsys
):
    from sim.sweep import load_sweep

    source = write_scenario(tiny, "source.yaml")
    path = write_scenario({**tiny, "name": "borrower"}, "borrower.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the scenario's folder: a cwd-relative model_from would not be found
    assert main(["validate", str(path), "--set", "model_from=source.yaml"]) == 0, capsys.readouterr().err
    assert f"model_from: {source.resolve()}" in capsys.readouterr().out
    (point,) = load_sweep(path, ["model_from=source.yaml"]).points()
    assert point.error is None and point.scenario.model_from == str(source.resolve())
