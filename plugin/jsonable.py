"""Convert results to plain JSON values where they are made, not after a long run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from locrob.errors import LocrobError


def jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON types: numpy and 0-d torch scalars to numbers, arrays and tuples to
    lists, non-finite floats to ``None`` (strict JSON has no NaN). Dict keys must be strings.
    Anything else is an error naming ``where``.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
        return jsonable(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [jsonable(v, where) for v in value]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise LocrobError(f"{where}: dict keys must be strings, got {bad[0]!r}")
        return {k: jsonable(v, f"{where}.{k}") for k, v in value.items()}
    raise LocrobError(f"{where}: {type(value).__name__} is not JSON-able; use numbers, text, lists")
