"""EmojiVOC: PASCAL VOC's 20 classes drawn as colour emoji, with exact masks, in VOC's layout.

Each image has 1 to 4 objects (random glyph of the class, scale, rotation,
flip, position, partial occlusion, cropping at the border) on a procedural
background (gradients, noise, stripes, checks, tinted sample photos from
scikit-image) with non-VOC emoji as distractors. Masks are exact, with a void
(255) band along object boundaries as VOC has. The same seed gives the same
bytes: every image draws from its own generator seeded by ``(seed, index)``.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
from PIL import Image, ImageFilter

from glmix_viz.fileio import atomic_write

from .voc import IGNORE_INDEX, VOC_CLASSES, id_to_key, labels_from_mask, save_cls_labels, save_mask

__all__ = ["EmojiVOCConfig", "SPRITES_DIR", "load_sprites", "render_scene", "make_emojivoc"]

_logger = logging.getLogger(__name__)

SPRITES_DIR = Path(__file__).parent / "data" / "emoji"
ID_YEAR = 2026


@dataclass(frozen=True)
class EmojiVOCConfig:
    """Scene parameters.

    Attributes:
        min_side, max_side: image sides are drawn from this range (VOC's are mostly 500x375).
        max_objects: 1..max_objects objects per image.
        min_scale, max_scale: object size (longest side) as a fraction of the image's shorter side.
        max_rotation: degrees, either way.
        max_distractors: non-VOC emoji per image (0..max).
        void_width: width in pixels of the 255 band along object boundaries.
        jpeg_quality: of the written JPEGs.
    """

    min_side: int = 320
    max_side: int = 500
    max_objects: int = 4
    min_scale: float = 0.18
    max_scale: float = 0.85
    max_rotation: float = 25.0
    max_distractors: int = 3
    void_width: int = 5
    jpeg_quality: int = 90


@lru_cache(maxsize=1)
def load_sprites() -> Tuple[Dict[int, List[Image.Image]], List[Image.Image]]:
    """Bundled sprites: ``({class index 1..20: [RGBA]}, [distractor RGBA])``."""
    manifest_path = SPRITES_DIR / "sprites.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"emoji sprites missing: {manifest_path} "
                                "(run scripts/render_emoji_sprites.py)")
    manifest = json.loads(manifest_path.read_text())
    classes: Dict[int, List[Image.Image]] = {c: [] for c in range(1, len(VOC_CLASSES))}
    distractors: List[Image.Image] = []
    for name in sorted(manifest):
        with Image.open(SPRITES_DIR / name) as img:
            sprite = img.convert("RGBA")
        cls = manifest[name]["class"]
        (classes[VOC_CLASSES.index(cls)] if cls else distractors).append(sprite)
    empty = [VOC_CLASSES[c] for c, s in classes.items() if not s]
    if empty:
        raise ValueError(f"no sprites for classes {empty} in {manifest_path}")
    return classes, distractors


@lru_cache(maxsize=1)
def _photos() -> List[np.ndarray]:
    """Texture-like sample photos from scikit-image (none shows a VOC class)."""
    from skimage import data

    photos = []
    for name in ("grass", "gravel", "brick", "hubble_deep_field", "moon", "rocket", "coffee", "retina"):
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # a sample missing from this scikit-image: use the others
            continue
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        photos.append(img[..., :3].astype(np.uint8))
    return photos


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.integers(0, 5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # linear gradient between two colours
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    elif kind == 1:  # smooth coloured noise
        small = rng.uniform(0, 255, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32)
        img += rng.normal(0, rng.uniform(2, 14), img.shape)
    elif kind == 2:  # stripes
        period = rng.uniform(12, 80)
        angle = rng.uniform(0, np.pi)
        t = (np.sin((np.cos(angle) * xx + np.sin(angle) * yy) / period * 2 * np.pi) > 0)[..., None]
        img = np.where(t, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3))
    elif kind == 3:  # checks
        cell = rng.uniform(16, 90)
        t = (((xx // cell) + (yy // cell)) % 2 == 0)[..., None]
        img = np.where(t, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3))
    else:  # a tinted crop of a sample photo
        photos = _photos()
        photo = photos[int(rng.integers(0, len(photos)))]
        ph, pw = photo.shape[:2]
        scale = max(w / pw, h / ph) * rng.uniform(1.0, 1.6)
        big = Image.fromarray(photo).resize((max(w, int(pw * scale)), max(h, int(ph * scale))),
                                            Image.Resampling.BILINEAR)
        x0 = int(rng.integers(0, big.width - w + 1))
        y0 = int(rng.integers(0, big.height - h + 1))
        img = np.asarray(big.crop((x0, y0, x0 + w, y0 + h)), np.float32)
        img = img * rng.uniform(0.6, 1.2, 3) + rng.uniform(-30, 30, 3)
    return np.clip(img, 0, 255)


def _place(rng: np.random.Generator, sprite: Image.Image, w: int, h: int, size: float, cfg: EmojiVOCConfig):
    """Scale, flip and rotate a sprite; return it with a top-left position (may overhang the border)."""
    s = size / max(sprite.size)
    img = sprite.resize((max(4, int(sprite.width * s)), max(4, int(sprite.height * s))),
                        Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
    img = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    # centre anywhere in the image: objects near the border are cropped
    cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
    return img, (int(cx - img.width / 2), int(cy - img.height / 2))


def render_scene(index: int, seed: int,
                 cfg: EmojiVOCConfig = EmojiVOCConfig()) -> Tuple[Image.Image, np.ndarray]:
    """One scene: ``(RGB image, (H, W) uint8 mask with 0..20 and 255 void)``."""
    rng = np.random.default_rng([seed, index])
    classes, distractors = load_sprites()
    w = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    h = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    canvas = Image.fromarray(_background(rng, w, h).astype(np.uint8)).convert("RGBA")
    short = min(w, h)
    for _ in range(int(rng.integers(0, cfg.max_distractors + 1))):
        sprite = distractors[int(rng.integers(0, len(distractors)))]
        img, pos = _place(rng, sprite, w, h, short * rng.uniform(0.1, 0.4), cfg)
        canvas.paste(img, pos, img)
    mask = np.zeros((h, w), np.uint8)
    n_objects = int(rng.integers(1, cfg.max_objects + 1))
    for _ in range(n_objects):
        cls = int(rng.integers(1, len(VOC_CLASSES)))
        sprite = classes[cls][int(rng.integers(0, len(classes[cls])))]
        size = short * np.exp(rng.uniform(np.log(cfg.min_scale), np.log(cfg.max_scale)))
        img, (x0, y0) = _place(rng, sprite, w, h, size, cfg)
        if rng.random() < 0.3:  # photometric variety
            rgb = np.asarray(img, np.float32)
            rgb[..., :3] = np.clip(rgb[..., :3] * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20), 0, 255)
            img = Image.fromarray(rgb.astype(np.uint8), "RGBA")
        canvas.paste(img, (x0, y0), img)
        layer = Image.new("L", (w, h), 0)
        layer.paste(img.getchannel("A"), (x0, y0))
        alpha = np.asarray(layer)
        mask[alpha >= 128] = cls  # later objects occlude earlier ones
    if cfg.void_width > 0:
        edge = np.zeros((h, w), bool)
        edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        edge[1:, :] |= mask[1:, :] != mask[:-1, :]
        size = cfg.void_width if cfg.void_width % 2 else cfg.void_width + 1
        band = np.asarray(Image.fromarray(edge.astype(np.uint8) * 255)
                          .filter(ImageFilter.MaxFilter(size))) > 0
        mask = np.where(band, IGNORE_INDEX, mask).astype(np.uint8)
    return canvas.convert("RGB"), mask


def _write_scene(job: Tuple[int, str], *, seed: int, config: EmojiVOCConfig,
                 voc: Path) -> Tuple[int, np.ndarray]:
    """Render scene ``job = (i, image id)`` and write its JPEG and mask; returns
    ``(label key, labels (20,))``."""
    i, image_id = job
    image, mask = render_scene(i, seed, config)
    atomic_write(voc / "JPEGImages" / f"{image_id}.jpg",
                  lambda p: image.save(p, format="JPEG", quality=config.jpeg_quality))
    atomic_write(voc / "SegmentationClass" / f"{image_id}.png", lambda p: save_mask(p, mask))
    return id_to_key(image_id), labels_from_mask(mask)


def make_emojivoc(
    out: Union[str, Path],
    *,
    train: int,
    val: int,
    seed: int = 0,
    config: EmojiVOCConfig = EmojiVOCConfig(),
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate EmojiVOC under ``out`` in VOC 2012's layout.

    Writes ``out/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}``
    (lists ``train``, ``val``, ``trainval``) and ``out/voc12/cls_labels.npy``.
    Existing files of a previous run with the same arguments are overwritten
    with identical bytes. ``workers`` processes render in parallel; the bytes
    do not depend on it. Image ``i`` depends only on ``(seed, i)``, so a
    larger ``train`` keeps the smaller set's training images as its first ones.

    Returns:
        ``out``.
    """
    from tqdm import tqdm

    if train < 0 or val < 0 or train + val == 0:
        raise ValueError(f"train={train}, val={val}: give a positive number of images")
    if workers < 1:
        raise ValueError(f"workers={workers}: expected at least 1")
    out = Path(out)
    voc = out / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{ID_YEAR}_{i:06d}" for i in range(train + val)]
    write = partial(_write_scene, seed=seed, config=config, voc=voc)
    bar = partial(tqdm, total=len(ids), desc="EmojiVOC", unit="img", disable=not progress)
    if workers == 1:
        labels = dict(bar(map(write, enumerate(ids))))
    else:
        with multiprocessing.Pool(workers) as pool:
            labels = dict(bar(pool.imap(write, enumerate(ids), chunksize=8)))
    lists = {"train": ids[:train], "val": ids[train:], "trainval": ids}
    for split, split_ids in lists.items():
        atomic_write(voc / "ImageSets" / "Segmentation" / f"{split}.txt",
                      lambda p: Path(p).write_text("".join(f"{i}\n" for i in split_ids)))
    (out / "voc12").mkdir(exist_ok=True)
    atomic_write(out / "voc12" / "cls_labels.npy", lambda p: save_cls_labels(p, labels))
    _logger.info("EmojiVOC: %d train + %d val images -> %s", train, val, out)
    return out
