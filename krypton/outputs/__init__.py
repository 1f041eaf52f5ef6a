"""Rendering and saving explanations: overlay pictures (PNG/PDF/SVG) and raw `.npz` + `.json` results."""

from krypton.outputs.raw import save_raw, summary
from krypton.outputs.render import STYLES, drop_map, plot, png_bytes, save

__all__ = ["STYLES", "drop_map", "plot", "png_bytes", "save", "save_raw", "summary"]
