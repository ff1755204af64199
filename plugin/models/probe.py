"""A model run on two examples before real work, so a mismatch is one clear error."""

from __future__ import annotations

import torch
from torch import nn

from locrob.data.images import to_float
from locrob.errors import LocrobError
from locrob.runtime import eval_mode


@torch.no_grad()
def check_model(
    model: nn.Module, images: torch.Tensor, num_classes: int, data_name: str, device: torch.device
) -> None:
    """Check that ``model`` maps ``images[:2]`` to one row of ``num_classes`` (or more) scores."""
    x = to_float(images[:2], device)
    # eval mode: batch norm in training mode would move its running statistics
    with eval_mode(model):
        try:
            out = model(x)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise LocrobError(
                f"the model fails on {data_name} images of shape {tuple(x.shape[1:])}: {first}"
            ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LocrobError(
            f"the model must return one row of class scores per image: {len(x)} images gave {shape}"
        )
    if out.shape[1] < num_classes:
        raise LocrobError(
            f"the model scores {out.shape[1]} classes but {data_name} has {num_classes}"
        )
