"""Capture slot logits, clustering weights and dispatch maps from GLMix blocks."""
from .slots import SlotCapture, SlotRecord, glmix_blocks, resolve_blocks

__all__ = ["SlotCapture", "SlotRecord", "glmix_blocks", "resolve_blocks"]
