"""A user's own arrays: ``npz:<path>`` with ``x_train, y_train, x_test, y_test``.

Images are NCHW, uint8 or float in [0, 1]; an optional ``classes`` array names the classes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from locrob.data.images import ImageData
from locrob.errors import LocrobError
from locrob.hookspecs import RegisterDatasetSource, hookimpl

KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(
    arg: str | None = None, *, data_dir: str | Path | None = None, **_: object
) -> ImageData:
    """Load ``x_train, y_train, x_test, y_test`` from an ``.npz`` file."""
    path = Path(arg or data_dir or "")
    if not path.is_file():
        raise LocrobError(
            f"npz data set file not found: '{path}'; use --dataset npz:<path> with a file "
            f"holding the arrays {', '.join(KEYS)}"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise LocrobError(
                    f"{path} lacks the arrays {', '.join(missing)}; it needs {', '.join(KEYS)}"
                )
            arrays = {key: archive[key] for key in KEYS}
            classes = [str(c) for c in archive["classes"]] if "classes" in archive.files else []
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise LocrobError(f"{path} is not a readable .npz file ({err})") from None
    return ImageData(
        name=path.stem,
        train_x=arrays["x_train"],
        train_y=arrays["y_train"],
        test_x=arrays["x_test"],
        test_y=arrays["y_test"],
        classes=classes,
    )


@hookimpl
def register_dataset_sources(register: RegisterDatasetSource) -> None:
    register("npz", load_npz)
