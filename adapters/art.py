"""ART (Adversarial Robustness Toolbox): models both ways, and its CLEVER and loss sensitivity.

:func:`to_art` wraps a locrob model (an ``nn.Module`` on images in [0, 1]) as an ART
``PyTorchClassifier``; :func:`art_module` turns an ART PyTorch classifier back into a module
that applies the classifier's own preprocessing (clipping, standardisation) and its network,
differentiably, so locrob takes ART classifiers wherever it takes a model (α_lim included).

ART's ``clever_u`` is slow (per example, many batches of gradients) and returns a score
capped at its radius, not a Lipschitz constant: the ``clever`` metric reports
it as the score it is, on a few examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from locrob.errors import LocrobError
from locrob.runtime import mix_seed


def _art() -> Any:
    try:
        from art.estimators.classification import PyTorchClassifier
    except ImportError as err:
        raise LocrobError(
            f"ART is needed here but cannot be imported ({err}); install it with: "
            "pip install 'locrob[art]'"
        ) from None
    return PyTorchClassifier


def to_art(
    model: nn.Module,
    input_shape: tuple[int, ...],
    nb_classes: int,
    device: str | torch.device = "cpu",
) -> Any:
    """``model`` as an ART ``PyTorchClassifier`` on images in [0, 1] (summed cross-entropy)."""
    classifier = _art()
    return classifier(
        model=model,
        # summed, so each example's loss gradient is its own, whatever the batch size
        loss=nn.CrossEntropyLoss(reduction="sum"),
        input_shape=tuple(input_shape),
        nb_classes=nb_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if torch.device(device).type == "cuda" else "cpu",
    )


class ARTModule(nn.Module):
    """An ART PyTorch classifier as a module: its preprocessing, then its network."""

    def __init__(self, classifier: Any) -> None:
        super().__init__()
        self.classifier = classifier
        self.net = classifier.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.classifier._apply_preprocessing(x, y=None, fit=False, no_grad=False)
        return self.net(x)


def art_module(classifier: Any) -> nn.Module:
    """The module computing what an ART PyTorch classifier computes, gradients included."""
    if not hasattr(classifier, "model") or not isinstance(classifier.model, nn.Module):
        raise LocrobError(
            f"only ART PyTorch classifiers can be used as models, got {type(classifier).__name__}"
        )
    return ARTModule(classifier)


def clever_scores(
    classifier: Any,
    points: np.ndarray,
    *,
    nb_batches: int,
    batch_size: int,
    radius: float,
    norm: float,
    seed: int | None = None,
    first: int = 0,
) -> list[float]:
    """ART's untargeted CLEVER score (``clever_u``) of each point, capped at ``radius``.

    ``clever_u`` samples with numpy's global generator: with ``seed``, point ``i`` (numbered
    from ``first``) is scored from a generator seeded by (seed, first + i), so a score depends
    on neither the other points nor how they are split between processes; the caller's
    stream is restored afterwards.
    """
    from art.metrics import clever_u

    state = np.random.get_state()
    scores = []
    try:
        for i, point in enumerate(points, start=first):
            if seed is not None:
                np.random.seed(mix_seed(seed, i) & 0xFFFFFFFF)  # the legacy seed is 32-bit
            scores.append(
                float(
                    clever_u(classifier, point, nb_batches, batch_size, radius, norm, verbose=False)
                )
            )
        return scores
    finally:
        np.random.set_state(state)


def loss_sensitivity(classifier: Any, x: np.ndarray, one_hot: np.ndarray) -> float:
    """ART's ``loss_sensitivity``: the mean L2 norm of each example's loss input gradient."""
    from art.metrics import loss_sensitivity as art_loss_sensitivity

    return float(art_loss_sensitivity(classifier, x, one_hot))
