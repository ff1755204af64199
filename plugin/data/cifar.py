"""CIFAR-10 and CIFAR-100 from a directory in torchvision's on-disk format."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from locrob.atomic import no_empty_dirs_left
from locrob.contract import DEFAULT_DATA_DIR
from locrob.data.images import ImageData
from locrob.errors import LocrobError
from locrob.hookspecs import RegisterDatasetSource, hookimpl

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10


def cifar_split(variant: str, root: str | Path, *, train: bool, download: bool = False) -> CIFAR10:
    """One split of torchvision's CIFAR-10 (``variant="cifar10"``) or CIFAR-100 under ``root``.

    Files absent without ``download`` are an error naming the folder, before anything is
    created; a download that fails is an error too, and the empty folders it made are removed.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if variant == "cifar10" else CIFAR100
    root = Path(root)
    folder = root / cls.base_folder
    if not download and not folder.is_dir():
        raise LocrobError(
            f"{variant} files not found: expected {folder}/ (torchvision's python-version "
            f"layout); extract {cls.filename} into {root} or pass --download "
            "(download=True in Python)"
        )
    try:
        with no_empty_dirs_left(root):
            return cls(str(root), train=train, download=download)
    except RuntimeError as err:  # torchvision's missing-or-corrupted check
        fix = "or download it again" if download else "or pass --download"
        raise LocrobError(
            f"{variant} files in {folder} are missing or fail their checksum ({err}); "
            f"re-extract {cls.filename} there {fix}"
        ) from None
    except OSError as err:  # a download that cannot reach the server (URLError is an OSError)
        raise LocrobError(
            f"could not download {variant} into {root} ({err}); download {cls.url} elsewhere "
            f"and extract it into {root}"
        ) from None


def load_cifar(
    arg: str | None = None,
    *,
    variant: str = "cifar10",
    data_dir: str | Path | None = None,
    download: bool = False,
    **_: object,
) -> ImageData:
    """CIFAR-10 or CIFAR-100 through torchvision, held as uint8 NCHW.

    ``data_dir`` holds ``cifar-10-batches-py/`` (or ``cifar-100-python/``) as torchvision
    extracts it; ``download=True`` lets torchvision fetch it there first.
    """
    root = Path(arg or data_dir or DEFAULT_DATA_DIR)
    train = cifar_split(variant, root, train=True, download=download)
    test = cifar_split(variant, root, train=False, download=download)

    def nchw(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    return ImageData(
        name=variant,
        train_x=nchw(train.data),
        train_y=torch.as_tensor(train.targets),
        test_x=nchw(test.data),
        test_y=torch.as_tensor(test.targets),
        classes=list(train.classes),
    )


@hookimpl
def register_dataset_sources(register: RegisterDatasetSource) -> None:
    register("cifar10", partial(load_cifar, variant="cifar10"))
    register("cifar100", partial(load_cifar, variant="cifar100"))
