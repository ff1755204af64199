"""scikit-learn's handwritten digits, shaped like CIFAR images: the embedded default data set.

The 8x8 images (values 0..16) are scaled to 0..255, resized to 32x32 with bilinear
interpolation and repeated over 3 channels, so that CIFAR-scale settings (radii, epsilons,
architectures) apply unchanged. The train/test split is fixed and stratified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from locrob.data.images import ImageData
from locrob.hookspecs import RegisterDatasetSource, hookimpl

SPLIT_SEED = 0
TEST_FRACTION = 0.2
SIZE = 32


def load_digits(arg: str | None = None, **_: object) -> ImageData:
    """The digits data set as 3x32x32 uint8 images, 1437 train / 360 test."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=labels.numpy(),
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return ImageData(
        name="digits",
        train_x=images[train_idx],
        train_y=labels[train_idx],
        test_x=images[test_idx],
        test_y=labels[test_idx],
        classes=[str(d) for d in range(10)],
    )


@hookimpl
def register_dataset_sources(register: RegisterDatasetSource) -> None:
    register("digits", load_digits)
