"""What every data set shares: its three splits, the random stream each one draws from, and the
modalities a group may ask tasks for."""

SPLITS = ("train", "validation", "test")
# Random stream of each split's clips and tasks (train and test keep the streams they had before the
# validation split existed, so fashion-avqa's clips are the same).
SPLIT_STREAM = {"train": 0, "test": 1, "validation": 2}
MODALITIES = frozenset({"image", "audio", "text"})


def check_split(split: str) -> str:
    """``split`` itself, or ``ValueError`` naming the allowed ones."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
    return split


def check_modalities(modalities) -> frozenset[str]:
    """The modalities a group sends, as a frozenset; ``ValueError`` unless a subset of
    {"image", "audio", "text"} that holds "text" (the question)."""
    modalities = frozenset(modalities)
    if "text" not in modalities or not modalities <= MODALITIES:
        raise ValueError(f"modalities: {sorted(modalities)} must be a subset of {sorted(MODALITIES)} that holds 'text'")
    return modalities
