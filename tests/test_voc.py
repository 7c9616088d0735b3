"""VOC layout reading (glmix_viz.voc, re-exported as wsss.voc) on the real VOC 2012 sample."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from glmix_viz.voc import (
    VOC_PALETTE,
    VOCLayout,
    id_to_key,
    labels_from_mask,
    labels_from_xml,
    load_cls_labels,
    read_mask,
    save_mask,
)

from .conftest import DATA

VOC_SAMPLE = DATA / "voc_sample"


def test_wsss_voc_re_exports_the_reader_below_both_packages():
    import glmix_viz.voc
    import wsss.voc

    assert wsss.voc.__all__ == glmix_viz.voc.__all__
    assert all(getattr(wsss.voc, name) is getattr(glmix_viz.voc, name) for name in glmix_viz.voc.__all__)
    code = "import sys, glmix_viz.voc; print(sorted(m for m in sys.modules if m.split('.')[0] == 'wsss'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # glmix_viz never imports wsss


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


def _annotation(*objects: str, part: bool = True) -> str:
    """A VOC 2012 annotation XML (its real structure) with the given object names."""
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{k % 2}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        f"<xmax>9</xmax><ymax>9</ymax></bndbox>"
        + ("<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
           "<xmax>3</xmax><ymax>3</ymax></bndbox></part>"
           if part and name == "person" else "")
        + "</object>"
        for k, name in enumerate(objects))
    return (f"<annotation><folder>VOC2012</folder><filename>x.jpg</filename><size><width>500</width>"
            f"<height>281</height><depth>3</depth></size><segmented>1</segmented>{body}</annotation>")


def _copy_layout(tmp_path, ids):
    """The sample's images and masks of ``ids`` with a train list, without cls_labels.npy."""
    import shutil

    src = VOCLayout(VOC_SAMPLE)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (voc / sub).mkdir(parents=True)
    for i in ids:
        shutil.copy(src.image(i), voc / "JPEGImages")
        shutil.copy(src.mask(i), voc / "SegmentationClass")
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    return VOCLayout(tmp_path)


def test_labels_from_annotation_xml_match_cls_labels(tmp_path):
    """Every object counts (difficult ones too), body parts do not; equal to the official cls_labels.npy."""
    table = load_cls_labels(VOC_SAMPLE / "voc12" / "cls_labels.npy")
    ids = ["2007_000032", "2007_000170"]
    layout = _copy_layout(tmp_path, ids)
    (layout.annotation(ids[0])).write_text(_annotation("aeroplane", "aeroplane", "person", "person"))
    (layout.annotation(ids[1])).write_text(_annotation("bottle", "person", "person", "bottle"))
    for i in ids:
        np.testing.assert_array_equal(labels_from_xml(layout.annotation(i)), table[id_to_key(i)])
    xml = layout.image_labels(ids, source="xml")
    assert all(np.array_equal(xml[i], table[id_to_key(i)]) for i in ids)
    # auto without cls_labels.npy: the mask where there is one, else the annotation
    (layout.voc / "SegmentationClass" / f"{ids[1]}.png").unlink()
    layout.annotation(ids[1]).write_text(_annotation("dog"))
    auto = layout.image_labels(ids)
    np.testing.assert_array_equal(auto[ids[0]], labels_from_mask(read_mask(layout.mask(ids[0]))))
    assert np.flatnonzero(auto[ids[1]]).tolist() == [11]  # dog, from the XML
    with pytest.raises(FileNotFoundError, match="mask not found"):
        layout.image_labels(ids, source="masks")


def test_label_sources_name_what_is_missing_or_wrong(tmp_path):
    layout = _copy_layout(tmp_path, ["2007_000032"])
    (layout.voc / "SegmentationClass" / "2007_000032.png").unlink()
    with pytest.raises(FileNotFoundError, match="no annotation .*2007_000032.xml"):
        layout.image_labels(["2007_000032"])
    with pytest.raises(FileNotFoundError, match="2007_000032.xml"):
        layout.image_labels(["2007_000032"], source="xml")
    with pytest.raises(ValueError, match="label source 'json'"):
        layout.image_labels(["2007_000032"], source="json")
    layout.annotation("2007_000032").write_text("<annotation><object><name>aeroplane</name>")
    with pytest.raises(ValueError, match="not a VOC annotation XML"):
        labels_from_xml(layout.annotation("2007_000032"))
    layout.annotation("2007_000032").write_text(_annotation("airplane"))
    with pytest.raises(ValueError, match="'airplane' is not a VOC class"):
        labels_from_xml(layout.annotation("2007_000032"))
