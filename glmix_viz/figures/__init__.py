"""Figures of slots: functions take arrays and return uint8 images or matplotlib Figures."""
from .slots import colormap_lut, render_hard_grouping, render_slot_grid, slot_palette

__all__ = ["colormap_lut", "render_hard_grouping", "render_slot_grid", "slot_palette"]
