"""Test session settings: captured graphs are cached in a temporary folder, never in the user's home."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("KRYPTON_GRAPH_CACHE", tempfile.mkdtemp(prefix="krypton-graphs-"))
