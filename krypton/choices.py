"""The names users choose from - explanation modes, picture styles, resize rules - in one place.

Argparse choices, the web API's request types and every validation read them here; nothing is imported,
so the CLI's `--help` stays instant.
"""

from __future__ import annotations

from typing import Literal

MODES = ("naive", "exact", "approximate")  # full re-inference; incremental; incremental + approximations
Mode = Literal["naive", "exact", "approximate"]  # the same names, for request models and type hints
STYLES = ("overlay", "paper")  # heat map over the picture; the paper's grey map with a colour bar
RESIZE = ("crop", "pad", "stretch")  # how an image of another aspect ratio meets the model's input size
