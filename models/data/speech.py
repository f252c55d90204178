"""Synthetic spoken words from the ``espeak-ng`` executable (Debian ``espeak-ng``).

A speaker is an English accent voice combined with a voice variant
(``en-gb-scotland+f2``); each clip also draws a speed, a pitch, a level and a
background-noise SNR. The variants are split into disjoint train and test sets
so that test speech comes from speakers never heard in training.

>>> specs = plan_clips(["coat", "bag"], TRAIN_VARIANTS, (5.0, 30.0), np.random.default_rng(0))
>>> clips = render_clips(specs, "espeak-ng", sample_rate_hz=16000, clip_seconds=1.25)
>>> clips.shape, clips.dtype
((2, 20000), dtype('float32'))
"""

import os
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from models.progress import progress_bar

# English voices that need no mbrola. Plain "en-gb" is left out on purpose:
# espeak-ng 1.51 ignores "+variant" on it (it does not on "en", the same accent).
ACCENTS: tuple[str, ...] = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# Variant file names (``espeak-ng --voices=variant``); an unknown one would
# silently fall back to the plain voice, so the tests check each one changes it.
TRAIN_VARIANTS: tuple[str, ...] = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m8",
    "f1",
    "f2",
    "f3",
    "f5",
    "klatt",
    "klatt2",
    "klatt4",
    "croak",
    "whisper",
    "whisperf",
    "Alex",
    "Alicia",
    "Annie",
    "adam",
    "aunty",
    "belinda",
    "benjamin",
    "david",
    "ed",
    "edward",
    "john",
    "linda",
    "max",
    "michel",
    "norbert",
    "quincy",
    "rob",
    "travis",
    "victor",
    "steph2",
    "Andy",
    "Gene",
    "iven",
)
TEST_VARIANTS: tuple[str, ...] = (
    "m7",
    "f4",
    "klatt3",
    "Andrea",
    "steph",
    "paul",
    "robert",
    "grandma",
)
# Validation speakers: in neither list above, so choosing a checkpoint on them says nothing of the test voices.
VALIDATION_VARIANTS: tuple[str, ...] = (
    "iven2",
    "steph3",
    "edward2",
    "Gene2",
    "grandpa",
    "caleb",
    "Michael",
    "klatt5",
)
VARIANTS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_VARIANTS,
    "validation": VALIDATION_VARIANTS,
    "test": TEST_VARIANTS,
}
SPEED_WPM = (120, 220)  # espeak-ng -s; 175 is its default
PITCH = (20, 80)  # espeak-ng -p, 0..99; 50 is its default
PEAK = (0.2, 0.9)  # peak level of the speech before noise, full scale = 1
ACTIVE_FRACTION = 0.05  # |x| above this share of the peak counts as speech


@dataclass(frozen=True)
class ClipSpec:
    """Everything that fixes one clip: the words, the speaker and the noise."""

    text: str
    voice: str  # "<accent>+<variant>", the argument of espeak-ng -v
    speed_wpm: int
    pitch: int
    peak: float
    snr_db: float
    noise_seed: int


def plan_clips(texts, variants, snr_db_range, rng: np.random.Generator) -> list[ClipSpec]:
    """One ``ClipSpec`` per text, with a random accent, a random variant from
    ``variants``, speed, pitch, level and an SNR uniform in ``snr_db_range`` (dB)."""
    n = len(texts)
    accents = rng.choice(ACCENTS, n)
    chosen = rng.choice(variants, n)
    speeds = rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1, n)
    pitches = rng.integers(PITCH[0], PITCH[1] + 1, n)
    peaks = rng.uniform(*PEAK, n)
    snrs = rng.uniform(*snr_db_range, n)
    seeds = rng.integers(2**63, size=n)
    return [
        ClipSpec(str(t), f"{a}+{v}", int(s), int(p), float(k), float(r), int(z))
        for t, a, v, s, p, k, r, z in zip(texts, accents, chosen, speeds, pitches, peaks, snrs, seeds)
    ]


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono 16-bit PCM WAV bytes -> (float32 ``[T]`` in [-1, 1), sample rate in Hz).

    espeak-ng --stdout cannot seek back to fix the sizes in the header, so the
    data chunk is taken to the end of the bytes rather than by its stated size.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])
            if (fmt, channels, bits) != (1, 1, 16):
                raise ValueError(f"expected mono 16-bit PCM, got format {fmt}, {channels} ch, {bits} bit")
        elif chunk == b"data":
            if rate is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            body = data[pos + 8 :]
            samples = np.frombuffer(body[: len(body) // 2 * 2], "<i2")
            return samples.astype(np.float32) / 32768.0, rate
        pos += 8 + size + (size & 1)
    raise ValueError("WAV stream has no data chunk")


def synthesize(espeak_ng: str, text: str, voice: str, speed_wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng; returns (float32 ``[T]``, sample rate in Hz)."""
    result = subprocess.run(
        [espeak_ng, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", text],
        capture_output=True,
        check=True,
    )
    return parse_wav(result.stdout)


def centre_crop(x: np.ndarray, num_samples: int) -> np.ndarray:
    """Pad with zeros or crop ``x`` ``[T]`` to ``[num_samples]``, centred on the span
    where the signal is active (espeak-ng trails a long silence)."""
    active = np.flatnonzero(np.abs(x) > ACTIVE_FRACTION * np.abs(x).max(initial=1e-9))
    centre = (active[0] + active[-1]) // 2 if active.size else len(x) // 2
    start = centre - num_samples // 2 + num_samples  # in the padded signal
    return np.pad(x, num_samples)[start : start + num_samples]


def fit_clip(x: np.ndarray, rate_hz: int, sample_rate_hz: int, num_samples: int) -> np.ndarray:
    """``x`` ``[T]`` recorded at ``rate_hz``, resampled to ``sample_rate_hz`` (polyphase) and padded or
    cropped to ``[num_samples]`` around the span where it is active (:func:`centre_crop`)."""
    ratio = Fraction(sample_rate_hz, rate_hz)
    return centre_crop(resample_poly(x, ratio.numerator, ratio.denominator), num_samples)


def render_clip(spec: ClipSpec, espeak_ng: str, sample_rate_hz: int, num_samples: int) -> np.ndarray:
    """One clip: float32 ``[num_samples]`` in [-1, 1] at ``sample_rate_hz``."""
    x, rate = synthesize(espeak_ng, spec.text, spec.voice, spec.speed_wpm, spec.pitch)
    x = fit_clip(x, rate, sample_rate_hz, num_samples)
    x *= spec.peak / max(np.abs(x).max(), 1e-9)
    active = np.abs(x) > ACTIVE_FRACTION * spec.peak
    # SNR against the power of the speech itself, not of the clip with its silence.
    speech_power = np.mean(x[active] ** 2) if active.any() else np.mean(x**2)
    noise = np.random.default_rng(spec.noise_seed).standard_normal(num_samples)
    x = x + noise * np.sqrt(speech_power / 10 ** (spec.snr_db / 10))
    return (x / max(1.0, np.abs(x).max())).astype(np.float32)


def render_clips(
    specs, espeak_ng: str, sample_rate_hz: int, clip_seconds: float, workers: int | None = None, desc: str = "espeak-ng"
) -> np.ndarray:
    """All clips of ``specs``: float32 ``[len(specs), round(sample_rate_hz * clip_seconds)]``.

    espeak-ng runs in ``workers`` subprocesses at a time (default: one per core
    plus one, since each spends part of its time starting up); the result does
    not depend on their order.
    """
    num_samples = round(sample_rate_hz * clip_seconds)
    workers = workers or (os.cpu_count() or 1) + 1
    out = np.empty((len(specs), num_samples), np.float32)
    with ThreadPoolExecutor(workers) as pool:
        clips = pool.map(lambda s: render_clip(s, espeak_ng, sample_rate_hz, num_samples), specs)
        for i, clip in enumerate(progress_bar(clips, total=len(specs), desc=desc, unit="clip")):
            out[i] = clip
    return out
