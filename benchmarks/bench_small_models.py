"""Small models through the Captum drop-in vs Captum itself, first call in a fresh process included.

For each model, two fresh processes (one per library, the order alternating between repeats) import
their library, build the same seeded model and inputs, and time the first `attribute` call and a
second (warm) one. The krypton process then also runs Captum on the same inputs and reports the largest
difference between the two attributions. Printed: seconds and krypton/Captum ratios (< 1: krypton faster).

    .venv/bin/python benchmarks/bench_small_models.py [--repeat 2] [--models mlp conv1d ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from torch import nn

MODELS = ("mlp", "conv1d", "cnn2d", "gru", "transformer")


class _GRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0][:, -1])


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


def case(name: str) -> tuple[nn.Module, torch.Tensor, dict]:
    """(model, inputs, attribute kwargs) as a user of each kind of model would call Captum."""
    torch.manual_seed(0)
    if name == "mlp":  # tabular rows, one feature at a time
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 5))
        return model.eval(), torch.randn(16, 64), {"sliding_window_shapes": (1,), "target": 0}
    if name == "conv1d":  # signals: (N, channels, length)
        model = nn.Sequential(
            nn.Conv1d(2, 16, 7, padding=3),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(32, 4),
        )
        return model.eval(), torch.randn(6, 2, 300), {"sliding_window_shapes": (2, 20), "strides": (2, 10), "target": 1}
    if name == "cnn2d":  # MNIST-sized images
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 10),
        )
        return (
            model.eval(),
            torch.randn(3, 1, 28, 28),
            {"sliding_window_shapes": (1, 4, 4), "strides": (1, 2, 2), "target": 3},
        )
    if name == "gru":
        return _GRU().eval(), torch.randn(4, 50, 4), {"sliding_window_shapes": (5, 4), "strides": (5, 4), "target": 0}
    if name == "transformer":
        return (
            _Encoder().eval(),
            torch.randn(4, 20, 16),
            {"sliding_window_shapes": (2, 16), "strides": (2, 16), "target": 0},
        )
    raise ValueError(name)


def child(name: str, library: str) -> dict:
    """Runs in a fresh process: first and warm call of one library (and the attribution difference)."""
    started = time.perf_counter()
    if library == "krypton":
        from krypton.captum import Occlusion
    else:
        from captum.attr import Occlusion
    imported = time.perf_counter() - started
    model, x, kwargs = case(name)
    occlusion = Occlusion(model)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        ours = occlusion.attribute(x, **kwargs)
        times.append(time.perf_counter() - started)
    out = {"import_s": imported, "first_s": times[0], "warm_s": times[1]}
    if library == "krypton":
        from captum.attr import Occlusion as CaptumOcclusion

        want = CaptumOcclusion(model).attribute(x, **kwargs)
        out["max_diff"] = float((ours - want).abs().max())
        out["scale"] = float(want.abs().max())
        out["path"] = occlusion.stats.get("path")
        out["reason"] = occlusion.stats.get("reason")
    return out


def run_child(name: str, library: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, library], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print(
        "| model | Captum first s | krypton first s | first ratio | Captum warm s | krypton warm s | warm ratio | "
        "krypton path | max diff / scale |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        runs: dict[str, list[dict]] = {"captum": [], "krypton": []}
        for r in range(args.repeat):
            order = ("captum", "krypton") if r % 2 == 0 else ("krypton", "captum")
            for library in order:
                runs[library].append(run_child(name, library))
        best = {lib: {k: min(r[k] for r in rs) for k in ("first_s", "warm_s")} for lib, rs in runs.items()}
        k = runs["krypton"][-1]
        print(
            f"| {name} | {best['captum']['first_s']:.3f} | {best['krypton']['first_s']:.3f} | "
            f"{best['krypton']['first_s'] / best['captum']['first_s']:.2f} | {best['captum']['warm_s']:.3f} | "
            f"{best['krypton']['warm_s']:.3f} | {best['krypton']['warm_s'] / best['captum']['warm_s']:.2f} | "
            f"{k['path']} | {k['max_diff']:.2g} / {k['scale']:.2g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
