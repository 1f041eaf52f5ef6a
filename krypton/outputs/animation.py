"""The occlusion sweep as an animation: the patch sliding over the image while the heat map fills in.

Left: the image with the occluding patch at the current position. Right: the image with the per-cell
drop in P(target) of every position visited so far (RdBu_r on the same symmetric scale as the PNG).
Positions are visited in row-major order; long sweeps are shown with at most `frames` frames. GIF via
Pillow; MP4 when imageio with its ffmpeg plugin is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_FRAMES = 120
SIDE = 320  # pixels of each half of a frame (long side)


def animate(explanation: Any, path: str | Path, image: Any = None, *, frames: int = MAX_FRAMES, fps: int = 12,
            scale: float | str = "auto") -> Path:  # fmt: skip
    """Write the sweep to `path` (.gif, or .mp4 with imageio-ffmpeg); returns the path."""
    from PIL import Image

    from krypton.outputs.maps import colour_limit, overlay_rgba
    from krypton.outputs.render import display_pixels

    if explanation.rank != 2:
        raise ValueError("animate draws 2-D image explanations; volumes and signals have their own pictures")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"cannot animate to {path.name}: use .gif (or .mp4 with imageio-ffmpeg installed)")
    if not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an int >= 2, got {frames!r}")
    pixels = display_pixels(image if image is not None else explanation.display_image)
    h, w = explanation.image_size
    if pixels is None:
        pixels = np.full((h, w, 3), 0.5)
    factor = SIDE / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    picture = Image.fromarray((pixels * 255).round().astype(np.uint8))
    base = picture.resize(size, Image.Resampling.BILINEAR).convert("RGBA")
    corners = explanation.positions.reshape(-1, 2).numpy()
    drop = (explanation.probability - explanation.heatmap.double()).numpy().reshape(-1)
    limit = colour_limit(explanation, scale)
    rgba, _ = overlay_rgba(drop, limit, 0.8)
    ph, pw = explanation.patch
    sh, sw = explanation.stride
    count = len(corners)
    stops = np.unique(np.linspace(1, count, min(frames, count)).round().astype(int))
    pictures = [_frame(base, corners, rgba, stops[i], (ph, pw), (sh, sw), factor) for i in range(len(stops))]
    pictures += [pictures[-1]] * max(1, fps)  # hold the finished map for a second
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        first, *rest = [p.convert("P", palette=Image.Palette.ADAPTIVE) for p in pictures]
        first.save(path, save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
        return path
    try:
        import imageio.v3 as iio
    except ImportError:
        raise ValueError("MP4 needs imageio with imageio-ffmpeg; write a .gif instead") from None
    try:
        iio.imwrite(path, np.stack([np.asarray(p.convert("RGB")) for p in pictures]), fps=fps)
    except Exception as exc:  # no ffmpeg backend
        raise ValueError(f"MP4 needs imageio-ffmpeg ({str(exc).splitlines()[0]}); write a .gif instead") from None
    return path


def _frame(base: Any, corners: np.ndarray, rgba: np.ndarray, done: int, patch: tuple[int, int],
           stride: tuple[int, int], factor: float) -> Any:  # fmt: skip
    """One frame: the patch at position done-1 (left), the cells of positions < done (right)."""
    from PIL import Image, ImageDraw

    left, right = base.copy(), base.copy()
    cells = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(cells)
    (ph, pw), (sh, sw) = patch, stride
    for (y, x), colour in zip(corners[:done], rgba[:done]):
        cy, cx = y + ph / 2, x + pw / 2  # each position's cell: stride-sized, centred on its patch
        box = [(cx - sw / 2) * factor, (cy - sh / 2) * factor, (cx + sw / 2) * factor - 1, (cy + sh / 2) * factor - 1]
        draw.rectangle(box, fill=tuple(int(round(255 * c)) for c in colour))
    right = Image.alpha_composite(right, cells)
    y, x = corners[done - 1]
    marker = ImageDraw.Draw(left)
    marker.rectangle([x * factor, y * factor, (x + pw) * factor - 1, (y + ph) * factor - 1],
                     fill=(128, 128, 128, 255), outline=(255, 255, 0, 255), width=2)  # fmt: skip
    frame = Image.new("RGBA", (base.width * 2 + 8, base.height), (255, 255, 255, 255))
    frame.paste(left, (0, 0))
    frame.paste(right, (base.width + 8, 0))
    return frame.convert("RGB")
