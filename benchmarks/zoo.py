"""The zoo: many timm and torchvision CNNs through capture, `analyze` and exact vs naive.

Per model (random weights, eval mode; timm `num_classes=10`, torchvision `weights=None`; 3x224x224, or
3xSxS for a model named `name@S`; patch 16, stride 8): capture seconds, ops computed in full, analyze's
batched and per-position ratios (exact, and approximate with local gates where the model has
squeeze-excitation gates), then a fixed sample of positions evaluated by `krypton.explain(path="auto")`
and naive (the faster of as given and channels-last; each a whole naive map: the clean call and every
position) side by side, three times interleaved: the faster naive first call over explain's first call
(graph already captured; each pays its own one-time kernel setup for its batch shapes and layouts), the
best naive over explain's best call, and the largest difference relative to the occlusion effect in
float32.
timm is a benchmark-only dependency (`pip install timm==1.0.31`).

`--float64` checks exactness instead: the model and image in float64, the engine itself (`run_exact` on
the captured graph, no self-check and no fallback in between) against full re-inference on the same
positions; the largest difference relative to the occlusion effect should be at rounding level (<= 1e-9).

`--unseen` runs models that no rule or heuristic was tuned on (other families, attention hybrids and
transformers, which must fall back or run partially, never wrongly), instead of the zoo.

    .venv/bin/python benchmarks/zoo.py [--models resnet18 tv:vgg11 ...] [--unseen] [--positions 49] [--float64]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import krypton  # noqa: E402
from krypton.capture import capture  # noqa: E402
from krypton.modes.exact import run_exact  # noqa: E402
from krypton.modes.naive import run_naive  # noqa: E402
from krypton.modes.occlusions import grid_occlusions  # noqa: E402
from krypton.pipeline import graph_for, graphs  # noqa: E402

from _common import channels_last, timed  # noqa: E402

warnings.filterwarnings("ignore")
REPEATS = 3

ZOO = (
    "resnet18 resnext26ts seresnext26ts regnetx_002 regnety_002 efficientnet_b0 tf_efficientnetv2_b0 "
    "mobilenetv2_050 mobilenetv3_small_050 mobilenetv4_conv_small_050 ghostnet_050 ghostnetv2_100 mnasnet_small "
    "densenet121 dpn48b dla46_c hrnet_w18_small convnext_atto convnextv2_atto rexnet_100 res2net50_26w_4s "
    "selecsls42b cs3darknet_s cspresnet50 darknet17 ese_vovnet19b_dw inception_v4 inception_resnet_v2 xception41 "
    "nf_resnet26 dm_nfnet_f0 repvgg_a0 mobileone_s0 fastvit_t8 tinynet_e lcnet_050 hgnetv2_b0 fbnetc_100 gernet_s "
    "resnest14d skresnet18 tv:vgg11 tv:alexnet tv:googlenet tv:squeezenet1_1 tv:shufflenet_v2_x1_0 tv:mnasnet0_5 "
    "tv:regnet_y_400mf tv:efficientnet_v2_s tv:convnext_tiny tv:resnet50 tv:mobilenet_v3_large"
).split()


UNSEEN = (
    "efficientvit_b0 edgenext_xx_small mobilevit_xxs@256 mobilevitv2_050@256 poolformer_s12 vit_tiny_patch16_224 "
    "swin_tiny_patch4_window7_224 pvt_v2_b0 eca_resnet33ts bat_resnext26ts@256 lambda_resnet26t@256 "
    "sebotnet33ts_256@256 xcit_nano_12_p16_224 tresnet_m rdnet_tiny inception_next_tiny mambaout_femto starnet_s050 "
    "repghostnet_050 efficientvit_m0 fasternet_t0 mixnet_s semnasnet_050 spnasnet_100 hardcorenas_a tinynet_a "
    "resnetv2_50x1_bit nf_regnet_b0 regnetz_b16 eca_nfnet_l0 dla34 vgg11_bn dpn68b res2next50 resnet50d rexnetr_100 "
    "efficientformerv2_s0 tiny_vit_5m_224 repvit_m0_9 convnext_pico_ols ghostnetv3_050 legacy_seresnet18 resnet10t "
    "vovnet39a selecsls42 densenetblur121d sequencer2d_s visformer_tiny levit_conv_128s coat_lite_tiny "
    "crossvit_tiny_240@240 resmlp_12_224 gmlp_ti16_224 mobilenetv5_300m fastvit_mci0 hiera_tiny_224 davit_tiny "
    "focalnet_tiny_srf efficientnet_es mobilenetv1_100 tv:inception_v3@299 tv:mobilenet_v2 tv:mnasnet1_0 "
    "tv:wide_resnet50_2 tv:densenet121 tv:squeezenet1_0 tv:vit_b_16 tv:swin_t tv:maxvit_t tv:regnet_x_400mf "
    "tv:resnext50_32x4d tv:efficientnet_b0"
).split()


def sized(spec: str) -> tuple[str, int]:
    """`name` or `name@size` (a model built for another input size, e.g. mobilevit_xxs@256)."""
    name, _, size = spec.partition("@")
    return name, int(size) if size else 224


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("tv:"):
        import torchvision

        kwargs = {"aux_logits": False, "init_weights": True} if name == "tv:googlenet" else {}
        return getattr(torchvision.models, name[3:])(weights=None, **kwargs).eval()
    import timm

    return timm.create_model(name, pretrained=False, num_classes=10).eval()


def row(spec: str, positions: int) -> str:
    name, size = sized(spec)
    model = build(name)
    torch.manual_seed(1)
    image = torch.randn(3, size, size)
    graphs.clear()
    started = time.perf_counter()
    try:
        graph_for(model, image[None])
    except Exception as exc:  # noqa: BLE001 - a model the engine cannot capture is a result too
        return f"| {spec} | - | - | - | - | - | capture failed: {str(exc).splitlines()[0][:60]} | - | - |"
    capture_s = time.perf_counter() - started
    try:
        exact = krypton.analyze(model, (3, size, size), patch=16, stride=8)
        gates = krypton.analyze(model, (3, size, size), patch=16, stride=8, local_gates=True)
    except Exception as exc:  # noqa: BLE001
        return f"| {spec} | {capture_s:.1f} | - | - | - | - | analyze: {str(exc).splitlines()[0][:60]} | - | - |"
    full = Counter(op.removeprefix("aten.") for _, op in exact.fallbacks)
    full_text = ", ".join(f"{op}x{n}" for op, n in full.most_common()) or "none"
    gate_text = f"{gates.speedup:.2f}" if gates.incremental_macs < exact.incremental_macs else "-"
    stride = _stride(positions, size)
    occ, _ = grid_occlusions(image[None], (16, 16), (stride, stride), torch.zeros(3, 16, 16))
    cl_model, cl_image = channels_last(model, image[None])
    cl_occ, _ = grid_occlusions(cl_image, (16, 16), (stride, stride), torch.zeros(3, 16, 16))

    def naive_map(net: torch.nn.Module, clean_image: torch.Tensor, occlusions) -> torch.Tensor:
        net(clean_image)  # an occlusion map needs the clean output too (Captum makes the same call)
        return run_naive(net, occlusions, 16)

    naive_s, naive_cl_s, auto_s = [], [], []  # interleaved repeats: the first explain is the first call
    for _ in range(REPEATS):
        with torch.no_grad():
            seconds, naive = timed(lambda: naive_map(model, image[None], occ))
            naive_s.append(seconds)
            naive_cl_s.append(timed(lambda: naive_map(cl_model, cl_image, cl_occ))[0])
        seconds, result = timed(lambda: krypton.explain(model, image, patch=16, stride=stride))
        auto_s.append(seconds)
    scores = result.scores.reshape(-1, result.scores.shape[-1])
    effect = float((naive - result.clean_scores).abs().max()) + 1e-12
    diff = float((scores - naive).abs().max()) / effect
    best = min(min(naive_s), min(naive_cl_s))
    first = min(naive_s[0], naive_cl_s[0])  # each naive variant's own first call, like explain's
    ratios = f"{first / auto_s[0]:.2f} / {best / min(auto_s):.2f}"
    return (f"| {spec} | {capture_s:.1f} | {exact.speedup:.2f} | {exact.per_position_speedup:.2f} | {gate_text} | "
            f"{occ.count} | {full_text} | {ratios} ({result.stats['path']}) | {diff:.1e} |")  # fmt: skip


def exactness_row(spec: str, positions: int) -> str:
    """Engine vs full re-inference in float64 on a grid of about `positions` positions."""
    name, size = sized(spec)
    model = build(name).double()
    torch.manual_seed(1)
    image = torch.randn(1, 3, size, size, dtype=torch.float64)
    stride = _stride(positions, size)
    occ, _ = grid_occlusions(image, (16, 16), (stride, stride), torch.zeros(3, 16, 16, dtype=torch.float64))
    try:
        graph = capture(model, image)
    except Exception as exc:  # noqa: BLE001 - a model the engine cannot capture is a result too
        return f"| {spec} | capture failed: {str(exc).splitlines()[0][:60]} | - | - |"
    with torch.no_grad():
        naive = run_naive(model, occ, 16)
        clean = model(image)[0]
    engine = run_exact(graph, occ).outputs
    effect = float((naive - clean).abs().max()) + 1e-300
    diff = float((engine - naive).abs().max())
    return f"| {spec} | {occ.count} | {effect:.3g} | {diff / effect:.1e} |"


def _stride(positions: int, size: int = 224) -> int:
    return max(8, (size - 16) // (int(positions**0.5) - 1)) if positions > 1 else size - 16


TIMING_HEADER = (
    "| model | capture s | analyze | per-position limit | analyze, local gates | positions | "
    "ops computed in full | naive / auto: first calls / best of 3 (path) | max diff / effect |"
)
EXACTNESS_HEADER = "| model | positions | occlusion effect (max abs output change) | max engine-naive diff / effect |"


def table(header: str, make_row: Callable[[str, int], str], models: list[str], positions: int) -> None:
    """Print a markdown table, one row per model; a model that breaks gets an error row, not a traceback."""
    columns = header.count("|") - 1
    print(header)
    print("|" + "---|" * columns)
    for name in models:
        try:
            print(make_row(name, positions), flush=True)
        except Exception as exc:  # noqa: BLE001 - one broken model must not end the table
            error = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            print(f"| {name} | {error} |" + " |" * (columns - 2), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(ZOO))
    parser.add_argument("--unseen", action="store_true", help="run the UNSEEN list instead of the zoo")
    parser.add_argument("--positions", type=int, default=49, help="about this many grid positions are timed")
    parser.add_argument("--float64", action="store_true", help="check exactness in float64 instead of timing")
    args = parser.parse_args()
    models = list(UNSEEN) if args.unseen else args.models
    if args.float64:
        table(EXACTNESS_HEADER, exactness_row, models, args.positions)
    else:
        table(TIMING_HEADER, row, models, args.positions)


if __name__ == "__main__":
    main()
