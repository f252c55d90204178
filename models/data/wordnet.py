"""Noun glosses read straight from WordNet 3.0's database files (Debian ``wordnet-base``):
``index.noun`` gives a lemma's synset offsets in sense order, and each offset is the
byte position of the synset's line in ``data.noun``, whose gloss follows ``" | "``.

>>> noun_gloss(Path("/usr/share/wordnet"), "sandal", 1)
'a shoe consisting of a sole fastened by straps to the foot'
"""

import re
from functools import lru_cache
from pathlib import Path

# Fashion-MNIST class -> (WordNet noun lemma, sense number counted from 1).
CLASS_SENSES: dict[str, tuple[str, int]] = {
    "t-shirt": ("t-shirt", 1),
    "trouser": ("trouser", 1),  # "a garment extending from the waist to the knee or ankle..."
    "pullover": ("pullover", 1),
    "dress": ("dress", 1),  # the garment, not "attire"
    "coat": ("coat", 1),  # the garment, not a coat of paint or fur
    "sandal": ("sandal", 1),
    "shirt": ("shirt", 1),
    "sneaker": ("sneaker", 1),  # the shoe, not the sneaky person
    "bag": ("bag", 4),  # the handbag sense; Fashion-MNIST bags are handbags
    "ankle boot": ("boot", 1),  # WordNet has no "ankle boot"
}

INDEX_FILE, DATA_FILE = "index.noun", "data.noun"


def has_files(directory: Path) -> bool:
    """Whether ``directory`` holds WordNet's noun index and data files."""
    return all((Path(directory) / name).is_file() for name in (INDEX_FILE, DATA_FILE))


@lru_cache(maxsize=1)  # class_glosses looks up ten lemmas in the same 5 MB file
def _read_index(path: Path) -> str:
    return path.read_text(encoding="latin-1")


def synset_offsets(directory: Path, lemma: str) -> list[int]:
    """Byte offsets into ``data.noun`` of the synsets of ``lemma``, most frequent sense first."""
    key = lemma.lower().replace(" ", "_")
    text = _read_index(Path(directory) / INDEX_FILE)
    match = re.search(rf"^{re.escape(key)} n .*$", text, re.MULTILINE)
    if match is None:
        raise KeyError(f"{key!r} is not a noun in {directory / INDEX_FILE}")
    # lemma pos synset_cnt p_cnt [ptr_symbol]*p_cnt sense_cnt tagsense_cnt offset*synset_cnt
    fields = match.group(0).split()
    return [int(offset) for offset in fields[-int(fields[2]) :]]


def noun_gloss(directory: Path, lemma: str, sense: int) -> str:
    """The definition part of the gloss of noun ``lemma``, sense ``sense`` (from 1),
    without the quoted usage examples that follow it."""
    offsets = synset_offsets(directory, lemma)
    if not 1 <= sense <= len(offsets):
        raise KeyError(f"{lemma!r} has {len(offsets)} noun senses, not {sense}")
    with open(Path(directory) / DATA_FILE, "rb") as f:
        f.seek(offsets[sense - 1])
        line = f.readline().decode("latin-1")
    if not line.startswith(f"{offsets[sense - 1]:08d} "):
        raise ValueError(f"{directory / DATA_FILE}: no synset at offset {offsets[sense - 1]}")
    gloss = line.split(" | ", 1)[1]
    return re.split(r';\s*"', gloss, maxsplit=1)[0].strip()


def class_glosses(directory: Path) -> dict[str, str]:
    """Class name -> gloss for every entry of ``CLASS_SENSES``."""
    return {name: noun_gloss(directory, *sense) for name, sense in CLASS_SENSES.items()}
