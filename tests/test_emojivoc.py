"""EmojiVOC generator: determinism, VOC format, labels agree with masks."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from wsss.emojivoc import load_sprites, make_emojivoc, render_scene
from wsss.voc import (
    IGNORE_INDEX,
    VOC_PALETTE,
    VOCLayout,
    id_to_key,
    labels_from_mask,
    load_cls_labels,
    read_mask,
)


def digest(folder) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_emojivoc(tmp_path_factory.mktemp("ev") / "a", train=6, val=3, seed=7, progress=False)


def test_every_class_has_sprites():
    classes, distractors = load_sprites()
    assert sorted(classes) == list(range(1, 21)) and all(classes.values()) and distractors
    assert sum(len(v) > 1 for v in classes.values()) >= 14  # most classes have several glyphs


def test_same_seed_same_bytes(small, tmp_path):
    again = make_emojivoc(tmp_path / "b", train=6, val=3, seed=7, progress=False)
    assert digest(small) == digest(again)
    other = make_emojivoc(tmp_path / "c", train=6, val=3, seed=8, progress=False)
    assert digest(other) != digest(small)


def test_parallel_workers_write_the_same_bytes(small, tmp_path):
    parallel = make_emojivoc(tmp_path / "p", train=6, val=3, seed=7, workers=2, progress=False)
    assert digest(parallel) == digest(small)


def test_more_training_images_keep_the_first_ones(small, tmp_path):
    bigger = make_emojivoc(tmp_path / "big", train=8, val=1, seed=7, progress=False)
    jpegs = "VOCdevkit/VOC2012/JPEGImages"
    first = {k: v for k, v in digest(small).items() if k.startswith(jpegs)}
    assert {k: digest(bigger)[k] for k in first} == first
    assert (bigger / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text() == "2026_000008\n"


def test_voc_layout_lists_images_masks_and_labels(small):
    layout = VOCLayout(small)
    train, val = layout.ids("train"), layout.ids("val")
    assert len(train) == 6 and len(val) == 3 and not set(train) & set(val)
    assert layout.ids("trainval") == train + val
    assert all(len(i) == 11 and i[4] == "_" for i in train)  # VOC-like ids, e.g. 2026_000003
    table = load_cls_labels(small / "voc12" / "cls_labels.npy")
    assert sorted(table) == sorted(id_to_key(i) for i in train + val)
    for image_id in train + val:
        with Image.open(layout.image(image_id)) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 320 <= img.width <= 500 and 320 <= img.height <= 500
            size = img.size
        with Image.open(layout.mask(image_id)) as m:
            assert m.mode == "P" and m.size == size
            assert np.array_equal(np.asarray(m.getpalette()[:63], np.uint8).reshape(21, 3), VOC_PALETTE[:21])
        mask = read_mask(layout.mask(image_id))
        values = set(np.unique(mask))
        assert values <= set(range(21)) | {IGNORE_INDEX}
        assert IGNORE_INDEX in values and values & set(range(1, 21))  # objects with a void band
        np.testing.assert_array_equal(table[id_to_key(image_id)], labels_from_mask(mask))


def test_void_band_separates_object_from_background():
    _, mask = render_scene(0, seed=3)
    m = mask.astype(int)
    # no pixel of a class touches a pixel of another class directly: 255 lies between
    for a, b in ((m[:, 1:], m[:, :-1]), (m[1:, :], m[:-1, :])):
        touching = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
        assert not touching.any()
