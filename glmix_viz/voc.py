"""PASCAL VOC 2012 constants and layout: classes, palette, label files, image lists.

Layout (``root`` is the folder that holds ``VOCdevkit``)::

    root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    root/VOCdevkit/VOC2012/SegmentationClass/<id>.png         palette PNG, 0..20, 255 = void
    root/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png      (SBD-augmented masks, optional)
    root/VOCdevkit/VOC2012/SegmentationObject/<id>.png        instance masks (optional): 0 background,
                                                              1..N instances, 255 = void
    root/VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt
    root/VOCdevkit/VOC2012/Annotations/<id>.xml               detection annotations (object names)
    root/voc12/cls_labels.npy                                 image-level labels (IRN/PSA format)

``cls_labels.npy`` is a pickled dict: key = int id without the underscore
(``2007_000032`` -> ``2007000032``), value = 20 floats, 1.0 where a foreground
class is present.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
from PIL import Image

from glmix_viz.untrusted import UntrustedPickleError, load_npy, parse_xml

__all__ = [
    "VOC_CLASSES",
    "VOC_FOREGROUND",
    "NUM_CLASSES",
    "IGNORE_INDEX",
    "VOC_PALETTE",
    "VOCLayout",
    "id_to_key",
    "labels_from_mask",
    "labels_from_xml",
    "LABEL_SOURCES",
    "load_cls_labels",
    "save_cls_labels",
    "read_mask",
    "save_mask",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
VOC_FOREGROUND = VOC_CLASSES[1:]
NUM_CLASSES = len(VOC_CLASSES)
IGNORE_INDEX = 255
LABEL_SOURCES = ("auto", "npy", "masks", "xml")

PathLike = Union[str, Path]


def _voc_palette() -> np.ndarray:
    """The standard VOC colour map: ``(256, 3)`` uint8, class c's colour from the bits of c."""
    palette = np.zeros((256, 3), np.uint8)
    for c in range(256):
        r = g = b = 0
        cid = c
        for shift in range(7, -1, -1):
            r |= ((cid >> 0) & 1) << shift
            g |= ((cid >> 1) & 1) << shift
            b |= ((cid >> 2) & 1) << shift
            cid >>= 3
        palette[c] = (r, g, b)
    return palette


VOC_PALETTE = _voc_palette()


def id_to_key(image_id: str) -> int:
    """``"2007_000032"`` -> ``2007000032`` (the key of ``cls_labels.npy``)."""
    return int(image_id.replace("_", ""))


def labels_from_mask(mask: np.ndarray) -> np.ndarray:
    """Image-level labels ``(20,)`` float32 from a VOC mask (0 background, 255 void ignored)."""
    present = np.unique(mask)
    out = np.zeros(NUM_CLASSES - 1, np.float32)
    fg = present[(present > 0) & (present < NUM_CLASSES)]
    out[fg - 1] = 1.0
    return out


def labels_from_xml(path: PathLike) -> np.ndarray:
    """Image-level labels ``(20,)`` float32 from a VOC annotation XML.

    The file is parsed with any DTD refused (:func:`glmix_viz.untrusted.parse_xml`).
    Every ``<object>``'s ``<name>`` counts, "difficult" ones included (as the
    ``cls_labels.npy`` of IRN/PSA); part names (``<part><name>head``) do not.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation not found: {path}")
    try:
        root = parse_xml(path)  # refuses DTDs: no entity can be declared or expanded
    except ValueError as err:
        raise ValueError(f"not a VOC annotation XML: {err}") from None
    out = np.zeros(NUM_CLASSES - 1, np.float32)
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_FOREGROUND:
            raise ValueError(f"{path}: object name {name!r} is not a VOC class ({', '.join(VOC_FOREGROUND)})")
        out[VOC_FOREGROUND.index(name)] = 1.0
    return out


_CLS_LABELS_FORMAT = ("a dict of int image key (2007_000032 -> 2007000032) -> 20 numbers "
                      "(IRN/PSA cls_labels.npy)")


def load_cls_labels(path: PathLike) -> Dict[int, np.ndarray]:
    """Read ``cls_labels.npy`` (IRN/PSA format) into ``{int key: (20,) float32}``.

    The file is a pickle; it is read by the restricted unpickler
    (:func:`glmix_viz.untrusted.load_npy`), so a file that names anything but
    arrays, numbers, strings and containers is refused, not run.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not in that format (one line naming the file
            and the format expected), or its pickle names code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image-level label file not found: {path} (expected {_CLS_LABELS_FORMAT})")
    try:
        array = load_npy(path)
    except UntrustedPickleError as err:
        raise ValueError(f"{err}; expected {_CLS_LABELS_FORMAT}") from None
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a label file ({err}); expected {_CLS_LABELS_FORMAT}") from None
    data = array.item() if array.dtype == object and array.shape == () else None
    if not isinstance(data, dict):
        what = type(data).__name__ if data is not None else f"a {array.dtype} array of shape {array.shape}"
        raise ValueError(f"{path}: holds {what}; expected {_CLS_LABELS_FORMAT}")
    out = {}
    for key, value in data.items():
        try:
            image_key = int(key)
            labels = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            labels = None
        if labels is None or labels.shape != (NUM_CLASSES - 1,) or isinstance(key, (bool, float)):
            raise ValueError(f"{path}: entry {key!r}: {value!r:.60} does not fit; expected "
                             f"{_CLS_LABELS_FORMAT}")
        out[image_key] = labels
    return out


def save_cls_labels(path: PathLike, labels: Dict[int, np.ndarray]) -> None:
    """Write ``{int key: (20,) labels}`` as ``cls_labels.npy``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, {int(k): np.asarray(v, np.float32) for k, v in sorted(labels.items())}, allow_pickle=True)


def read_mask(path: PathLike) -> np.ndarray:
    """A VOC label PNG as ``(H, W)`` uint8 class indices (palette indices, not colours)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    try:
        with Image.open(path) as img:  # PIL refuses decompression bombs (Image.MAX_IMAGE_PIXELS)
            if img.mode not in ("P", "L"):
                raise ValueError(f"{path}: expected a palette or grayscale label PNG, got mode {img.mode}")
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable label PNG ({err})") from err


def save_mask(path: PathLike, mask: np.ndarray) -> None:
    """Write ``(H, W)`` uint8 class indices as a VOC palette PNG."""
    img = Image.fromarray(np.asarray(mask, np.uint8), mode="P")
    img.putpalette(VOC_PALETTE.reshape(-1).tolist())
    img.save(path, format="PNG", optimize=False)


class VOCLayout:
    """Paths of a VOC 2012 layout under ``root`` (the folder holding ``VOCdevkit``).

    ``root`` may also be the ``VOCdevkit`` or ``VOC2012`` folder itself.
    Missing folders, lists or files are errors naming the path expected.
    """

    def __init__(self, root: PathLike) -> None:
        root = Path(root).expanduser()
        candidates = [root / "VOCdevkit" / "VOC2012", root / "VOC2012", root]
        base = next((c for c in candidates if (c / "JPEGImages").is_dir()), None)
        if base is None:
            raise FileNotFoundError(
                f"no VOC 2012 layout under {root}: expected {candidates[0] / 'JPEGImages'} "
                "(give the folder that holds VOCdevkit/)"
            )
        self.voc = base
        self.root = base.parent.parent if base.parent.name == "VOCdevkit" else base.parent

    @property
    def images(self) -> Path:
        return self.voc / "JPEGImages"

    def image(self, image_id: str) -> Path:
        return self.images / f"{image_id}.jpg"

    def mask_dir(self, aug: bool = False) -> Path:
        return self.voc / ("SegmentationClassAug" if aug else "SegmentationClass")

    def mask(self, image_id: str) -> Path:
        """The ground-truth mask, from ``SegmentationClass`` or else ``SegmentationClassAug``."""
        path = self.mask_dir() / f"{image_id}.png"
        aug = self.mask_dir(aug=True) / f"{image_id}.png"
        return path if path.is_file() or not aug.is_file() else aug

    def instance_mask(self, image_id: str) -> Optional[Path]:
        """The instance mask ``SegmentationObject/<id>.png`` (0 background, 1..N instances, 255 void), or
        ``None`` when the layout has none for this id (VOC has them for the segmentation splits only)."""
        path = self.voc / "SegmentationObject" / f"{image_id}.png"
        return path if path.is_file() else None

    def split_file(self, split: str) -> Path:
        for folder in ("Segmentation", "SegmentationAug"):
            path = self.voc / "ImageSets" / folder / f"{split}.txt"
            if path.is_file():
                return path
        for path in (self.root / "voc12" / f"{split}.txt", self.root / f"{split}.txt"):
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"no list for split {split!r}: expected "
            f"{self.voc / 'ImageSets' / 'Segmentation' / f'{split}.txt'} "
            f"(train_aug may also be {self.root / 'voc12' / 'train_aug.txt'})"
        )

    def ids(self, split: str) -> List[str]:
        """Image ids of a split, in file order."""
        return [ln.split()[0] for ln in self.split_file(split).read_text().splitlines() if ln.strip()]

    def cls_labels_file(self) -> Path:
        return self.root / "voc12" / "cls_labels.npy"

    def annotation(self, image_id: str) -> Path:
        return self.voc / "Annotations" / f"{image_id}.xml"

    def image_labels(self, ids: List[str], labels_file: Optional[PathLike] = None,
                     source: str = "auto") -> Dict[str, np.ndarray]:
        """Image-level labels ``{id: (20,)}``.

        Args:
            ids: image ids.
            labels_file: a ``cls_labels.npy`` (default ``root/voc12/cls_labels.npy``).
            source: ``"npy"`` (the labels file), ``"masks"`` (classes in the
                ground-truth mask), ``"xml"`` (``Annotations/<id>.xml``), or
                ``"auto"``: the labels file if there (or given), else each
                id's mask if there, else its annotation XML.
        """
        if source not in LABEL_SOURCES:
            raise ValueError(f"label source {source!r}: expected one of {', '.join(LABEL_SOURCES)}")
        path = Path(labels_file) if labels_file else self.cls_labels_file()
        if source == "npy" or (source == "auto" and (path.is_file() or labels_file)):
            table = load_cls_labels(path)
            missing = [i for i in ids if id_to_key(i) not in table]
            if missing:
                raise ValueError(f"{path} has no labels for {len(missing)} ids, e.g. {missing[:3]}")
            return {i: table[id_to_key(i)] for i in ids}
        out = {}
        for i in ids:
            mask, xml = self.mask(i), self.annotation(i)
            if source == "xml" or (source == "auto" and not mask.is_file() and xml.is_file()):
                out[i] = labels_from_xml(xml)
            elif mask.is_file():
                out[i] = labels_from_mask(read_mask(mask))
            elif source == "auto":
                raise FileNotFoundError(f"no image-level labels for {i}: no {path}, no mask {mask}, "
                                        f"no annotation {xml}")
            else:
                raise FileNotFoundError(f"mask not found: {mask} (labels from masks)")
        return out
