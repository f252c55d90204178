"""The built-in ``fashion-avqa`` data set, on tiny sizes (Debian packages required)."""

import struct

import numpy as np
import pydantic
import pytest

from models.data import (
    ANSWERS,
    CLASS_NAMES,
    DATASETS,
    QUESTION_TYPES,
    FashionAVQA,
    FashionAVQAConfig,
    MissingDataError,
    fashion_mnist,
    speech,
)
from models.data.speech import ACCENTS, TEST_VARIANTS, TRAIN_VARIANTS, VALIDATION_VARIANTS

TINY = dict(train_images=20, validation_images=20, test_images=20, train_clips=12, validation_clips=12, test_clips=12)
ALL = frozenset({"text", "image", "audio"})


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENSIM_CACHE", str(tmp_path))
    return FashionAVQA(FashionAVQAConfig(**TINY, seed=0))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One tiny data set whose speech is made once for the task tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOKENSIM_CACHE", str(tmp_path_factory.mktemp("cache")))
        data = FashionAVQA(FashionAVQAConfig(**TINY, seed=0))
        data.speech("train"), data.speech("validation"), data.speech("test")
        yield data


def test_registry_and_answers():
    assert DATASETS["fashion-avqa"] is FashionAVQA
    assert len(CLASS_NAMES) == 10 and ANSWERS == CLASS_NAMES + ("yes", "no")


def test_images(data):
    for split in ("train", "validation", "test"):
        images, labels = data.images(split)
        assert images.shape == (20, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (20,) and labels.dtype == np.int64
        assert labels.min() >= 0 and labels.max() <= 9
    t10k = fashion_mnist.read_idx(data.config.fashion_mnist_dir / "t10k-images-idx3-ubyte.gz", 20)
    np.testing.assert_array_equal(data.images("test")[0], t10k)
    assert not np.array_equal(data.images("train")[0], t10k)
    pool = fashion_mnist.read_idx(data.config.fashion_mnist_dir / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(data.images("train")[0], pool[:20])
    np.testing.assert_array_equal(data.images("validation")[0], pool[-20:])  # the pool's end: no train image
    with pytest.raises(pydantic.ValidationError, match="must not overlap"):
        FashionAVQAConfig(train_images=59_500, validation_images=1000)
    with pytest.raises(ValueError, match="split: 'val'"):
        data.images("val")


def test_captions(data):
    captions = data.captions()
    assert len(captions) == 10
    for name, caption in zip(CLASS_NAMES, captions):
        assert caption.startswith(f"{name}: ") and len(caption) > len(name) + 10
    assert "shoe" in captions[CLASS_NAMES.index("sneaker")]
    assert "container" in captions[CLASS_NAMES.index("bag")]


def test_parse_wav_reads_data_to_the_end():
    samples = np.array([0, 1000, -1000, 32767], "<i2")
    bogus = 0x7FFFF000  # what espeak-ng --stdout writes as the sizes
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 22050, 44100, 2, 16)
    wav = b"RIFF" + struct.pack("<I", bogus) + b"WAVE" + fmt + b"data" + struct.pack("<I", bogus) + samples.tobytes()
    x, rate = speech.parse_wav(wav)
    assert rate == 22050 and x.dtype == np.float32
    np.testing.assert_allclose(x, samples / 32768)


def test_speech_shape_cache_and_determinism(data, tmp_path, monkeypatch):
    clips, labels = data.speech("train")
    assert clips.shape == (12, 20000) and clips.dtype == np.float32
    assert np.abs(clips).max() <= 1 and np.abs(clips).max() > 0.1
    assert labels.dtype == np.int64 and set(labels) <= set(range(10)) and len(set(labels)) == 10
    cached = data.speech_path("train")
    assert cached.is_file()

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng called although the clips are cached")

    monkeypatch.setattr(speech, "synthesize", no_espeak)
    again, again_labels = FashionAVQA(data.config).speech("train")
    np.testing.assert_array_equal(again, clips)
    np.testing.assert_array_equal(again_labels, labels)
    monkeypatch.undo()

    # Regenerated from scratch in another cache: same seed, same clips.
    monkeypatch.setenv("TOKENSIM_CACHE", str(tmp_path / "other"))
    fresh = FashionAVQA(data.config)
    assert fresh.speech_path("train") != cached
    np.testing.assert_array_equal(fresh.speech("train")[0], clips)
    other_seed = data.config.model_copy(update={"seed": 1})
    assert FashionAVQA(other_seed).speech_path("train") != fresh.speech_path("train")
    # A split's clips do not depend on how many clips the other splits hold.
    more_test = data.config.model_copy(update={"test_clips": 30})
    assert FashionAVQA(more_test).speech_path("train") == fresh.speech_path("train")


def test_each_split_has_its_own_speakers(shared):
    lists = (TRAIN_VARIANTS, VALIDATION_VARIANTS, TEST_VARIANTS)
    assert sum(map(len, lists)) == len(set().union(*lists))  # no variant in two splits
    for split, variants in zip(("train", "validation", "test"), lists):
        assert {v.split("+")[1] for v in shared.speakers(split)} <= set(variants), split


def test_every_voice_and_variant_changes_the_sound():
    """espeak-ng silently ignores an unknown variant, and "+variant" on some voices."""

    def wav(voice):
        return speech.synthesize("espeak-ng", "coat", voice, 175, 50)[0].tobytes()

    plain = wav("en-us")
    for variant in TRAIN_VARIANTS + VALIDATION_VARIANTS + TEST_VARIANTS:
        assert wav(f"en-us+{variant}") != plain, variant
    for accent in ACCENTS:
        assert wav(f"{accent}+m3") != wav(accent), accent


def test_tasks_deterministic_and_consistent(shared):
    a = shared.tasks("train", 200, ALL, stream=3)
    b = shared.tasks("train", 200, ALL, stream=3)
    for key in a:
        assert len(a[key]) == 200
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["answer"], shared.tasks("train", 200, ALL, stream=4)["answer"])

    image_labels, clip_labels = shared.images("train")[1], shared.speech("train")[1]
    np.testing.assert_array_equal(a["image_label"], image_labels[a["image_index"]])
    np.testing.assert_array_equal(a["clip_label"], clip_labels[a["clip_index"]])
    names = shared.question_type_names
    assert set(a["question_type"]) == set(range(len(names)))
    for t, question, answer, image, clip in zip(
        a["question_type"], a["question"], a["answer"], a["image_label"], a["clip_label"]
    ):
        name = names[t]
        assert question in QUESTION_TYPES[name].templates
        expected = {
            "image_item": CLASS_NAMES[image],
            "speech_item": CLASS_NAMES[clip],
            "same_item": "yes" if image == clip else "no",
            "image_footwear": "yes" if CLASS_NAMES[image] in ("sandal", "sneaker", "ankle boot") else "no",
            "speech_upper_body": "yes" if CLASS_NAMES[clip] in ("t-shirt", "pullover", "coat", "shirt") else "no",
        }[name]
        assert ANSWERS[answer] == expected, name


def test_yes_no_balanced(shared):
    tasks = shared.tasks("test", 400, ALL, stream=0)
    for name in ("same_item", "image_footwear", "speech_upper_body"):
        answers = tasks["answer"][tasks["question_type"] == shared.question_type_names.index(name)]
        assert len(answers) > 50 and set(answers) <= {ANSWERS.index("yes"), ANSWERS.index("no")}
        assert abs(np.mean(answers == ANSWERS.index("yes")) - 0.5) < 0.15, name


def test_modalities_restrict_question_types(shared):
    tasks = shared.tasks("train", 100, frozenset({"text", "image"}), stream=0)
    used = {shared.question_type_names[t] for t in tasks["question_type"]}
    assert used == {"image_item", "image_footwear"}
    assert len(tasks["clip_index"]) == 100  # filled although the questions do not need it
    with pytest.raises(ValueError):
        shared.tasks("train", 10, frozenset({"text"}), stream=0)
    with pytest.raises(ValueError):
        shared.tasks("train", 10, frozenset({"image", "audio"}), stream=0)


@pytest.mark.parametrize(
    "key, bad, package",
    [
        ("fashion_mnist_dir", "/nonexistent/fashion", "dataset-fashion-mnist"),
        ("wordnet_dir", "/nonexistent/wordnet", "wordnet-base"),
        ("espeak_ng", "no-such-espeak", "espeak-ng"),
    ],
)
def test_missing_packages(key, bad, package):
    with pytest.raises(MissingDataError) as error:
        FashionAVQA(FashionAVQAConfig(**{key: bad}))
    message = str(error.value)
    assert message.startswith(f"dataset.{key}: '{bad}'")
    assert message.endswith(f"sudo apt-get install {package}")
    assert (error.value.key, error.value.package) == (f"dataset.{key}", package)
    assert isinstance(error.value, FileNotFoundError)


def test_bad_config():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        FashionAVQAConfig(train_imgs=10)
    with pytest.raises(pydantic.ValidationError, match="'color_item' is not one of image_item"):
        FashionAVQAConfig(question_types=["image_item", "color_item"])
    with pytest.raises(pydantic.ValidationError):
        FashionAVQAConfig(noise_snr_db=(30.0, 5.0))
    assert FashionAVQAConfig().question_types == list(QUESTION_TYPES)
