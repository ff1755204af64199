"""L2-nonexpansive networks (Qian & Wegman, ICLR 2019): every layer is 1-Lipschitz in L2.

The authors' training code is not public; the choices made here:

* Linear and conv maps are rescaled in the forward pass so that they are nonexpansive by
  construction: W is divided by max(1, b(W)) with b(W) = sqrt(min(r(W^T W), r(W W^T))), r the
  largest absolute row sum, a bound on the spectral norm. A stride-1 k_h x k_w conv is also
  divided by sqrt(k_h k_w): im2col copies each pixel at most k_h k_w times, so
  ||conv|| <= sqrt(k_h k_w) ||W||_2.
* Weights start orthogonal (rows orthonormal) with zero biases: with random weights the maps
  contract so much that the examples collapse to one point and nothing trains.
* Two-sided ReLU, concat(relu(x), relu(-x)): nonexpansive, and it keeps the sign information a
  ReLU discards.
* L2 norm pooling, ``torch.nn.LPPool2d(2, 2)`` over disjoint windows (1-Lipschitz by the
  triangle inequality).
* No batch norm; inputs are centred (x - 0.5), a translation, rather than divided by a
  standard deviation below 1, which would expand distances. Biases are translations too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from locrob.hookspecs import RegisterModelSource, hookimpl
from locrob.models.architectures import Architecture


def spectral_bound(w: torch.Tensor) -> torch.Tensor:
    """sqrt(min(r(W^T W), r(W W^T))) >= ||W||_2, for W reshaped to (out, -1)."""
    w = w.reshape(w.shape[0], -1)
    gram_in = (w.T @ w).abs().sum(dim=1).max()
    gram_out = (w @ w.T).abs().sum(dim=1).max()
    return torch.sqrt(torch.minimum(gram_in, gram_out))


class NonexpansiveLinear(nn.Linear):
    """A linear map rescaled to spectral norm at most 1."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        nn.init.orthogonal_(self.weight)
        nn.init.zeros_(self.bias)

    def effective_weight(self) -> torch.Tensor:
        return self.weight / torch.clamp(spectral_bound(self.weight), min=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class NonexpansiveConv2d(nn.Conv2d):
    """A stride-1, same-padding convolution rescaled to L2 operator norm at most 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.orthogonal_(self.weight.view(out_channels, -1))
        nn.init.zeros_(self.bias)

    def effective_weight(self) -> torch.Tensor:
        kh, kw = self.kernel_size
        bound = spectral_bound(self.weight) * math.sqrt(kh * kw)
        return self.weight / torch.clamp(bound, min=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class TwoSidedReLU(nn.Module):
    """concat(relu(x), relu(-x)) along the channels (doubles them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


class Center(nn.Module):
    """x - 0.5: a translation, so distances are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.5


L2NN_LAYERS = (
    NonexpansiveLinear,
    NonexpansiveConv2d,
    TwoSidedReLU,
    nn.LPPool2d,
    Center,
    nn.Flatten,
)


def l2nn(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 32
) -> nn.Sequential:
    """An L2NN for 32x32 inputs: three conv / two-sided ReLU / L2-pool stages, then a linear map."""
    layers: list[nn.Module] = [Center()]
    channels = in_channels
    for out in (width, 2 * width, 2 * width):
        layers += [NonexpansiveConv2d(channels, out, 3), TwoSidedReLU(), nn.LPPool2d(2, 2)]
        channels = 2 * out
    side = image_size // 8
    layers += [nn.Flatten(), NonexpansiveLinear(channels * side * side, num_classes)]
    return nn.Sequential(*layers)


@hookimpl
def register_model_sources(register: RegisterModelSource) -> None:
    register("l2nn", Architecture("l2nn", l2nn))
