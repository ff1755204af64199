"""Weather corruptions: snow, frost and fog.

Parameters are those of ``make_cifar_c.py`` (preset ``cifar``) and ``make_imagenet_c.py``
(preset ``imagenet``) in the public hendrycks/robustness repository. Frost overlays crops of
the reference's frost photographs, read from the ``imagecorruptions`` package, which ships
them (``pip install 'locrob[corruptions]'``).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from locrob.corruptions.base import Corruption
from locrob.corruptions.blur import motion_blur_at
from locrob.corruptions.operators import (
    clipped_zoom_matrix,
    linear_resize_matrix,
    luminance,
    separable,
)
from locrob.errors import LocrobError
from locrob.streams import Streams

# the reference draws np.random.randint(5) over its six files, so the sixth is never used
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def plasma_fractal(size: int, decay: float, streams: Streams) -> torch.Tensor:
    """One diamond-square height map per stream of side ``size`` (a power of two), each in [0, 1].

    The reference's generator: the random offset starts at ±100² and shrinks by ``decay`` at
    each halving of the step; all maps are built at once.
    """
    maps = torch.zeros(len(streams), size, size, dtype=torch.float64, device=streams.device)
    steps = [size >> k for k in range(size.bit_length() - 1)]  # size, size / 2, ..., 2
    # all of an image's offsets in one draw (three sets per step), sliced in the order used
    counts = [(size // step) ** 2 for step in steps for _ in range(3)]
    unit = iter(streams.uniform((sum(counts),), -1, 1).split(counts, dim=1))
    wibble = 100.0
    for step in steps:
        half = step // 2

        def wibbled(mean4: torch.Tensor, wibble: float = wibble) -> torch.Tensor:
            # the reference's wibble * uniform(-wibble, wibble)
            return mean4 / 4 + wibble * wibble * next(unit).view_as(mean4)

        corners = maps[:, ::step, ::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        maps[:, half::step, half::step] = wibbled(square)
        centres, corners = maps[:, half::step, half::step], maps[:, ::step, ::step]
        maps[:, ::step, half::step] = wibbled(
            centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        )
        maps[:, half::step, ::step] = wibbled(
            centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        )
        wibble /= decay
    low = maps.amin(dim=(1, 2), keepdim=True)
    maps = maps - low
    return maps / maps.amax(dim=(1, 2), keepdim=True)


def fog(x: torch.Tensor, params: tuple[float, float], streams: Streams) -> torch.Tensor:
    """A plasma-fractal haze of weight ``strength``, then a rescale that keeps the image's peak."""
    strength, decay = params
    h, w = x.shape[-2:]
    size = 1 << (max(h, w) - 1).bit_length()  # the map is square, a power of two
    haze = plasma_fractal(size, decay, streams)[:, None, :h, :w].to(x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


def frost_folder() -> Path:
    """The folder of frost photographs inside the installed ``imagecorruptions`` package."""
    spec = importlib.util.find_spec("imagecorruptions")  # no import: it pulls in OpenCV
    if spec is None or not spec.submodule_search_locations:
        raise LocrobError(
            "corruption 'frost' needs the frost photographs of the imagecorruptions package; "
            "install them with: pip install 'locrob[corruptions]'"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    missing = [name for name in FROST_FILES if not (folder / name).is_file()]
    if missing:
        raise LocrobError(
            f"corruption 'frost': {', '.join(missing)} missing from {folder}; reinstall "
            "imagecorruptions"
        )
    return folder


@lru_cache(maxsize=8)
def frost_textures(scale: float, h: int, w: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The frost photographs resized by ``scale``, zero-padded into one stack, and their sizes.

    The reference reads them with OpenCV and shrinks them with its bilinear resize
    (``fx = fy = 0.2`` for CIFAR-10). A photograph that would come out smaller than the image
    is enlarged to 1.1 times the image's size instead, as imagecorruptions does.
    """
    from PIL import Image

    folder = frost_folder()
    textures = []
    for name in FROST_FILES:
        with Image.open(folder / name) as file:
            image = torch.from_numpy(np.asarray(file.convert("RGB"), dtype=np.float64))
        th, tw = image.shape[:2]
        factor = scale * max(1.0, 1.1 * h / (th * scale), 1.1 * w / (tw * scale))
        resized = separable(
            image.permute(2, 0, 1),
            linear_resize_matrix(th, factor),
            linear_resize_matrix(tw, factor),
        )
        textures.append(resized.round().clamp(0, 255) / 255)  # OpenCV returns 8-bit
    sizes = torch.tensor([t.shape[-2:] for t in textures])
    stack = torch.zeros(len(textures), 3, int(sizes[:, 0].max()), int(sizes[:, 1].max()))
    for k, texture in enumerate(textures):
        stack[k, :, : texture.shape[1], : texture.shape[2]] = texture
    return stack.to(device), sizes.to(device)


def frost_crops(
    textures: torch.Tensor,
    sizes: torch.Tensor,
    choice: torch.Tensor,
    corner: torch.Tensor,
    h: int,
    w: int,
) -> torch.Tensor:
    """Crops ``h x w`` of texture ``choice[i]`` at the relative ``corner[i]`` in [0, 1)², RGB."""
    room = sizes[choice] - torch.tensor([h, w], device=sizes.device)
    top_left = (corner * room).long()  # an integer in [0, room), as numpy's randint
    rows = top_left[:, :1] + torch.arange(h, device=choice.device)
    cols = top_left[:, 1:] + torch.arange(w, device=choice.device)
    crops = textures[choice[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2)


def frost(x: torch.Tensor, params: tuple[float, float, float], streams: Streams) -> torch.Tensor:
    """``keep · x + frost · crop`` of a random frost photograph at a random place."""
    keep, amount, scale = params
    c, h, w = x.shape[1:]
    textures, sizes = frost_textures(scale, h, w, str(x.device))
    choice = streams.randint(0, len(FROST_FILES), ())
    corner = streams.uniform((2,), 0, 1)
    crops = frost_crops(textures, sizes, choice, corner, h, w).to(x.dtype)
    return keep * x + amount * (crops if c == 3 else luminance(crops))


def snow(x: torch.Tensor, params: tuple[float, ...], streams: Streams) -> torch.Tensor:
    """Falling snow: a zoomed, thresholded noise layer streaked by motion blur, over a
    brightened greyish image, added with its 180-degree rotation."""
    loc, scale, zoom, threshold, radius, sigma, blend = params
    h, w = x.shape[-2:]
    flakes = loc + scale * streams.randn((1, h, w), x.dtype)
    flakes = separable(flakes, clipped_zoom_matrix(h, zoom), clipped_zoom_matrix(w, zoom))
    flakes = torch.where(flakes < threshold, 0, flakes).clamp(0, 1)
    flakes = torch.floor(flakes * 255) / 255  # the reference stores the layer as an 8-bit PNG
    angles = streams.uniform((), -135, -45)
    flakes = torch.round(motion_blur_at(flakes, radius, sigma, angles) * 255) / 255
    x = blend * x + (1 - blend) * torch.maximum(x, luminance(x) * 1.5 + 0.5)
    return x + flakes + flakes.flip(-2, -1)


CORRUPTIONS = (
    Corruption(
        "snow",
        snow,
        {
            "cifar": (
                (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
            ),
            "imagenet": (
                (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
            ),
        },
    ),
    Corruption(
        "frost",
        frost,
        {
            # (image weight, frost weight, resize of the photographs)
            "cifar": (
                (1, 0.2, 0.2),
                (1, 0.3, 0.2),
                (0.9, 0.4, 0.2),
                (0.85, 0.4, 0.2),
                (0.75, 0.45, 0.2),
            ),
            "imagenet": (
                (1, 0.4, 1.0),
                (0.8, 0.6, 1.0),
                (0.7, 0.7, 1.0),
                (0.65, 0.7, 1.0),
                (0.6, 0.75, 1.0),
            ),
        },
    ),
    Corruption(
        "fog",
        fog,
        {
            "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
            "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
        },
    ),
)
