"""API tests of the web demo (`krypton.web`): every endpoint, every bad request, job results against `explain`.

A tiny conv net (32x32 RGB, 4 classes) stands in for the bundled demos so the whole file runs in
seconds; a slowed-down copy makes progress, cancellation and the queue observable.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

import krypton
from krypton.io.preprocess import Preprocess
from krypton.models.demos import Demo, DemoImage
from krypton.models.errors import ModelError
from krypton.models.loaded import LoadedModel
from krypton.web import serve
from krypton.web.app import create_app
from krypton.web.catalog import fill_values

from helpers import condition

SIZE = 32
CLASSES = ["cat", "dog", "owl", "fox"]


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, len(CLASSES)),
    )  # fmt: skip
    return condition(net, (1, 3, SIZE, SIZE))


NET = _net()


class Slow(nn.Module):
    """The tiny net, sleeping per forward call: progress, cancel and queueing become observable."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.net, self.delay = NET, delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.net(x)


def _probs(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(NET(x[None]).double(), -1)[0]


class Uncapturable(nn.Module):
    """Python control flow on tensor values: torch.export cannot capture it, so every mode runs naive."""

    def __init__(self) -> None:
        super().__init__()
        self.net = NET

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > -100:
            return self.net(x)
        return -self.net(x)


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((40, 48, 3)).astype(np.float32)


def _demo(name: str, module: nn.Module, patch: int = 8, stride: int = 4) -> Demo:
    loaded = LoadedModel(module, f"{name} net", Preprocess((SIZE, SIZE), 3), list(CLASSES))
    images = [DemoImage(f"noise{i}", Path(f"/nowhere/{i}.png"), None, lambda _p, i=i: _pixels(i)) for i in range(3)]
    return Demo(name, f"{name} test net", "", patch, stride, lambda: loaded, lambda: images)


def _missing() -> list[DemoImage]:
    raise ModelError("this demo needs the package 'nothing==0': pip install it")


CATALOG = {
    "tiny": _demo("tiny", NET),
    "slow": _demo("slow", Slow(0.15)),
    "plain": _demo("plain", Uncapturable()),
    "gone": Demo("gone", "not installed", "nothing==0", 8, 4, lambda: None, _missing),
}


def _client(**kwargs) -> TestClient:
    return TestClient(create_app(CATALOG, **kwargs), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def client():
    with _client(workers=2, max_waiting=8) as c:
        yield c


def _picture(client: TestClient, demo: str = "tiny", index: int = 0) -> dict:
    r = client.post("/api/images/demo", json={"demo": demo, "index": index})
    assert r.status_code == 200, r.text
    return r.json()


def _events(client: TestClient, job_id: str) -> list[tuple[str, dict]]:
    events, kind = [], None
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def _run(client: TestClient, **body) -> dict:
    r = client.post("/api/jobs", json=body)
    assert r.status_code == 202, r.text
    kind, final = _events(client, r.json()["id"])[-1]
    assert kind == "end" and final["state"] == "done", final["message"]
    return final


def _tensor(index: int) -> torch.Tensor:
    return Preprocess((SIZE, SIZE), 3)(_pixels(index))[0]


def _explain(index: int, **kwargs) -> krypton.Explanation:
    fill = fill_values(CATALOG["tiny"].load(), kwargs.pop("rgb", None))
    return krypton.explain(NET, _tensor(index), fill=fill, **kwargs)


def _heat(final: dict, phase: str) -> np.ndarray:
    result = final["result"]["phases"][phase]
    return np.asarray(result["heat"]).reshape(result["grid"])


# --- page, catalogue, pictures ------------------------------------------------------------------------------
def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]  # no inline or foreign scripts
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "draw.js", "style.css"):
        assert f"/static/{name}" in page.text
        assert client.get(f"/static/{name}").status_code == 200


def test_demo_listing_marks_missing_packages(client):
    demos = {d["name"]: d for d in client.get("/api/demos").json()["demos"]}
    assert demos["tiny"]["available"] and [i["name"] for i in demos["tiny"]["images"]] == ["noise0", "noise1", "noise2"]
    assert demos["tiny"]["patch"] == 8 and demos["tiny"]["stride"] == 4
    assert not demos["gone"]["available"] and "pip install" in demos["gone"]["error"]
    assert client.get("/api/queue").json()["workers"] == 2


def test_demo_picture_prediction_and_png(client):
    picture = _picture(client, index=1)
    probs = _probs(_tensor(1))
    assert picture["width"] == picture["height"] == SIZE and picture["classes"] == CLASSES
    assert picture["top"][0]["index"] == int(probs.argmax())
    np.testing.assert_allclose(picture["probabilities"], probs.numpy(), atol=1e-5)
    png = client.get(f"/api/images/{picture['id']}/image.png")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (SIZE, SIZE)


def test_bundled_image_as_stored_needs_no_model():
    """The page shows a bundled image at once, while its model loads: the stored pixels, any size."""
    never = Demo("never", "model never loads", "", 8, 4, lambda: pytest.fail("the preview loaded the model"),
                 lambda: CATALOG["tiny"].images())  # fmt: skip
    with TestClient(create_app({"never": never}, warm=False), base_url="http://127.0.0.1") as client:
        r = client.get("/api/demos/never/images/2/original.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        shown = np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.float32) / 255
        np.testing.assert_allclose(shown, _pixels(2), atol=1 / 255)  # 40 x 48 as stored, not the model's 32 x 32
        assert client.get("/api/demos/never/images/3/original.png").status_code == 404
        assert client.get("/api/demos/never/images/-1/original.png").status_code == 422
        assert client.get("/api/demos/nothing/images/0/original.png").status_code == 404


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _dicom() -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 20, 24, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(480, dtype=np.uint16).reshape(20, 24) * 8).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "DICOM"])
def test_upload_images(client, fmt):
    data = _dicom() if fmt == "DICOM" else _encoded(_pixels(2), fmt)
    kind = "application/dicom" if fmt == "DICOM" else f"image/{fmt.lower()}"
    r = client.post("/api/images/upload?demo=tiny", content=data, headers={"Content-Type": kind})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "upload" and r.json()["width"] == SIZE
    if fmt == "PNG":  # same pixels as the file, same prediction as preprocessing them directly
        pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255
        probs = _probs(Preprocess((SIZE, SIZE), 3)(pixels)[0])
        np.testing.assert_allclose(r.json()["probabilities"], probs.numpy(), atol=1e-5)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels with almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


UPLOADS = [
    ("text", b"hello, this is not an image", "image/png", 415, "not an image"),
    ("html", b"<html></html>", "text/html", 415, "only image files"),
    ("svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, "SVG"),
    ("empty", b"", "image/png", 400, "empty"),
    ("truncated", None, "image/png", 400, "cannot read"),
    ("bomb", _png_header_only(100_000, 100_000), "image/png", 413, "too large"),
    ("nifti", (348).to_bytes(4, "little") + b"\0" * 400, "application/octet-stream", 415, "2-D images only"),
    ("npy", b"\x93NUMPY\x01\x00" + b"\0" * 100, "application/octet-stream", 415, "2-D images only"),
]


@pytest.mark.parametrize("name,data,kind,status,message", UPLOADS, ids=[u[0] for u in UPLOADS])
def test_upload_rejections(client, name, data, kind, status, message):
    if data is None:
        data = _encoded(_pixels(0), "PNG")[:60]
    r = client.post("/api/images/upload?demo=tiny", content=data, headers={"Content-Type": kind})
    assert r.status_code == status and message in r.json()["detail"], r.text


def test_upload_limits_and_demo_checks():
    with _client(max_upload=2000, max_pixels=500) as small:
        big = _encoded(_pixels(0), "PNG")  # about 6 kB, 1920 pixels
        r = small.post("/api/images/upload?demo=tiny", content=big, headers={"Content-Type": "image/png"})
        assert r.status_code == 413 and "larger than the limit" in r.json()["detail"]
        chunked = small.post(
            "/api/images/upload?demo=tiny",
            content=iter([big[:1500], big[1500:]]),
            headers={"Content-Type": "image/png"},
        )
        assert chunked.status_code == 413
        tiny_png = _encoded(_pixels(0)[:20, :30], "PNG")
        assert len(tiny_png) < 2000
        r = small.post("/api/images/upload?demo=tiny", content=tiny_png, headers={"Content-Type": "image/png"})
        assert r.status_code == 413 and "30x20 pixels, the limit is 500" in r.json()["detail"]
        assert small.post("/api/images/upload?demo=nope", content=tiny_png).status_code == 404
        assert small.post("/api/images/upload", content=tiny_png).status_code == 422


# --- brush ----------------------------------------------------------------------------------------------------
def _mask_text(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.reshape(-1).astype(np.uint8)).tobytes()).decode()


def test_brush_prediction_hides_the_painted_pixels(client):
    picture = _picture(client)
    clean = client.post(f"/api/images/{picture['id']}/predict", json={"mask": _mask_text(np.zeros((SIZE, SIZE)))})
    np.testing.assert_allclose(clean.json()["probabilities"], picture["probabilities"], atol=1e-6)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[4:20, 10:30] = True
    r = client.post(f"/api/images/{picture['id']}/predict", json={"mask": _mask_text(mask), "fill": [255, 0, 0]})
    assert r.status_code == 200 and r.json()["occluded_pixels"] == mask.sum()
    x = _tensor(0).clone()
    x[:, torch.from_numpy(mask)] = torch.tensor([1.0, -1.0, -1.0])[:, None]  # red in [-1, 1] units
    expected = _probs(x)
    np.testing.assert_allclose(r.json()["probabilities"], expected.numpy(), atol=1e-5)


def test_brush_bad_requests(client):
    pid = _picture(client)["id"]
    cases = [
        ({"mask": "***"}, 400, "base64"),
        ({"mask": base64.b64encode(b"\0" * 5).decode()}, 400, "needs 128"),
        ({"mask": _mask_text(np.zeros((SIZE, SIZE))), "fill": [1, 2]}, 422, "fill"),
        ({"mask": _mask_text(np.zeros((SIZE, SIZE))), "extra": 1}, 422, "extra"),
    ]
    for body, status, message in cases:
        r = client.post(f"/api/images/{pid}/predict", json=body)
        assert r.status_code == status and message in r.json()["detail"], r.text
    assert client.post("/api/images/0123456789abcdef/predict", json=cases[0][0]).status_code == 404
    assert client.post("/api/images/../predict", json=cases[0][0]).status_code == 404
    assert client.post("/api/images/NOT-AN-ID/predict", json=cases[0][0]).status_code == 422


# --- estimates ----------------------------------------------------------------------------------------------
def test_estimates_follow_analyze(client):
    pid = _picture(client)["id"]
    r = client.post("/api/estimate", json={"image_id": pid, "patch": 8, "stride": 4, "tau": 0.5})
    assert r.status_code == 200, r.text
    est = r.json()
    exact = krypton.analyze(NET, (3, SIZE, SIZE), patch=8, stride=4)
    approx = krypton.analyze(NET, (3, SIZE, SIZE), patch=8, stride=4, tau=0.5)
    assert est["positions"] == exact.positions == 49
    modes = est["modes"]
    assert modes["naive"]["macs"] == pytest.approx(49 * exact.naive_macs)
    assert modes["exact"]["macs"] == pytest.approx(49 * exact.incremental_macs)
    assert modes["approximate"]["macs"] == pytest.approx(49 * approx.incremental_macs)
    assert modes["exact"]["theoretical_speedup"] == pytest.approx(exact.speedup)
    assert all(m["seconds"] > 0 for m in modes.values()) and est["forward_ms"] > 0
    assert modes["exact"]["seconds"] <= modes["naive"]["seconds"]  # the pipeline never runs slower than naive
    assert modes["exact"]["path"] == ("naive" if modes["exact"]["raw_seconds"] * modes["exact"]["correction"]
                                      > modes["naive"]["seconds"] else "incremental")  # fmt: skip
    drill = client.post(
        "/api/estimate", json={"image_id": pid, "patch": 8, "stride": 2, "drilldown": {"fraction": 0.2, "speedup": 3}}
    ).json()
    assert drill["modes"]["approximate"]["positions"] < drill["positions"] == 169
    region = client.post(
        "/api/estimate",
        json={"image_id": pid, "patch": 8, "stride": 4, "region": {"x": 0, "y": 0, "width": 12, "height": 16}},
    ).json()
    assert region["positions"] == 3 * 4  # patch centres 4, 8, 12 (x <= 12) by 4, 8, 12, 16 (y <= 16)


@pytest.mark.filterwarnings("ignore:krypton")
def test_models_the_engine_cannot_capture_still_work(client):
    pid = _picture(client, "plain")["id"]
    est = client.post("/api/estimate", json={"image_id": pid, "patch": 8, "stride": 4})
    assert est.status_code == 200 and "all modes run naive" in est.json()["note"]
    final = _run(client, image_id=pid, patch=8, stride=4, mode="exact")
    assert final["result"]["phases"]["exact"]["mode"] == "naive"  # explain fell back, and says so
    np.testing.assert_allclose(_heat(final, "exact"), _explain(0, patch=8, stride=4).heatmap.numpy(), atol=1e-5)
    box = {"x": 0, "y": 0, "width": 9, "height": 9}
    region = _run(client, image_id=pid, patch=8, stride=4, mode="exact", region=box)
    assert region["result"]["phases"]["exact"]["mode"] == "naive"


# --- jobs: results equal krypton.explain --------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["naive", "exact", "approximate"])
def test_job_matches_explain(client, mode):
    pid = _picture(client, index=1)["id"]
    extra = {"tau": 0.6} if mode == "approximate" else {}
    final = _run(client, image_id=pid, patch=8, stride=4, mode=mode, target=2, fill=[0, 255, 0], **extra)
    expected = _explain(1, target=2, patch=8, stride=4, mode=mode, rgb=[0, 255, 0], **extra)
    np.testing.assert_allclose(_heat(final, mode), expected.heatmap.numpy(), atol=1e-5)
    result = final["result"]["phases"][mode]
    assert result["target"] == 2 and result["label"] == "owl" and result["wall_time_s"] > 0
    assert result["speedup_vs_naive"] > 0 and result["naive_basis"] in ("measured", "estimated")
    assert final["maps"][mode]["done"] == final["maps"][mode]["total"] == 49


@pytest.mark.parametrize("drill", [{"fraction": 0.3, "speedup": 2.0}, {"rule": "refine", "speedup": 2.0}])
def test_drilldown_job_matches_explain(client, drill):
    pid = _picture(client)["id"]
    final = _run(client, image_id=pid, patch=8, stride=2, mode="approximate", tau=1.0, drilldown=drill)
    expected = _explain(0, patch=8, stride=2, mode="approximate", tau=1.0, drilldown=drill)
    np.testing.assert_allclose(_heat(final, "approximate"), expected.heatmap.numpy(), atol=1e-5)
    stats = final["result"]["phases"]["approximate"]["stats"]
    assert stats["drilled_positions"] < 169 and stats["drilldown"]["rule"] == drill.get("rule", "regions")


@pytest.mark.parametrize("mode", ["exact", "naive"])
def test_region_job_is_the_full_map_inside_the_region(client, mode):
    pid = _picture(client, index=2)["id"]
    region = {"x": 6, "y": 2, "width": 14, "height": 20}
    final = _run(client, image_id=pid, patch=8, stride=2, mode=mode, region=region)
    full = _explain(2, patch=8, stride=2).heatmap.numpy()
    centres = np.arange(0, SIZE - 8 + 1, 2) + 4
    rows = np.nonzero((centres >= 2) & (centres <= 22))[0]
    cols = np.nonzero((centres >= 6) & (centres <= 20))[0]
    np.testing.assert_allclose(_heat(final, mode), full[np.ix_(rows, cols)], atol=1e-5)
    result = final["result"]["phases"][mode]
    assert result["origin"] == [int(rows[0] * 2), int(cols[0] * 2)] and result["stats"]["region"] == [6, 2, 14, 20]


def test_compare_job_and_downloads(client):
    pid = _picture(client)["id"]
    final = _run(client, image_id=pid, patch=8, stride=2, mode="approximate", tau=0.5, compare=True)
    approx, exact = _heat(final, "approximate"), _heat(final, "exact")
    np.testing.assert_allclose(exact, _explain(0, patch=8, stride=2).heatmap.numpy(), atol=1e-5)
    assert final["result"]["ssim"] == pytest.approx(krypton.ssim(exact, approx), abs=1e-6)
    assert final["result"]["approximate_speedup_vs_exact"] > 0
    assert final["result"]["quality"] == f"measured: SSIM {final['result']['ssim']:.3f} vs exact"
    alone = _run(client, image_id=pid, patch=8, stride=4, mode="approximate", tau=0.5)
    assert alone["result"]["quality"] == "not verified"  # an unverified approximate map says so
    job = final["id"]
    png = client.get(f"/api/jobs/{job}/result.png?phase=exact")
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).format == "PNG"
    assert "attachment" in png.headers["content-disposition"]
    raw = client.get(f"/api/jobs/{job}/result.json").json()  # the first phase: approximate
    assert raw["phase"] == "approximate" and np.asarray(raw["heatmap"]).shape == approx.shape
    np.testing.assert_allclose(raw["heatmap"], approx, atol=1e-5)
    npz = np.load(io.BytesIO(client.get(f"/api/jobs/{job}/result.npz?phase=exact").content))
    assert npz["scores"].shape == (*exact.shape, 4) and npz["drop_map"].shape == (SIZE, SIZE)
    assert client.get(f"/api/jobs/{job}/result.png?phase=naive").status_code == 404
    assert client.get(f"/api/jobs/{job}/result.png?phase=fast").status_code == 422


# --- progress, cancel, queue -------------------------------------------------------------------------------
def test_heat_map_streams_while_computed(client):
    pid = _picture(client, "slow")["id"]
    r = client.post("/api/jobs", json={"image_id": pid, "patch": 8, "stride": 2, "mode": "naive"})
    events = _events(client, r.json()["id"])
    partial = [
        s["maps"]["naive"]
        for k, s in events
        if k == "update" and s["maps"].get("naive") and 0 < s["maps"]["naive"]["done"] < s["maps"]["naive"]["total"]
    ]
    assert partial, [(k, s["state"]) for k, s in events]
    first = partial[0]
    assert len(first["heat"]) == 169 and set(first["computed"]) == {"0", "1"}  # a whole map, partly estimated
    assert first["computed"].count("1") == first["done"] and first["eta_s"] is not None
    assert events[-1][0] == "end" and events[-1][1]["maps"]["naive"]["computed"] == "1" * 169
    assert events[-1][1]["info"]["estimates"]["naive"]["seconds"] > 0  # the ETA before the first batch


def _wait(client: TestClient, job_id: str, state: str, timeout: float = 20) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = client.get(f"/api/jobs/{job_id}").json()
        if snap["state"] == state:
            return snap
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {state}: {snap}")


def test_cancel_running_and_queued_jobs():
    with _client(workers=1, max_waiting=1) as client:
        pid = _picture(client, "slow")["id"]
        body = {"image_id": pid, "patch": 8, "stride": 1, "mode": "naive"}
        running = client.post("/api/jobs", json=body).json()["id"]
        _wait(client, running, "running")
        waiting = client.post("/api/jobs", json=body).json()
        assert waiting["state"] == "queued" and waiting["ahead"] == 1  # the running job is ahead of it
        full = client.post("/api/jobs", json=body)
        assert full.status_code == 429 and "already waiting" in full.json()["detail"]
        assert client.post(f"/api/jobs/{waiting['id']}/cancel").json()["state"] == "cancelled"
        client.post(f"/api/jobs/{running}/cancel")
        kind, final = _events(client, running)[-1]
        assert kind == "end" and final["state"] == "cancelled" and final["maps"]["naive"]["done"] < 625
        assert client.get(f"/api/jobs/{running}/result.png").status_code == 409
        assert client.post("/api/jobs/0123456789abcdef/cancel").status_code == 404


def test_concurrent_jobs_keep_their_own_results(client):
    jobs = [(0, 0, "exact"), (1, 3, "naive"), (2, 1, "exact"), (1, 2, "approximate")]
    pictures = {i: _picture(client, index=i)["id"] for i in range(3)}
    finals: dict[int, dict] = {}

    def one(k: int) -> None:
        index, target, mode = jobs[k]
        extra = {"tau": 0.8} if mode == "approximate" else {}
        finals[k] = _run(client, image_id=pictures[index], patch=8, stride=4, mode=mode, target=target, **extra)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for k, (index, target, mode) in enumerate(jobs):
        extra = {"tau": 0.8} if mode == "approximate" else {}
        expected = _explain(index, target=target, patch=8, stride=4, mode=mode, **extra)
        np.testing.assert_allclose(_heat(finals[k], mode), expected.heatmap.numpy(), atol=1e-5)


# --- every bad request is a 4xx with a message -------------------------------------------------------------
BAD_JOBS = [
    ({"patch": 0}, 422, "patch"),
    ({"patch": 33}, 400, "larger than the model input"),
    ({"stride": -1}, 422, "stride"),
    ({"mode": "fast"}, 422, "mode"),
    ({"target": 4}, 400, "target must be a class index in [0, 4)"),
    ({"target": -1}, 422, "target"),
    ({"tau": 0.5}, 400, "need mode 'approximate'"),
    ({"compare": True}, 400, "need mode 'approximate'"),
    ({"mode": "approximate", "tau": 1.5}, 422, "tau"),
    ({"mode": "approximate", "drilldown": {"fraction": 0.5, "speedup": 3}}, 400, "unreachable"),
    ({"mode": "approximate", "drilldown": {"rule": "refine", "fraction": 0.5}}, 400, "fraction applies to the two"),
    ({"mode": "approximate", "drilldown": {"rule": "magic"}}, 422, "drilldown.rule"),
    (
        {"mode": "approximate", "drilldown": {"fraction": 0.2}, "region": {"x": 0, "y": 0, "width": 9, "height": 9}},
        400,
        "drill-down explains the whole image",
    ),
    ({"region": {"x": 20, "y": 0, "width": 20, "height": 5}}, 400, "outside"),
    ({"region": {"x": 0, "y": 0, "width": 2, "height": 2}}, 400, "no patch position"),
    ({"region": {"x": 0, "y": 0, "width": 0, "height": 5}}, 422, "region.width"),
    ({"fill": [0, 0, 256]}, 422, "fill"),
    ({"fill": "red"}, 422, "fill"),
    ({"path": "/etc/passwd"}, 422, "path: Extra inputs are not permitted"),
    ({"image_id": "0123456789abcdef"}, 404, "unknown image id"),
    ({"image_id": "../../etc/passwd"}, 422, "image_id"),
    ({"patch": True}, 422, "patch: Input should be a valid integer"),  # booleans are not numbers
    ({"compare": 1, "mode": "approximate"}, 422, "compare: Input should be a valid boolean"),
    ({"stride": "4"}, 422, "stride"),
]


@pytest.mark.parametrize("change,status,message", BAD_JOBS, ids=[str(b[0]) for b in BAD_JOBS])
def test_bad_job_requests(client, change, status, message):
    pid = _picture(client)["id"]
    body = {"image_id": pid, "patch": 8, "stride": 4, "mode": "exact", **change}
    r = client.post("/api/jobs", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_bad_requests_everywhere(client):
    pid = _picture(client)["id"]
    cases = [
        ("post", "/api/images/demo", {"json": {"demo": "nope"}}, 404, "unknown demo"),
        ("post", "/api/images/demo", {"json": {"demo": "tiny", "index": 7}}, 404, "has 3 images"),
        ("post", "/api/images/demo", {"json": {"demo": "tiny", "index": -1}}, 422, "index"),
        ("post", "/api/images/demo", {"json": {"demo": "gone"}}, 400, "pip install"),
        (
            "post",
            "/api/images/demo",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            422,
            "the request body is not valid JSON",
        ),
        ("post", "/api/images/demo", {"json": {"demo": "tiny", "path": "/etc/passwd"}}, 422, "Extra inputs"),
        (
            "post",
            "/api/jobs",
            {"json": {"image_id": pid, "patch": 8, "stride": 4, "pad": "x" * 1_100_000}},
            413,
            "larger than the limit",
        ),
        ("get", "/api/jobs/0123456789abcdef", {}, 404, "unknown job"),
        ("get", "/api/jobs/0123456789abcdef/events", {}, 404, "unknown job"),
        ("get", "/api/jobs/0123456789abcdef/result.npz", {}, 404, "unknown job"),
        ("get", "/api/jobs/xyz/result.json", {}, 422, "job_id"),
        ("get", f"/api/images/{pid}x/image.png", {}, 422, "image_id"),
        ("get", "/api/images/0123456789abcdef/image.png", {}, 404, "unknown image id"),
        ("get", "/static/../app.py", {}, 404, "Not Found"),
        ("get", "/static/%2e%2e/app.py", {}, 404, "Not Found"),
        ("get", "/api/images/..%2f..%2fetc%2fpasswd/image.png", {}, 404, "Not Found"),
        ("get", "/api/nothing", {}, 404, "Not Found"),
        ("delete", "/api/jobs", {}, 405, "Method Not Allowed"),
        ("post", "/api/estimate", {"json": {"image_id": pid}}, 422, "patch: Field required"),
    ]
    for method, url, kwargs, status, message in cases:
        r = getattr(client, method)(url, **kwargs)
        assert r.status_code == status, (url, r.status_code, r.text)
        assert message in r.json()["detail"], (url, r.text)


def test_only_local_host_names_are_served():
    with TestClient(create_app(CATALOG), base_url="http://evil.example") as other:
        r = other.get("/api/demos")
        assert r.status_code == 400 and "Invalid host header" in r.text  # DNS-rebinding guard
    with TestClient(create_app(CATALOG), base_url="http://localhost:8000") as local:
        assert local.get("/api/queue").status_code == 200


def test_serve_binds_to_loopback_by_default():
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    from krypton.web.__main__ import main

    assert "127.0.0.1" in inspect.getsource(main)


def test_fill_colour_in_model_units():
    loaded = CATALOG["tiny"].load()
    assert fill_values(loaded, [128, 128, 128]) == pytest.approx([0.00392] * 3, abs=1e-4)
    assert fill_values(loaded, None) == pytest.approx([0.00392] * 3, abs=1e-4)  # default: the mean colour
    gray = LoadedModel(NET, "gray", Preprocess((SIZE, SIZE), 1, mean=(0.5,), std=(0.25,)))
    assert fill_values(gray, [255, 255, 255]) == pytest.approx([2.0])


def test_queue_counts_running_jobs_of_other_tabs_and_abandoned_jobs_are_cancelled():
    import threading

    from krypton.web.app import _cancel_if_abandoned
    from krypton.web.jobs import JobQueue

    release = threading.Event()
    queue = JobQueue(lambda job: (release.wait(30), {})[1], workers=1, max_waiting=4)
    running = queue.submit({})
    deadline = time.time() + 10
    while running.state != "running" and time.time() < deadline:
        time.sleep(0.01)
    waiting = queue.submit({})
    assert queue.ahead(waiting) == 1  # another tab's running job is ahead of it
    _cancel_if_abandoned(queue, waiting)  # its page went away and nobody follows it
    assert waiting.state == "cancelled"
    running.listeners = 1
    _cancel_if_abandoned(queue, running)  # somebody still follows this one
    assert not running.cancel_event.is_set()
    release.set()


def test_the_default_model_is_loaded_at_start_up_before_any_request():
    calls = []
    tiny = CATALOG["tiny"]
    catalog = {"tiny": Demo("tiny", tiny.title, "", 8, 4, lambda: (calls.append(1), tiny.load())[1], tiny.images)}
    with TestClient(create_app(catalog), base_url="http://127.0.0.1") as warm:
        deadline = time.time() + 10
        while not calls and time.time() < deadline:
            time.sleep(0.01)
        assert calls == [1]  # loaded by the start-up warm-up, once
        warm.post("/api/images/demo", json={"demo": "tiny", "index": 0})
        assert calls == [1]  # the page's first request finds it loaded
    cold_calls = []
    catalog = {"tiny": Demo("tiny", tiny.title, "", 8, 4, lambda: (cold_calls.append(1), tiny.load())[1], tiny.images)}
    with TestClient(create_app(catalog, warm=False), base_url="http://127.0.0.1"):
        time.sleep(0.2)
        assert cold_calls == []


def test_brushes_estimate_and_job_during_the_first_capture_all_succeed():
    """The run pipeline's web race: while the model's graph is being captured (export traces a forward
    call), brush predictions, the estimator and a job run the same model from other threads. None may
    fail, trace the wrong call or brand the model as uncapturable; the job's map equals explain()'s."""
    from krypton.pipeline import graphs

    racy = Slow(0.05)  # a fresh instance: nothing captured or remembered for it; every forward sleeps
    catalog = {"racy": _demo("racy", racy)}
    with TestClient(create_app(catalog, warm=False), base_url="http://127.0.0.1") as client:
        pid = _picture(client, "racy")["id"]
        statuses: list[int] = []
        notes: list[str] = []

        def brush(offset: int) -> None:
            for k in range(6):
                mask = np.zeros((SIZE, SIZE), bool)
                mask[offset + k : offset + k + 6, 3:12] = True
                r = client.post(f"/api/images/{pid}/predict", json={"mask": _mask_text(mask)})
                statuses.append(r.status_code)

        def estimate() -> None:
            r = client.post("/api/estimate", json={"image_id": pid, "patch": 8, "stride": 4})
            statuses.append(r.status_code)
            notes.append(r.json().get("note") or "")

        job = client.post("/api/jobs", json={"image_id": pid, "patch": 8, "stride": 4, "mode": "exact"})
        assert job.status_code == 202, job.text
        threads = [threading.Thread(target=estimate)] + [threading.Thread(target=brush, args=(k,)) for k in (0, 8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        kind, final = _events(client, job.json()["id"])[-1]
        assert kind == "end" and final["state"] == "done", final["message"]
        assert statuses and all(s == 200 for s in statuses), statuses
        assert notes and not any("run naive" in n for n in notes), notes
        assert graphs.refusal(racy, torch.zeros(1, 3, SIZE, SIZE)) is None  # not branded uncapturable
        expected = krypton.explain(NET, _tensor(0), patch=8, stride=4, fill=fill_values(catalog["racy"].load(), None))
        np.testing.assert_allclose(_heat(final, "exact"), expected.heatmap.numpy(), atol=1e-5)
