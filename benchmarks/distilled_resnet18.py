"""Torchvision CNNs with learned weights, made here: distilled from the bundled ImageNet model.

No package ships trained ResNet18 (or MobileNetV3, EfficientNet-B0, RegNetY) weights offline, and random
weights spread an occlusion's effect over the whole map, which is not what projective-field thresholding is
designed for. This trains a ResNet18 (or another torchvision architecture: `distilled(arch)`; the squeeze-
excitation benchmark uses three) to reproduce EfficientNet-Lite0's ImageNet class probabilities (KL
divergence) on random crops, flips, colour jitter and random black squares of scikit-image's colour photos
(astronaut, coffee, rocket, chelsea, hubble_deep_field, immunohistochemistry, retina, colorwheel). It is a
stand-in for a trained network, not an ImageNet classifier: it has seen eight photos. The weights are cached
in `benchmarks/.cache/` (not in git); training a ResNet18 takes about 5 minutes on 2 cores.

    .venv/bin/python benchmarks/distilled_resnet18.py        # train (or load) and compare with the teacher
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.v2 as T

CACHE = Path(__file__).parent / ".cache" / "resnet18_distilled_lite0.pt"
PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "chelsea",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _photos() -> list[torch.Tensor]:
    import skimage.data

    out = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()[..., :3]
        out.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255)
    return out


def _teacher() -> torch.nn.Module:
    from krypton.models.demos import DEMOS

    return DEMOS["imagenet"].load().module.eval()  # its preprocessing: (x - 0.5) / 0.5 on [0, 1] RGB


def train(steps: int = 300, batch: int = 16, seed: int = 0, arch: str = "resnet18") -> torch.nn.Module:
    """Distil the teacher into a fresh torchvision `arch` (ImageNet normalisation on its input)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    photos, teacher = _photos(), _teacher()
    augment = T.Compose(
        [
            T.RandomResizedCrop(224, scale=(0.15, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3),
        ]
    )
    student = getattr(torchvision.models, arch)(weights=None)
    optimiser = torch.optim.AdamW(student.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 2e-3, total_steps=steps)
    start = time.perf_counter()
    for step in range(steps):
        images = []
        for _ in range(batch):
            x = augment(photos[rng.integers(len(photos))])
            if rng.random() < 0.5:  # occluded copies, like the ones explanations show it
                size = int(rng.integers(8, 64))
                y0, x0 = rng.integers(0, 224 - size, 2)
                x = x.clone()
                x[:, y0 : y0 + size, x0 : x0 + size] = 0
            images.append(x)
        x = torch.stack(images)
        with torch.no_grad():
            target = F.softmax(teacher((x - 0.5) / 0.5), 1)
        student.train()
        loss = F.kl_div(F.log_softmax(student((x - IMAGENET_MEAN) / IMAGENET_STD), 1), target, reduction="batchmean")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"distil step {step}: KL {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return student.eval()


def distilled(arch: str) -> torch.nn.Module:
    """The cached distilled torchvision `arch`, trained first if there is none."""
    cache = CACHE if arch == "resnet18" else CACHE.with_name(f"{arch}_distilled_lite0.pt")
    model = getattr(torchvision.models, arch)(weights=None)
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(train(arch=arch).state_dict(), cache)
    model.load_state_dict(torch.load(cache, weights_only=True))
    return model.eval()


def distilled_resnet18() -> torch.nn.Module:
    return distilled("resnet18")


def main() -> None:
    student, teacher = distilled_resnet18(), _teacher()
    for name, photo in zip(PHOTOS, _photos()):
        x = T.functional.center_crop(T.functional.resize(photo, 224, antialias=True), 224)[None]
        with torch.no_grad():
            s = F.softmax(student((x - IMAGENET_MEAN) / IMAGENET_STD), 1)[0]
            t = F.softmax(teacher((x - 0.5) / 0.5), 1)[0]
        print(
            f"{name:22s} student class {int(s.argmax()):4d} p {float(s.max()):.2f}   "
            f"teacher class {int(t.argmax()):4d} p {float(t.max()):.2f}"
        )


if __name__ == "__main__":
    main()
