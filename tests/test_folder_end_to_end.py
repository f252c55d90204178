"""A ``folder`` data set made here as a user would make one (PNG pictures, WAV recordings, tasks.jsonl),
from Fashion-MNIST images and espeak-ng speech (Debian packages), trains and evaluates end to end."""

from __future__ import annotations

import copy
import csv
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from tests.conftest import TINY

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "sneaker", "bag")
# per split: pictures and recordings of each class, and same-item questions
SIZES = {"train": (6, 4, 8), "validation": (2, 2, 4), "test": (2, 2, 4)}
RATE_HZ = 22050  # recorded at another rate than the scenario's 16 kHz: the loader resamples


def write_wav(path: Path, samples: np.ndarray, rate_hz: int) -> None:
    """Mono 16-bit PCM, as a recorder writes it."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def make_folder(root: Path) -> Path:
    """A folder data set: pictures and spoken names of four Fashion-MNIST items, and questions on the
    picture, the speech, both, or neither; image and speech tasks carry the item's name as caption."""
    from PIL import Image

    from models.data import fashion_mnist, speech

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "audio").mkdir()
    pools = {
        "train": fashion_mnist.load(FASHION_MNIST, "train", 600),
        "test": fashion_mnist.load(FASHION_MNIST, "test", 600),
    }
    pools["validation"] = (pools["train"][0][300:], pools["train"][1][300:])  # apart from train's first 300
    lines = []
    for split, (per_class, clips_per_class, same) in SIZES.items():
        images, labels = pools[split]
        pictures = []
        for name in CLASSES:
            for i in np.flatnonzero(labels[:300] == fashion_mnist.CLASS_NAMES.index(name))[:per_class]:
                file = f"images/{split}-{i}.png"
                Image.fromarray(images[i]).save(root / file)
                pictures.append((file, name))
                lines.append({"split": split, "question": "What item is pictured?", "answer": name, "image": file,
                              "caption": name})  # fmt: skip
        spoken = [name for name in CLASSES for _ in range(clips_per_class)]
        specs = speech.plan_clips(spoken, speech.VARIANTS[split], (10.0, 30.0), rng)
        clips = speech.render_clips(specs, "espeak-ng", RATE_HZ, 1.25, desc=f"{split} speech")
        recordings = []
        for k, (name, clip) in enumerate(zip(spoken, clips)):
            file = f"audio/{split}-{k}.wav"
            write_wav(root / file, clip, RATE_HZ)
            recordings.append((file, name))
            lines.append({"split": split, "question": "Which item does the speaker name?", "answer": name,
                          "audio": file, "caption": name})  # fmt: skip
        for k in range(same):  # half of them the same item; no caption: stage 1 leaves them out
            picture, item = pictures[rng.integers(len(pictures))]
            matching = [r for r in recordings if (r[1] == item) == (k % 2 == 0)]
            recording, said = matching[rng.integers(len(matching))]
            lines.append({"split": split, "question": "Is the spoken item the same as the pictured one?",
                          "answer": "yes" if said == item else "no", "image": picture, "audio": recording})  # fmt: skip
        lines.append({"split": split, "question": "Is this a question about clothing?", "answer": "yes"})
    (root / "tasks.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    if not FASHION_MNIST.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (make test installs it)")
    return make_folder(tmp_path_factory.mktemp("my-avqa"))


def folder_scenario(path: Path) -> dict:
    raw = copy.deepcopy(TINY)
    raw["name"] = "tiny-folder"
    raw["dataset"] = {"name": "folder", "path": str(path), "image_side_px": 32, "clip_seconds": 1.25}
    per_class, clips_per_class, same = SIZES["test"]
    # every test task once per group: 8 picture, 8 speech, 4 same-item and 1 text-only question
    raw["evaluation"]["tasks_per_group"] = len(CLASSES) * (per_class + clips_per_class) + same + 1
    return raw


def test_a_folder_data_set_trains_and_evaluates_end_to_end(folder, write_scenario, tmp_path):
    raw = folder_scenario(folder)
    path = write_scenario(raw)
    assert main(["validate", str(path)]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the types a task gets from what it carries; both groups send text, image and audio, so both get all four
    assert metrics["accuracy_by_question_type"].keys() == {"text", "image", "audio", "image+audio"}
    with open(tmp_path / "run" / "per_task.csv") as f:
        rows = list(csv.DictReader(f))
    # each group answers the test split of tasks.jsonl: its (answer, question type) pairs, each as often as the
    # file has it, in the group's own order (its stream); metrics.json counts the tasks per_task.csv lists
    lines = [json.loads(line) for line in (folder / "tasks.jsonl").read_text().splitlines()]
    test = sorted((t["answer"], _question_type(t)) for t in lines if t["split"] == "test")
    by_group = [[(r["answer"], r["question_type"]) for r in rows if r["group"] == g] for g in ("a", "b")]
    assert sorted(by_group[0]) == sorted(by_group[1]) == test and by_group[0] != by_group[1]
    assert metrics["tasks"] == len(rows) == 2 * len(test)
    # stage 1 aligned image and audio tokens to the captions of the tasks that have one
    with open(tmp_path / "run" / "training_log.csv") as f:
        aligned = [r for r in csv.DictReader(f) if r["stage"] == "align"]
    assert len(aligned) == raw["training"]["alignment"]["steps"]
    for m in ("image", "audio"):  # a step whose batch holds one captioned item of m has a zero term
        assert any(float(r[f"infonce_{m}"] or 0) > 0 for r in aligned), m


def _question_type(task: dict) -> str:
    """What the task carries, as the data set names its question types (docs/data.md)."""
    return "+".join(m for m in ("image", "audio") if m in task) or "text"


def test_editing_the_data_changes_the_keys_of_what_was_trained_on_it(folder, tmp_path):
    """The checkpoint and feature keys follow the content of the files: other bytes, other keys."""
    import shutil

    from models.data import FolderDataset
    from sim.checkpoint_plan import checkpoint_key
    from sim.scenario import validate_scenario

    copied = shutil.copytree(folder, tmp_path / "copy")
    raw = folder_scenario(copied)

    def keys():
        scenario = validate_scenario(raw)
        data = FolderDataset(scenario.dataset)
        return checkpoint_key(scenario)[0], {s: (data.image_key(s), data.speech_key(s)) for s in ("train", "test")}

    before = keys()
    pictures = {s: sorted((copied / "images").glob(f"{s}-*.png")) for s in ("train", "test")}
    pictures["train"][0].write_bytes(pictures["test"][0].read_bytes())  # another picture under the same name
    edited = keys()
    assert edited[0] != before[0]  # the model trains anew
    assert edited[1]["train"][0] != before[1]["train"][0] and edited[1]["train"][1] == before[1]["train"][1]
    assert edited[1]["test"] == before[1]["test"]
    # the test split does not shape the model: editing only its tasks keeps the checkpoint
    text = (copied / "tasks.jsonl").read_text()
    lines = [
        line.replace("about clothing?", "about clothes?") if '"test"' in line else line for line in text.splitlines()
    ]
    (copied / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    assert keys()[0] == edited[0]
    assert "Is this a question about clothes?" in FolderDataset(validate_scenario(raw).dataset).questions("test")
