"""Built-in architectures, registered as model sources by name.

* ``small-cnn``: a small sequential CNN that trains on digits in seconds on a CPU.
* ``preact-resnet18``: PreActResNet18 as the Laplacian-networks authors used it for the
  paper's CIFAR-10 runs: a 3x3 stem with 64 planes, eight pre-activation basic blocks whose
  projection shortcut starts from the block's first ReLU, a final ReLU with no batch norm,
  global average pooling, and CIFAR-10 normalization inside the model.

Every ReLU is an ``nn.ReLU`` module (never ``F.relu``), so forward hooks can reach each
activation (the Laplacian defense and the layer-wise robustness analysis use them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from locrob.errors import LocrobError
from locrob.hookspecs import RegisterModelSource, hookimpl
from locrob.models.merges import Sum
from locrob.models.normalize import Normalize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def small_cnn(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    width: int = 16,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> nn.Sequential:
    """Two conv-BN-ReLU-maxpool stages and a two-layer classifier head."""
    if image_size % 4:
        raise LocrobError(f"small-cnn needs an image size divisible by 4, got {image_size}")
    flat = 2 * width * (image_size // 4) ** 2
    return nn.Sequential(
        Normalize(mean[:in_channels], std[:in_channels]),
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


class PreActBlock(nn.Module):
    """Pre-activation basic block; the projection shortcut (if any) starts from ``relu1``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.merge: nn.Module = Sum()  # a defense may swap it (Parseval's convex merge)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(a)
        return self.merge(self.conv2(self.relu2(self.bn2(self.conv1(a)))), skip)


class PreActResNet18(nn.Module):
    """The authors' PreActResNet18 (see the module docstring)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        planes: int = 64,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean[:in_channels], std[:in_channels])
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        widths = [
            planes,
            planes,
            2 * planes,
            2 * planes,
            4 * planes,
            4 * planes,
            8 * planes,
            8 * planes,
        ]
        blocks, in_planes = [], planes
        for i, width in enumerate(widths):
            stride = 2 if i > 0 and width != widths[i - 1] else 1
            blocks.append(PreActBlock(in_planes, width, stride))
            in_planes = width
        self.blocks = nn.Sequential(*blocks)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(8 * planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.blocks(self.conv1(self.normalize(x))))
        return self.linear(self.pool(out).flatten(1))

    def layer_names(self) -> list[str]:
        """The chain of stages for layer-wise robustness (each block is one stage)."""
        blocks = [f"blocks.{i}" for i in range(len(self.blocks))]
        return ["normalize", "conv1", *blocks, "relu", "pool", "linear"]


class Architecture:
    """A model source that builds an architecture by name, with keyword options."""

    def __init__(self, name: str, builder: Callable[..., nn.Module]) -> None:
        self.name = name
        self.builder = builder
        self.parameters = tuple(inspect.signature(builder).parameters)

    def __call__(self, arg: str | None = None, **options: object) -> nn.Module:
        if arg:
            raise LocrobError(f"model '{self.name}' takes no ':{arg}' argument")
        try:
            return self.builder(**options)
        except TypeError as err:
            raise LocrobError(f"bad options for model '{self.name}': {err}") from None


@hookimpl
def register_model_sources(register: RegisterModelSource) -> None:
    register("small-cnn", Architecture("small-cnn", small_cnn))
    register("preact-resnet18", Architecture("preact-resnet18", PreActResNet18))
