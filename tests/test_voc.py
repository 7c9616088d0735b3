"""VOC layout reading on the real VOC 2012 sample."""
from __future__ import annotations

import numpy as np
import pytest

from wsss.voc import (
    VOC_PALETTE,
    VOCLayout,
    id_to_key,
    labels_from_mask,
    load_cls_labels,
    read_mask,
    save_mask,
)

from .conftest import DATA

VOC_SAMPLE = DATA / "voc_sample"


def test_palette_matches_official_masks():
    layout = VOCLayout(VOC_SAMPLE)
    from PIL import Image

    with Image.open(layout.mask(layout.ids("train")[0])) as m:
        official = np.asarray(m.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(official[:256], VOC_PALETTE[: len(official)])


def test_reader_reads_every_id_and_labels_agree_with_masks():
    layout = VOCLayout(VOC_SAMPLE)
    ids = layout.ids("trainval")
    assert len(ids) == len(set(ids)) == 120
    table = load_cls_labels(VOC_SAMPLE / "voc12" / "cls_labels.npy")
    for image_id in ids:
        assert layout.image(image_id).is_file()
        mask = read_mask(layout.mask(image_id))
        assert mask.ndim == 2
        np.testing.assert_array_equal(table[id_to_key(image_id)], labels_from_mask(mask))
    labels = layout.image_labels(ids[:5])
    assert set(labels) == set(ids[:5])


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit"):
        VOCLayout(tmp_path)
    layout = VOCLayout(VOC_SAMPLE)
    with pytest.raises(FileNotFoundError, match="train_aug"):
        layout.ids("train_aug")
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        layout.image_labels(layout.ids("val")[:1], tmp_path / "nope.npy")


def test_mask_round_trip(tmp_path):
    mask = np.array([[0, 1, 255], [20, 15, 0]], np.uint8)
    save_mask(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
