"""The runtime of a run: device, precision and named random streams, applied once at the entry point (as
Sionna's ``config`` does), and the tools that keep Sionna's generators where a run expects them."""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from sim.errors import ScenarioError

# The floating-point precision of Sionna's blocks (``config.precision``), which every PHY block built with
# ``precision=None`` takes. The learning side is float32 and the PHY hands it tokens as float32, so a run is
# single precision throughout; a scenario cannot ask for double (the model's tensors would not follow).
PRECISION = "single"


@dataclass(frozen=True)
class Runtime:
    """Where a run computes and the seeds it draws from, set once at the entry point as Sionna's ``config`` is:
    the torch device, the PHY's precision and the named random streams of :data:`STREAMS`.

    :param device: the torch device the run computes on
    :param seed: the scenario's ``seed``, from which every stream's seed is an offset

    Two streams are not entered through it: the users' drop (``geometry``) is made when the scenario is
    resolved, before any run starts, and the TB fates (``fates``) follow whatever seed Sionna's ``config``
    holds; both take :func:`stream_seed` directly.

    >>> runtime = Runtime.start("auto", seed=0)
    >>> generator = runtime.enter("align")  # every global generator and this one at the align stream's seed
    """

    device: torch.device
    seed: int
    precision: str = PRECISION

    @classmethod
    def start(cls, device: str, seed: int) -> Runtime:
        """Pick the torch device for ``device`` (auto | cpu | cuda), point Sionna's ``config`` at it and at the
        runtime's precision (:data:`PRECISION`), and seed every generator with ``seed``.

        Sionna draws from its own generators, seeded through ``sionna.phy.config.seed``
        (``torch.manual_seed`` alone leaves its channels random).
        """
        from sionna.phy import config

        if device == "cuda" and not torch.cuda.is_available():
            raise ScenarioError("device", device, "was asked for but no CUDA GPU is visible", "auto, cpu")
        chosen = torch.device("cuda:0" if device != "cpu" and torch.cuda.is_available() else "cpu")
        runtime = cls(chosen, seed)
        config.device, config.precision = str(chosen), runtime.precision
        reseed(seed)
        return runtime

    def seed_of(self, stream: str, index: int = 0) -> int:
        """The seed of ``stream`` (see :func:`stream_seed`)."""
        return stream_seed(self.seed, stream, index)

    def enter(self, stream: str, index: int = 0) -> torch.Generator:
        """Start ``stream``: Sionna's, torch's, numpy's and Python's global generators are seeded at its seed,
        and a CPU torch generator at the same seed is returned for the draws the stream makes itself."""
        seed = self.seed_of(stream, index)
        reseed(seed)
        return torch.Generator().manual_seed(seed)


# The named random streams of a run. Each draws from its own seed, the scenario's ``seed`` plus the stream's
# offset, so that adding draws to one stream never shifts another: stage 1's initialisation and batches,
# stage 2's batches, SNRs and channels, the validation's channels and SNRs (the same every validation:
# common random numbers; the token-aware calibration's point j uses ``validation + j``), the evaluation's
# channels and noise (the same whether the run trained or loaded its checkpoint), and the users' drop.
# The data (speech, tasks) has streams of its own, from ``dataset.seed`` (models.data).
# The PHY abstraction's TB fates draw from Sionna's seed (whatever stream set it) on a stream of their own,
# ``fates``, so that they leave Sionna's channel and noise draws as the link level makes them.
STREAMS = {
    "align": 0,
    "finetune": 1,
    "validation": 1 << 31,
    "evaluation": 1 << 32,
    "geometry": 1 << 33,
    "fates": 1 << 34,
}


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """The seed of ``stream`` (a name of :data:`STREAMS`) for a scenario ``seed``; ``index`` picks one of
    several draws within it (the calibration's points)."""
    return seed + STREAMS[stream] + index


def reseed(seed: int) -> None:
    """Seed Sionna's generators and torch's, numpy's and Python's global ones."""
    from sionna.phy import config

    config.seed = seed
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def sionna_rng_untouched():
    """Run a block with Sionna's generators put back as they were afterwards.

    For computations made once per process and cached (tables of link adaptation, say): whether the cache
    was warm must not change the draws a run makes after them.
    """
    from sionna.phy import config

    generators = {config.torch_rng(device) for device in ("cpu", config.device)}  # the CPU's and the run's
    states = [(g, g.get_state()) for g in generators]
    try:
        yield
    finally:
        for generator, state in states:
            generator.set_state(state)


@contextmanager
def sionna_rng_at(seed: int):
    """Run a block with Sionna's generators started at ``seed``, put back as they were afterwards.

    Common random numbers: every run of the block draws the same fading and noise, and the draws of
    whatever runs around it (training, say) do not depend on whether, or how often, the block ran.
    """
    from sionna.phy import config

    with sionna_rng_untouched():
        for device in {"cpu", config.device}:
            config.torch_rng(device).manual_seed(seed)
        yield


def quiet_libraries() -> None:
    """Weight-loading bars and deprecation notes of the libraries would bury tokensim's own output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers|peft")
