"""Pictures and raw files of an explanation: right size, not blank, both styles, and the raw round trip."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import krypton
from krypton.outputs import drop_map, plot, png_bytes, save, save_raw, summary
from krypton.outputs.render import DPI, FIGSIZE

EXPECTED_SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


@pytest.fixture(scope="module")
def result():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    image = torch.rand(3, 32, 32)
    return krypton.explain(model, image, patch=8, stride=4, mode="naive"), image


def _png_ok(data: bytes) -> None:
    png = Image.open(io.BytesIO(data))
    assert png.size == EXPECTED_SIZE
    pixels = np.asarray(png.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10, "picture is blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "picture has almost no content"


@pytest.mark.parametrize("style", ["overlay", "paper"])
def test_png_has_expected_size_and_content(tmp_path, result, style):
    explanation, image = result
    path = save(explanation, tmp_path / f"{style}.png", image, class_names=["a", "b", "c"], style=style)
    _png_ok(path.read_bytes())


def test_plot_titles_and_caption(result):
    explanation, image = result
    fig = plot(explanation, image.permute(1, 2, 0).numpy(), class_names=["cat", "dog", "fox"], name="tiny net")
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "patch 8x8" in texts and "stride 4" in texts and "mode naive" in texts and " s" in texts
    title = fig._suptitle.get_text()
    assert ["cat", "dog", "fox"][explanation.target] in title and "p = " in title and "tiny net" in title


def test_png_without_image_and_repr(result):
    explanation, _ = result
    _png_ok(png_bytes(explanation))
    _png_ok(explanation._repr_png_())


def test_explanation_methods_delegate(tmp_path, result):
    explanation, image = result
    assert explanation.plot(image) is not None
    _png_ok(explanation.save(tmp_path / "m.png", image).read_bytes())


def test_drop_map_is_mean_over_covering_patches():
    scores = torch.zeros(1, 2, 2)
    scores[0, 1] = torch.tensor([0.0, 10.0])  # second position: class 0 nearly gone
    explanation = krypton.Explanation(
        scores=scores, clean_scores=torch.zeros(2), target=0, positions=torch.tensor([[[0, 0], [0, 2]]]),
        patch=(2, 4), stride=(2, 2), image_size=(2, 6), mode="naive",
    )  # fmt: skip
    drop = drop_map(explanation)
    low = float(torch.softmax(torch.tensor([0.0, 10.0]), 0)[0])
    np.testing.assert_allclose(drop[0], [0, 0, (0.5 - low) / 2, (0.5 - low) / 2, 0.5 - low, 0.5 - low], atol=1e-6)


def test_raw_round_trip(tmp_path, result):
    explanation, _ = result
    npz, js = save_raw(explanation, tmp_path / "run", class_names=["a", "b", "c"], meta={"model": "tiny"})
    arrays = np.load(npz)
    np.testing.assert_allclose(arrays["scores"], explanation.scores.numpy())
    np.testing.assert_allclose(arrays["heatmap"], explanation.heatmap.numpy())
    assert arrays["drop_map"].shape == explanation.image_size
    info = json.loads(js.read_text())
    assert info["label"] == ["a", "b", "c"][explanation.target] and info["model"] == "tiny"
    assert info["grid"] == list(explanation.heatmap.shape) and info["stats"]["positions"] == 49
    assert summary(explanation)["top"][0]["index"] == explanation.target
    save(explanation, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").exists() and (tmp_path / "again.json").exists()


def test_bad_style_and_suffix(tmp_path, result):
    explanation, _ = result
    with pytest.raises(ValueError, match="style"):
        plot(explanation, style="rainbow")
    with pytest.raises(ValueError, match="cannot save"):
        save(explanation, tmp_path / "x.gif")


def test_colour_scale_auto_has_a_floor_and_fixed_scales_are_checked(result):
    from krypton.outputs.render import AUTO_FLOOR, colour_limit, effect_size

    result, image = result
    effect = effect_size(result)
    assert effect == pytest.approx(float(np.abs(drop_map(result)).max()))
    assert colour_limit(result) == max(effect, AUTO_FLOOR)
    assert colour_limit(result, 0.5) == 0.5
    for bad in (0, 1.5, "big", True):
        with pytest.raises(ValueError, match="scale must be 'auto' or a number in"):
            colour_limit(result, bad)
    assert summary(result)["effect_size"] == pytest.approx(effect)
    _png_ok(png_bytes(result, image, scale=0.5))


def test_tiny_effects_stay_pale_under_the_auto_scale(result):
    """A map whose largest drop is 0.001 must not be drawn at full colour (the floor of the auto scale)."""
    from krypton.outputs.render import colour_limit

    result, _ = result
    tiny = krypton.Explanation(**{**result.__dict__, "scores": result.scores * 0 + result.clean_scores})
    tiny.scores[0, 0, tiny.target] -= 0.004  # one position barely lowers the target
    assert 0 < float(np.abs(drop_map(tiny)).max()) < 0.01
    assert colour_limit(tiny) >= 0.05


def test_animation_writes_a_gif_of_the_sweep(result, tmp_path):
    result, image = result
    path = result.animate(tmp_path / "sweep.gif", image, frames=10, fps=10)
    gif = Image.open(path)
    assert gif.format == "GIF" and gif.n_frames >= 10
    gif.seek(0)
    first = np.asarray(gif.convert("RGB"), dtype=float)
    gif.seek(gif.n_frames - 1)
    last = np.asarray(gif.convert("RGB"), dtype=float)
    half = first.shape[1] // 2
    assert np.abs(last[:, half:] - first[:, half:]).mean() > 1  # the heat map filled in on the right
    with pytest.raises(ValueError, match="use .gif"):
        result.animate(tmp_path / "sweep.avi")
