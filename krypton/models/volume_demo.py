"""The bundled 3-D demo: a SYNTHETIC task, trained here, standing in for a real CT/MRI classifier.

No registry package known to this project ships a trained 3-D medical classifier or real volumes, so
the demo is honest about being made up: 32^3 volumes of smooth noise, half of them with a small bright
blob (the stand-in for a lesion) at a random place; a small 3-D CNN learns "blob present" vs "absent".
An occlusion map of a correct "present" call should light up at the blob. The weights are trained on
first use (~10-30 s on a laptop CPU, seeded, so the same every time) and cached outside the repository
(`KRYPTON_DEMO_CACHE`, default `~/.cache/krypton/demos`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

NAME = "lesion3d"
TITLE = "SYNTHETIC 3-D task (not medical data): a bright blob in smooth noise, present vs absent, small 3-D CNN"
SIZE = 32
CLASSES = ["absent", "present"]
VERSION = 1
IMAGES = 6  # demo volumes (held out from training): lesion3d:0 ... lesion3d:5


class BlobNet(nn.Module):
    """Three conv blocks and a global average: the shape of the 3-D classifiers radiology uses, small."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in (8, 16, 32):
            layers += [nn.Conv3d(channels, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU(), nn.MaxPool3d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3, 4)))


@dataclass
class DemoVolume:
    name: str
    label: str
    data: np.ndarray  # (1, D, H, W) in [0, 1]
    blob: tuple[int, int, int] | None  # centre of the blob, if any


def make_volume(rng: np.random.Generator, present: bool) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """Smooth noise in [0, 1] (a stand-in for tissue), plus a Gaussian blob of radius ~2.5 voxels when present."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE, SIZE)), 2.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min()) * 0.6
    centre: tuple[int, int, int] | None = None
    if present:
        x, y, z = (int(c) for c in rng.integers(6, SIZE - 6, 3))
        centre = (x, y, z)
        grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"))
        distance = sum((grid[a] - centre[a]) ** 2 for a in range(3))
        noise = noise + 0.5 * np.exp(-distance / (2 * 2.5**2))
    return np.clip(noise, 0, 1).astype(np.float32)[None], centre


def volumes() -> list[DemoVolume]:
    """The demo's volumes, never seen in training (their own seed), alternating present / absent."""
    rng = np.random.default_rng(10_000 + VERSION)
    found = []
    for i in range(IMAGES):
        present = i % 2 == 0
        data, centre = make_volume(rng, present)
        found.append(DemoVolume(f"{NAME}-{i}", CLASSES[int(present)], data, centre))
    return found


def cache_path() -> Path:
    folder = Path(os.environ.get("KRYPTON_DEMO_CACHE") or Path.home() / ".cache" / "krypton" / "demos")
    return folder / f"{NAME}-v{VERSION}.pt"


def load() -> nn.Module:
    """The trained demo network (trained and cached on first use)."""
    path = cache_path()
    if path.exists():
        model = BlobNet()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    with torch.random.fork_rng():  # seeded initial weights too (they followed the caller's random state,
        torch.manual_seed(VERSION)  # and in a long test run the map's peak once landed 7 voxels off)
        model = BlobNet()
        train(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def train(model: nn.Module, samples: int = 512, epochs: int = 8, seed: int = 0) -> float:
    """Fit `model` on freshly generated volumes; returns the accuracy on 64 more (printed nowhere)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, samples + 64)
    data = np.stack([make_volume(rng, bool(y))[0] for y in labels])
    x, y = torch.from_numpy(data), torch.from_numpy(labels).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(samples)
        for start in range(0, samples, 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        return float((model(x[samples:]).argmax(1) == y[samples:]).float().mean())
