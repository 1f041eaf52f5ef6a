"""`krypton.captum.Occlusion` against the real `captum.attr.Occlusion`: same shape, dtype and values."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import Occlusion as CaptumOcclusion
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import krypton
from krypton.captum import Occlusion, OcclusionArgumentError


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 5, norm: bool = False):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8) if norm else nn.Identity(),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TwoInputs(nn.Module):
    """Two image tensors stacked on the channel axis: Captum's tuple-of-inputs case."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN()
        self.net.features[0] = nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.net(torch.cat([a, b], dim=1)) * scale


def seeded(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    return model.eval()


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return seeded(SmallCNN())


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def image(n: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def blurred(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def compare(forward, inputs, expect_mode: str | None = None, **kwargs):
    """Both libraries on the same arguments; ours must match Captum's shape, dtype and values."""
    want = CaptumOcclusion(forward).attribute(inputs, **kwargs)
    ours = Occlusion(forward)
    got = ours.attribute(inputs, **kwargs)
    pairs = zip(want, got) if isinstance(want, tuple) else [(want, got)]
    assert type(got) is type(want)
    for a, b in pairs:
        assert b.shape == a.shape and b.dtype == a.dtype == torch.float32
        # the spec's tolerance, tightened for small attributions (probabilities) so that they are checked too
        torch.testing.assert_close(b, a, rtol=1e-4, atol=min(1e-5, 1e-3 * float(a.abs().max())))
    if expect_mode is not None:
        assert ours.stats["mode"] == expect_mode
    return got


WINDOWS = [  # (sliding_window_shapes, strides): whole-depth, per-channel, int stride, default, stride > window
    ((3, 15, 15), (3, 4, 4)),
    ((1, 8, 8), (1, 4, 4)),
    ((3, 5, 7), 2),
    ((2, 4, 3), None),
    ((3, 6, 17), (7, 5, 20)),  # a window spanning a whole axis (channels, width 17) may step past it
]


def arguments(case: int, x: torch.Tensor) -> dict:
    """Baseline/target/batching combinations, chosen so every kind appears with every window."""
    n = x.shape[0]
    return [
        {"target": 1},
        {"target": list(range(n)), "baselines": 0.5, "perturbations_per_eval": 5},
        {"target": torch.arange(n) % 5, "baselines": torch.tensor([0.1, -0.2, 0.3]).view(3, 1, 1)},
        {"target": None, "baselines": blurred(x), "perturbations_per_eval": 3},
        {"target": torch.tensor(4), "baselines": blurred(x[:1])},  # (1, C, H, W) broadcast over the batch
    ][case]


@pytest.mark.parametrize("window,stride", WINDOWS)
@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("n,h,w", [(2, 23, 17), (1, 26, 17)])  # width 17: see WINDOWS[4]
def test_small_cnn_matches_captum(cnn, window, stride, case, n, h, w):
    x = image(n, h, w)
    kwargs = arguments(case, x)
    if stride is not None:
        kwargs["strides"] = stride
    compare(cnn, x, "exact", sliding_window_shapes=window, **kwargs)


@pytest.mark.parametrize(
    "n,window,stride,kwargs",
    [
        (2, (3, 15, 15), (3, 4, 4), {"target": 3}),
        (2, (1, 8, 8), (1, 4, 4), {"target": [7, 100], "baselines": "blur", "perturbations_per_eval": 8}),
        (1, (3, 15, 15), (3, 8, 8), {"target": None, "baselines": torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)}),
        (1, (3, 9, 11), 5, {"target": torch.tensor([2]), "baselines": -1.0, "perturbations_per_eval": 64}),
    ],
)
def test_resnet18_matches_captum(resnet, n, window, stride, kwargs):
    x = image(n, 40, 36, seed=2)
    if isinstance(kwargs.get("baselines"), str):
        kwargs = {**kwargs, "baselines": blurred(x)}
    compare(resnet, x, "exact", sliding_window_shapes=window, strides=stride, **kwargs)


def test_forward_function_that_is_not_a_module(cnn, resnet):
    x = image(2, 23, 17)
    probabilities = lambda x: torch.softmax(cnn(x), dim=1)  # noqa: E731 (what users write)
    compare(probabilities, x, "naive", sliding_window_shapes=(3, 6, 6), strides=(3, 3, 3), target=2)
    per_channel = {"sliding_window_shapes": (1, 5, 5), "strides": (1, 4, 4), "baselines": 0.3}
    compare(probabilities, x, "naive", target=[0, 1], perturbations_per_eval=4, **per_channel)
    compare(
        probabilities, x, "naive", sliding_window_shapes=(3, 5, 4), baselines=blurred(x), target=torch.tensor([0, 3])
    )
    y = image(1, 40, 36)
    top = lambda x: torch.softmax(resnet(x), dim=1)  # noqa: E731
    compare(top, y, "naive", sliding_window_shapes=(3, 15, 15), strides=(3, 8, 8), target=5)


def test_several_inputs_and_additional_forward_args():
    model = seeded(TwoInputs())
    a, b = image(2, 14, 11, seed=3), image(2, 14, 11, seed=4)[:, :1]
    got = compare(
        model,
        (a, b),
        "naive",
        sliding_window_shapes=((3, 5, 5), (1, 4, 4)),
        strides=((3, 2, 2), 3),
        baselines=(0.0, torch.full((1, 1, 14, 11), 0.5)),
        target=[1, 2],
        additional_forward_args=(2.0,),
        perturbations_per_eval=6,
    )
    assert [t.shape for t in got] == [a.shape, b.shape]
    compare(lambda a, b: model(a, b), (a, b), sliding_window_shapes=((3, 7, 3), (1, 6, 6)), strides=(2, 4), target=0)


def test_training_mode_model_is_evaluated_as_captum_batches_it():
    model = seeded(SmallCNN(norm=True)).train()  # batch-norm statistics depend on the batch
    x = image(2, 12, 10)
    compare(model, x, "naive", sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=1, perturbations_per_eval=3)
    assert model.training, "the user's model must not be switched to eval mode"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_arguments_match_captum(cnn, data):
    n = data.draw(st.integers(1, 2), label="n")
    h, w = data.draw(st.sampled_from([(23, 17), (9, 30), (16, 16)]), label="size")
    body = (3, h, w)
    window = tuple(data.draw(st.integers(1, d), label=f"window{a}") for a, d in enumerate(body))
    stride = tuple(
        data.draw(st.integers(1, wa if wa < d else d + 2), label=f"stride{a}")
        for a, (wa, d) in enumerate(zip(window, body))
    )
    stride = data.draw(st.sampled_from([stride, stride[1]]) if stride[1] <= min(window) else st.just(stride))
    positions = 1
    for d, wa, s in zip(body, window, (stride,) * 3 if isinstance(stride, int) else stride):
        positions *= -(-(d - wa) // s) + 1
    x = image(n, h, w, seed=data.draw(st.integers(0, 9)))
    kwargs = arguments(data.draw(st.integers(0, 4), label="case"), x)
    kwargs["perturbations_per_eval"] = data.draw(st.sampled_from([1, 16]))
    if positions > 400:  # keep Captum's side (one model call per position) fast
        window, stride = body, 1
    compare(cnn, x, "exact", sliding_window_shapes=window, strides=stride, **kwargs)


def test_explanation_attribution_is_captums_definition(cnn):
    """Where the paper's grid (patch inside the image) and Captum's grid coincide, the maps are equal."""
    x = image(1, 40, 36)  # (40 - 8) and (36 - 8) are multiples of 4: no cropped windows at the border
    explanation = krypton.explain(cnn, x[0], patch=8, stride=4)
    want = CaptumOcclusion(cnn).attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), target=explanation.target
    )
    got = explanation.attribution()
    assert got.shape == (40, 36)
    for c in range(3):
        torch.testing.assert_close(got, want[0, c], rtol=1e-4, atol=1e-5)


def test_progress_bar_counts_positions(cnn, capsys):
    x = image(1, 23, 17)
    occlusion = Occlusion(cnn)
    occlusion.attribute(x, sliding_window_shapes=(3, 5, 5), strides=(3, 4, 4), target=0, show_progress=True)
    err = capsys.readouterr().err
    positions = 6 * 4  # ceil((23 - 5) / 4) + 1 rows, ceil((17 - 5) / 4) + 1 columns, one channel block
    assert f"{positions + 1}/{positions + 1}" in err and "Occlusion attribution: 100%" in err  # Captum's label
    assert err.count("Occlusion attribution: 100%") == 1  # one bar, printed once
    assert occlusion.stats["mode"] == "exact" and occlusion.stats["positions"] == positions
    assert occlusion.stats["path"] in ("naive", "incremental", "incremental+naive") and occlusion.stats["reason"]


X = image(2, 12, 10)
BAD = [  # (arguments, the parameter the message must name)
    ({"inputs": [X]}, "inputs"),
    ({"inputs": X.numpy()}, "inputs"),
    ({"sliding_window_shapes": (3, 4)}, "sliding_window_shapes"),
    ({"sliding_window_shapes": [3, 4, 4]}, "sliding_window_shapes"),
    ({"sliding_window_shapes": (3, 40, 4)}, "sliding_window_shapes"),
    ({"sliding_window_shapes": (3, 0, 4)}, "sliding_window_shapes"),
    ({"strides": (3, 5, 5)}, "strides"),
    ({"strides": (3, 4)}, "strides"),
    ({"strides": [3, 4, 4]}, "strides"),
    ({"baselines": "zero"}, "baselines"),
    ({"baselines": torch.zeros(3, 5, 5)}, "baselines"),
    ({"target": 99}, "target"),
    ({"target": [1]}, "target"),
    ({"target": [1, 99]}, "target"),
    ({"target": torch.tensor([[1, 2], [3, 4]])}, "target"),
    ({"target": torch.tensor([1, 99])}, "target"),
    ({"target": "cat"}, "target"),
    ({"perturbations_per_eval": 0}, "perturbations_per_eval"),
    ({"perturbations_per_eval": 2.5}, "perturbations_per_eval"),
]


@pytest.mark.parametrize("bad,name", BAD, ids=[f"{k}={v!r}"[:40] for (b, _) in BAD for k, v in b.items()])
def test_bad_arguments_raise_what_captum_raises(cnn, bad, name):
    kwargs = {"inputs": X, "sliding_window_shapes": (3, 4, 4), "target": 0, **bad}
    with pytest.raises(Exception) as theirs:
        CaptumOcclusion(cnn).attribute(**kwargs)
    with pytest.raises(type(theirs.value), match=name) as ours:
        Occlusion(cnn).attribute(**kwargs)
    assert isinstance(ours.value, OcclusionArgumentError) and isinstance(ours.value, ValueError)
    assert ours.value.__cause__ is None and (ours.value.__context__ is None or ours.value.__suppress_context__)


@pytest.mark.filterwarnings("ignore::RuntimeWarning:captum")  # numpy divides by the zero stride inside Captum
@pytest.mark.parametrize("bad", [{"strides": 0}, {"strides": (3, -1, 2)}])
def test_strides_that_captum_accepts_silently_are_rejected(cnn, bad):
    """Captum returns NaN attributions for a zero or negative stride; we say what is wrong instead."""
    assert torch.isnan(CaptumOcclusion(cnn).attribute(X, sliding_window_shapes=(3, 4, 4), target=0, **bad)).any()
    with pytest.raises(ValueError, match="strides"):
        Occlusion(cnn).attribute(X, sliding_window_shapes=(3, 4, 4), target=0, **bad)


def test_is_a_captum_attribution_and_works_inside_noise_tunnel(cnn):
    from captum.attr import NoiseTunnel
    from captum.attr._utils.attribution import Attribution

    x = image(2, 12, 12)
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), target=1)
    ours = Occlusion(cnn)
    assert isinstance(ours, Attribution)
    assert ours.get_name() == CaptumOcclusion.get_name() == "Occlusion"
    theirs = CaptumOcclusion(cnn)
    assert ours.has_convergence_delta() is theirs.has_convergence_delta() is False
    assert ours.multiplies_by_inputs is theirs.multiplies_by_inputs is True
    results = []
    for method in (CaptumOcclusion(cnn), ours):
        torch.manual_seed(3)
        results.append(NoiseTunnel(method).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, **kwargs))
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-5)


def test_attribute_future_behaves_as_captums(cnn):
    with pytest.raises(NotImplementedError):
        CaptumOcclusion(cnn).attribute_future()
    with pytest.raises(NotImplementedError):
        Occlusion(cnn).attribute_future()


def test_per_example_scalar_inputs_match_captum():
    class Sum(nn.Module):
        def forward(self, a, b):
            return (torch.relu(a - 1) - torch.relu(b)).unsqueeze(1)

    inputs = (torch.tensor([-10.0, 3.0]), torch.tensor([-5.0, 1.0]))
    want = CaptumOcclusion(Sum()).attribute(inputs, sliding_window_shapes=((), ()), target=None)
    got = Occlusion(Sum()).attribute(inputs, sliding_window_shapes=((), ()), target=None)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    single = Occlusion(lambda a: a.unsqueeze(1) * 2).attribute(torch.tensor([1.0, -2.0]), sliding_window_shapes=())
    torch.testing.assert_close(single, torch.tensor([2.0, -4.0]))
