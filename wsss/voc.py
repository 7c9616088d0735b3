"""PASCAL VOC 2012 layout, classes, palette, masks and labels: :mod:`glmix_viz.voc`, re-exported.

The reader lives below both packages (``glmix-viz`` reads VOC too and never
imports ``wsss``); ``from wsss.voc import ...`` keeps working.
"""
from __future__ import annotations

from glmix_viz.voc import (
    IGNORE_INDEX,
    LABEL_SOURCES,
    NUM_CLASSES,
    VOC_CLASSES,
    VOC_FOREGROUND,
    VOC_PALETTE,
    VOCLayout,
    id_to_key,
    labels_from_mask,
    labels_from_xml,
    load_cls_labels,
    read_mask,
    save_cls_labels,
    save_mask,
)

__all__ = [  # glmix_viz.voc's (tests/test_voc.py checks they agree)
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
