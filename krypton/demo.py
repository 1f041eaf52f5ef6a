"""`make run` until the CLI exists: explain a seeded ResNet18 on a synthetic image and summarise."""

from __future__ import annotations

import torch
import torchvision

import krypton


def main() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    image = torch.randn(3, 224, 224)
    result = krypton.explain(model, image, patch=16, stride=8, mode="exact", progress=True)
    heat = result.heatmap
    print(
        f"target {result.target}  p={result.probability:.4f}  positions {result.stats['positions']}  "
        f"time {result.stats['wall_time_s']:.1f}s  theoretical speedup {result.stats['theoretical_speedup']:.2f}x"
    )
    print(f"heatmap {tuple(heat.shape)}  min {heat.min():.4f}  max {heat.max():.4f}")


if __name__ == "__main__":
    main()
