"""The JPEG round trip of the ``jpeg_compression`` corruption, through the fastest codec that
gives the reference's images.

The reference saves and reloads each image through PIL (libjpeg, 4:2:0 chroma). torchvision's
codec takes a whole batch as a list: on the CPU it is libjpeg too and gives PIL's pixels
exactly; on a GPU it is nvJPEG, whose integer transforms differ from libjpeg's. Each is used
only where a probe at first use shows it: bit for bit on the CPU, within ``MIN_PSNR`` of PIL's
pixels on every probe image on a GPU. Otherwise PIL, image by image on the CPU (also where
torchvision's codec is gone: torchvision 0.29 deprecates it for TorchCodec's).
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

MIN_PSNR = 40.0  # dB against PIL's round trip, for a GPU codec
RoundTrip = Callable[[torch.Tensor, int], torch.Tensor]


def round_trip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """``pixels`` (uint8, (B, C, H, W), C = 1 or 3) saved and reloaded as JPEG at ``quality``,
    on their device."""
    return _codec(pixels.device.type)(pixels, quality).to(pixels.device)


def pil_round_trip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """Through PIL, one image at a time (the reference's codec)."""
    from PIL import Image

    hwc = pixels.permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in hwc:
        buffer = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
            buffer, "JPEG", quality=quality
        )
        with Image.open(buffer) as file:
            decoded.append(np.asarray(file).reshape(image.shape))
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)


def torchvision_round_trip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """Through torchvision's codec on the pixels' device, the batch as one list; grey images
    on the CPU (nvJPEG's encoder takes colour images only)."""
    if pixels.shape[1] == 1:
        pixels = pixels.cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 0.29's notice; see the docstring
        from torchvision.io import decode_jpeg, encode_jpeg

        encoded = encode_jpeg(list(pixels), quality=quality)
        # the decoder reads the bytes from host memory; nvJPEG's encoder leaves them on the GPU
        return torch.stack(decode_jpeg([e.cpu() for e in encoded], device=pixels.device))


def _probe() -> torch.Tensor:
    """Images on which codecs differ if they do: noise, and smooth gradients (where JPEG's
    blocks show), in colour and in grey."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    coarse = torch.randint(0, 256, (4, 3, 6, 6), generator=g).float()
    smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear")
    return torch.cat([noise, smooth.round().clamp(0, 255).to(torch.uint8)])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest PSNR over the images of two batches, in dB."""
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    worst = float(mse.max())
    return math.inf if worst == 0 else 10 * math.log10(255**2 / worst)


@functools.cache
def _codec(device: str) -> RoundTrip:
    """The round trip for images on a ``device`` of this type: torchvision's there, or on the
    CPU, where the probe accepts it; else PIL's."""
    probe = _probe()
    for where in dict.fromkeys([device, "cpu"]):
        try:
            for images in (probe, probe[:, :1]):
                for quality in (5, 20, 80):
                    reference = pil_round_trip(images, quality)
                    ours = torchvision_round_trip(images.to(where), quality).cpu()
                    same = torch.equal(ours, reference)
                    if not (same if where == "cpu" else _psnr(ours, reference) >= MIN_PSNR):
                        raise ValueError(f"its images differ from PIL's (on {where})")
        except Exception as err:  # an older torchvision, no nvJPEG, a different libjpeg
            warnings.warn(f"jpeg_compression: torchvision's codec not used ({err})", stacklevel=2)
            continue
        if where == device:
            return torchvision_round_trip
        return lambda pixels, quality: torchvision_round_trip(pixels.cpu(), quality)
    return pil_round_trip
