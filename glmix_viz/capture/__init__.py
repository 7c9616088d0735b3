"""Capture slot logits, clustering weights and dispatch maps (and the features clustered) from GLMix
blocks."""
from .slots import FeatureCapture, SlotCapture, SlotRecord, glmix_blocks, resolve_blocks

__all__ = ["FeatureCapture", "SlotCapture", "SlotRecord", "glmix_blocks", "resolve_blocks"]
