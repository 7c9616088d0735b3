"""Reading images and turning them into model inputs.

Every image becomes 8-bit RGB the same way, whatever it was on disk:
EXIF rotation applied; grayscale, palette, 16-bit and float images converted;
transparency composited on white; very large images shrunk first.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_SUFFIXES",
    "Preprocess",
    "expand_image_paths",
    "load_image",
    "preprocess",
    "normalize",
    "denormalize",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIN_SIDE",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_MAX_SIDE = 2048
MIN_SIDE = 32  # the network's stride: a smaller image is less than one token

PathLike = Union[str, Path]


def expand_image_paths(items: Iterable[PathLike]) -> Tuple[List[Path], List[str]]:
    """Expand files, folders (non-recursive, image suffixes only) and glob patterns.

    Returns:
        ``(paths, unmatched)``: sorted unique paths in the order given, and the
        items that matched nothing.
    """
    paths: List[Path] = []
    unmatched: List[str] = []
    for item in items:
        item = str(item)
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True)
                           if Path(p).is_file())
        if not found:
            unmatched.append(item)
        paths.extend(found)
    seen = set()
    unique = [p for p in paths if not (p.resolve() in seen or seen.add(p.resolve()))]
    return unique, unmatched


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float images to 8-bit, scaled by their range."""
    arr = np.asarray(img).astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if img.mode.startswith("I;16") or (img.mode == "I" and hi > 255):
        scale = 65535.0 if hi <= 65535 else hi
        arr = arr / scale * 255.0
    elif img.mode == "F":
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="L")


def load_image(path: PathLike, *, max_side: int = DEFAULT_MAX_SIDE, min_side: int = 1) -> Image.Image:
    """Open an image file as 8-bit RGB.

    Args:
        path: image file.
        max_side: images with a longer side are shrunk to it first (aspect kept).
        min_side: images with a shorter side are refused; the tools pass
            ``MIN_SIDE`` (32 px, the network's stride: upsampling a smaller
            image would invent its content).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image (unknown format, truncated),
            or is smaller than ``min_side``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as img:
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size when huge
            img.load()
            img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    if min(img.size) < min_side:
        raise ValueError(f"{path}: {img.size[0]}x{img.size[1]} pixels is too small; at least {min_side} px "
                         "on each side are needed")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return img


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs.

    Attributes:
        input_size: side of the square crop (``mode="crop"``), or of the
            shorter side (``mode="whole"``).
        mode: ``"crop"``: the paper's evaluation transform (resize the shorter
            side to ``input_size / crop_pct``, centre crop); ``"whole"``: keep
            the whole image, shorter side ``input_size``, both sides rounded to
            multiples of 32 (the network's stride).
        crop_pct: see ``mode``.
        mean, std: per-channel normalisation (ImageNet's by default).
    """

    input_size: int = 224
    mode: str = "crop"
    crop_pct: float = 0.875
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.mode not in ("crop", "whole"):
            raise ValueError(f"mode={self.mode!r}; expected 'crop' or 'whole'")
        if self.input_size < 32:
            raise ValueError(f"input_size={self.input_size} is too small; use at least 32")

    def geometry(self, size: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int, int, int]]:
        """Resized ``(w, h)`` and the crop box ``(left, top, right, bottom)`` for an image ``(w, h)``."""
        w, h = size
        if self.mode == "crop":  # as torchvision's Resize(short) + CenterCrop(size), which timm uses
            short = int(self.input_size / self.crop_pct)
            rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
            left = int(round((rw - self.input_size) / 2.0))
            top = int(round((rh - self.input_size) / 2.0))
            return (rw, rh), (left, top, left + self.input_size, top + self.input_size)
        scale = self.input_size / min(w, h)
        rw = max(32, int(round(w * scale / 32)) * 32)
        rh = max(32, int(round(h * scale / 32)) * 32)
        return (rw, rh), (0, 0, rw, rh)


def preprocess(image: Image.Image, config: Preprocess = Preprocess()) -> Tuple[torch.Tensor, np.ndarray]:
    """Resize/crop an RGB image and normalise it.

    Returns:
        ``(tensor, view)``: the input ``(3, H, W)`` float32, and the uint8
        ``(H, W, 3)`` pixels the model sees (for figures).
    """
    size, box = config.geometry(image.size)
    view = np.asarray(image.resize(size, Image.Resampling.BICUBIC).crop(box), dtype=np.uint8)
    return normalize(view, config.mean, config.std), view


def normalize(pixels: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Pixels to a model input: ``(x / 255 - mean) / std`` for uint8, ``(x - mean) / std`` for floats in
    [0, 1].

    Shape:
        ``(H, W, 3) -> (3, H, W)`` float32.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB pixels, got an array of shape {pixels.shape}")
    x = (pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8
         else pixels.astype(np.float32, copy=False))
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(B, 3, H, W)`` normalised tensor back to uint8 ``(B, H, W, 3)``."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x * s + m).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
