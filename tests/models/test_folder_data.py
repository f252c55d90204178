"""The ``folder`` data set's reader: what it makes of tasks.jsonl and its files, and what it says of bad ones."""

from __future__ import annotations

import io
import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from models.data import DataFolderError, FolderConfig, FolderDataset
from models.data.tasks_file import MAX_PROBLEMS, read_image, read_wav


def write_png(path: Path, rgb) -> None:
    from PIL import Image

    Image.fromarray(np.full((20, 30, 3), rgb, np.uint8)).save(path)


def write_wav(path: Path, samples: np.ndarray, rate_hz: int = 8000, width: int = 2, channels: int = 1) -> None:
    """PCM WAV of ``samples`` [T] in [-1, 1), on every channel, at ``width`` bytes per sample."""
    ints = np.round(np.repeat(samples, channels) * 2.0 ** (8 * width - 1)).astype("<i4")
    data = (ints + 128).astype(np.uint8).tobytes() if width == 1 else ints.view(np.uint8).reshape(-1, 4)[:, :width]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate_hz)
        w.writeframes(bytes(data) if width == 1 else data.tobytes())


def write_folder(root: Path, lines: list) -> Path:
    """``root`` with tasks.jsonl holding ``lines`` (dicts as JSON, strings as they are) and a few good files:
    a red and a blue picture, a tone, and a float WAV (which tokensim does not read)."""
    root.mkdir(parents=True, exist_ok=True)
    write_png(root / "red.png", (255, 0, 0))
    write_png(root / "blue.png", (0, 0, 255))
    write_wav(root / "tone.wav", 0.5 * np.sin(np.arange(4000) / 5.0))
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)  # IEEE float, mono, 8 kHz
    body = np.zeros(100, "<f4").tobytes()
    (root / "float.wav").write_bytes(
        b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", len(body)) + body
    )  # fmt: skip
    (root / "notes.png").write_text("not a picture")
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    (root / "tasks.jsonl").write_text("\n".join(text) + "\n")
    return root


def task(split, answer, question="What is shown?", **files) -> dict:
    return {"split": split, "question": question, "answer": answer, **files}


def problems_of(folder: Path) -> list:
    with pytest.raises(DataFolderError) as error:
        FolderDataset(FolderConfig(name="folder", path=folder))
    return error.value.problems


def test_bad_lines_give_errors_naming_the_line_and_the_field(tmp_path, write_scenario, tiny, capsys):
    lines = [
        task("train", "red", image="red.png", audio="tone.wav", caption="a red square"),  # 1: good
        "",  # 2: a blank line, skipped and counted
        '{"split": "train", "question": "What is shown?"',  # 3: not JSON
        '["train", "What is shown?", "red"]',  # 4: not an object
        {"split": "train", "question": "What is shown?"},  # 5: no answer
        task("dev", "red"),  # 6: no such split
        task("train", "blue", image="missing.png"),  # 7: no such file
        task("train", "blue", image="notes.png"),  # 8: not a picture
        task("train", "blue", audio="red.png"),  # 9: not a WAV file
        task("train", "blue", question=42),  # 10: not a string
        task("train", "blue", colour="red"),  # 11: no such field
        task("validation", "green"),  # 12: an answer no train task has
        task("test", "red", audio="float.wav"),  # 13: a WAV of floats, not PCM
        task("test", "blue", image="blue.png"),  # 14: good ("blue" is a train answer, on faulty lines too)
    ]
    found = problems_of(write_folder(tmp_path / "bad", lines))
    expected = {
        (3, None): "is not valid JSON (Expecting ',' delimiter",
        (4, None): "is a JSON list, not an object of fields",
        (5, "answer"): "is required",
        (6, "split"): "'dev' is not one of train, validation, test",
        (7, "image"): "'missing.png' does not exist",
        (8, "image"): "'notes.png' is not a readable image (Pillow does not know its format)",
        (9, "audio"): "'red.png' is not a readable WAV file",
        (10, "question"): "must be a non-empty string, not 42",
        (11, "colour"): "is not a field of a task; allowed: split, question, answer, image, audio, caption",
        (12, "answer"): "'green' is the answer of no train task",
        (13, "audio"): "'float.wav' is not a readable WAV file (unknown format: 3)",
    }
    assert [(p.line, p.field) for p in found] == list(expected)  # every fault, in the order of the lines
    for p in found:
        where = f"tasks.jsonl line {p.line}: " + (f"{p.field}: " if p.field else "")
        assert str(p).startswith(where + expected[p.line, p.field]), str(p)

    # `tokensim validate` reports every one of them, each on its line, and exits 2
    scenario = tiny | {"dataset": {"name": "folder", "path": str(tmp_path / "bad")}}
    assert main_validate(write_scenario(scenario)) == 2
    err = capsys.readouterr().err
    for p in found:
        assert f"dataset.path: {p}" in err.splitlines()


def main_validate(path) -> int:
    from sim.cli import main

    return main(["validate", str(path)])


def test_problems_past_the_first_fifty_are_counted_and_the_splits_checked(tmp_path):
    found = problems_of(write_folder(tmp_path / "many", [{"split": "train"}] * 60))
    with pytest.raises(DataFolderError) as error:
        FolderDataset(FolderConfig(name="folder", path=tmp_path / "many"))
    # two fields missing on each of 60 lines, and no validation or test task: 121 problems, 50 listed
    assert len(found) == MAX_PROBLEMS and error.value.more == 121 - MAX_PROBLEMS
    assert str(error.value).endswith(f"and {121 - MAX_PROBLEMS} more")
    assert str(problems_of(write_folder(tmp_path / "train-only", [task("train", "red")]))[0]) == (
        "tasks.jsonl has no validation and no test task; every split needs one"
    )
    assert str(problems_of(tmp_path / "nowhere")[0]) == "is not a folder"
    (tmp_path / "empty").mkdir()
    assert str(problems_of(tmp_path / "empty")[0]) == "has no tasks.jsonl (one task per line)"


@pytest.fixture
def colours(tmp_path) -> FolderDataset:
    lines = [
        task("train", "red", image="red.png", caption="a red square"),
        task("train", "blue", image="blue.png", caption="a blue square"),
        task("train", "blue", "What colour is named?", audio="tone.wav", caption="a tone"),
        task("train", "yes", "Same colour as named?", image="red.png", audio="tone.wav"),
        task("train", "no", "Is this a question?", caption="a question"),
        task("validation", "red", image="red.png"),
        task("test", "blue", "What colour is named?", audio="tone.wav"),
    ]
    return FolderDataset(FolderConfig(name="folder", path=write_folder(tmp_path / "colours", lines), image_side_px=32))


def test_answers_types_items_and_captions_come_from_the_file(colours):
    assert colours.answers == ("blue", "no", "red", "yes")  # the train answers, sorted
    assert colours.question_types_in("train") == ["text", "image", "audio", "image+audio"]
    assert colours.question_types_in("test") == ["audio"]
    assert colours.questions("train") == ("Is this a question?", "Same colour as named?", "What colour is named?",
                                          "What is shown?")  # fmt: skip
    assert colours.captions() == ["a blue square", "a question", "a red square", "a tone"]
    images, labels = colours.images("train")
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8  # blue.png, red.png, read as RGB
    assert images[0, 16, 16].tolist() == [0, 0, 255] and images[1, 16, 16].tolist() == [255, 0, 0]
    assert [colours.answers[i] for i in labels] == ["blue", "red"]  # the first task showing each
    clips, clip_labels = colours.speech("train")
    assert clips.shape == (1, 16000 * 5) and clips.dtype == np.float32  # 0.5 s at 8 kHz, padded to 5 s at 16 kHz
    assert 3900 * 2 < np.count_nonzero(np.abs(clips[0]) > 0.01) < 4100 * 2
    assert colours.num_items("validation", "audio") == 0 and colours.num_items("test", "audio") == 1


def test_a_group_gets_the_tasks_it_can_answer_each_before_any_again(colours):
    image_only = colours.tasks("train", 9, frozenset({"text", "image"}), stream=0)
    names = colours.question_type_names
    # the text task and the two picture tasks, in a random order, three times over
    assert {names[t] for t in image_only["question_type"]} == {"text", "image"}
    assert sorted(image_only["answer"][:3]) == sorted(image_only["answer"][3:6]) == sorted(image_only["answer"][6:])
    assert (image_only["question_index"] == [colours.questions("train").index(q) for q in image_only["question"]]).all()
    everything = colours.tasks("train", 5, frozenset({"text", "image", "audio"}), stream=0)
    assert sorted(names[t] for t in everything["question_type"]) == ["audio", "image", "image", "image+audio", "text"]
    captions = colours.captions()
    for t in range(5):
        kind, image_label, clip_label = (
            names[everything["question_type"][t]],
            *(everything[k][t] for k in ("image_label", "clip_label")),
        )
        # an item the task does not carry is a stand-in of the split, and is not aligned (label -1)
        assert 0 <= everything["image_index"][t] < 2 and everything["clip_index"][t] == 0
        assert (image_label >= 0) == (kind == "image") and (clip_label >= 0) == (kind == "audio")
        if kind == "image":
            assert captions[image_label] == f"a {colours.answers[everything['answer'][t]]} square"
    again = colours.tasks("train", 5, frozenset({"text", "image", "audio"}), stream=0)
    assert all((again[k] == everything[k]).all() for k in everything)  # the data's seed fixes them
    other = colours.tasks("train", 5, frozenset({"text", "image", "audio"}), stream=1)
    assert (
        not (other["answer"] == everything["answer"]).all()
        or not (other["image_index"] == everything["image_index"]).all()
    )
    with pytest.raises(ValueError, match="no test task"):
        colours.tasks("test", 4, frozenset({"text", "image"}), stream=0)
    with pytest.raises(ValueError, match="validation split .* has no audio"):
        colours.tasks("validation", 4, frozenset({"text", "image", "audio"}), stream=0)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_wav_files_of_every_pcm_width_and_channel_count_read_alike(tmp_path, width):
    tone = 0.5 * np.sin(np.arange(800) / 7.0)
    write_wav(tmp_path / "tone.wav", tone, rate_hz=11025, width=width, channels=2)
    samples, rate_hz = read_wav((tmp_path / "tone.wav").read_bytes())
    assert rate_hz == 11025 and samples.dtype == np.float32 and samples.shape == (800,)
    assert np.abs(samples - tone).max() < 2.0 ** (1 - 8 * width) + 1e-6  # within one step of the width


def test_bad_data_found_while_running_is_a_clean_error_not_a_traceback(monkeypatch, capsys):
    """A data file that changes after validation is found by the run itself: the CLI prints the problem and
    exits 2, as validate does."""
    from models.data.tasks_file import DataProblem
    from sim import cli

    def run(args):
        problem = DataProblem(line=3, field="image", message="changed since it was read")
        raise DataFolderError(Path("mine"), [problem])

    monkeypatch.setitem(cli.COMMANDS, "run", run)
    assert cli.main(["run", "scenario.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokensim run: dataset.path 'mine' holds bad data:")
    assert "line 3" in err and "image" in err and "Traceback" not in err


def test_a_wave_format_extensible_header_reads_as_its_plain_pcm_twin(tmp_path):
    """ffmpeg writes WAVE_FORMAT_EXTENSIBLE above 16 bits or 2 channels: the same samples come out."""
    tone = 0.5 * np.sin(np.arange(800) / 7.0)
    write_wav(tmp_path / "plain.wav", tone, rate_hz=48000, width=3, channels=2)
    plain = (tmp_path / "plain.wav").read_bytes()
    assert plain[12:16] == b"fmt " and struct.unpack("<I", plain[16:20])[0] == 16
    channels, rate, byte_rate, align, bits = struct.unpack("<HIIHH", plain[22:36])
    sub_format = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # KSDATAFORMAT PCM
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, byte_rate, align, bits, 22, bits, 3) + sub_format
    rest = plain[36:]  # the data chunk
    extensible = b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + len(rest)) + b"WAVEfmt " + struct.pack("<I", 40)
    extensible += fmt + rest
    samples, rate_hz = read_wav(extensible)
    assert rate_hz == 48000
    np.testing.assert_array_equal(samples, read_wav(plain)[0])


def test_lines_split_at_newlines_only_and_paths_stay_inside_the_folder(tmp_path):
    """A caption holding U+2028 (json.dumps writes it unescaped with ensure_ascii=False) is one line; a file
    outside the folder, by .. or an absolute path, is refused on its line."""
    outside = tmp_path / "outside.png"
    write_png(outside, (0, 255, 0))
    root = write_folder(
        tmp_path / "data",
        [
            json.dumps(task("train", "red", image="red.png", caption="red\u2028thing"), ensure_ascii=False),
            task("train", "blue", image="../outside.png"),
            task("test", "red", image=str(outside)),
            task("validation", "red", image="red.png"),
        ],
    )
    found = {(p.line, p.field): p.message for p in problems_of(root)}
    assert set(found) == {(2, "image"), (3, "image")}, found
    assert all("inside the folder" in message for message in found.values())


def test_images_are_read_as_a_viewer_shows_them_and_wide_pixels_are_refused(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, transparent on the left half
    rgba[:, 2:, 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    rgb = read_image(buffer.getvalue())
    assert rgb[:, :2].max() == 0 and (rgb[:, 2:, 0] == 255).all()  # transparent: black
    wide = io.BytesIO()
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(wide, "PNG")  # 16-bit greyscale
    with pytest.raises(ValueError, match="8 bits per channel"):
        read_image(wide.getvalue())


def test_the_data_seed_is_part_of_the_audio_encoders_key(tmp_path):
    root = write_folder(tmp_path / "data", [task(s, "red", audio="tone.wav") for s in ("train", "validation", "test")])
    keys = {FolderDataset(FolderConfig(name="folder", path=root, seed=seed)).speech_key("train") for seed in (0, 1)}
    assert len(keys) == 2
