"""`krypton.scale.explain_many` / `krypton batch` on a local, loopback-only Ray with 2 CPUs.

The model travels as a spec: a torchvision squeezenet1_1 state dict saved to a file, run at 32x32 with a
patch of 8 and stride 8 (16 positions), so that ~20 real images (the bundled X-rays and photos) take
seconds. Every result is checked against a plain per-image `krypton.explain` in this process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import krypton
from krypton.scale import ClusterError, InputError, ModelSpec, expand, explain_many
from krypton.scale import cluster as cluster_module

SETTINGS = dict(patch=8, stride=8)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread here, as in each Ray worker: two threads on a busy 2-core box are ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ModelSpec:
    torch.manual_seed(0)
    import torchvision

    path = tmp_path_factory.mktemp("model") / "squeezenet1_1.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None, num_classes=10).state_dict(), path)
    return ModelSpec.of("squeezenet1_1", weights=str(path), size=(32, 32))


@pytest.fixture(scope="module")
def reference(spec):
    """Per-image `krypton.explain` results, computed lazily once per image (by file name: copies share it)."""
    loaded = spec.load()
    cache: dict[str, torch.Tensor] = {}

    def scores(item) -> torch.Tensor:
        name = Path(item.path).name
        if name not in cache:
            tensor, _ = loaded.preprocess(item.pixels())
            cache[name] = krypton.explain(loaded.module, tensor, **SETTINGS).scores
        return cache[name]

    return scores


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module, started the way `explain_many` starts it (loopback only)."""
    with cluster_module.connect(None, 2) as runtime:
        yield runtime


def assert_matches(out: Path, items, reference) -> None:
    for item in items:
        with np.load(out / f"{item.id}.npz") as arrays:
            torch.testing.assert_close(torch.from_numpy(arrays["scores"]), reference(item), rtol=1e-4, atol=1e-5)
        assert (out / f"{item.id}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ray_run(ray_local, spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    summary = explain_many(spec, ["xray:", "imagenet:"], out_dir=out, workers=2, progress=False, **SETTINGS)
    return summary, out


def test_ray_on_loopback_only(ray_local):
    assert ray_local.util.get_node_ip_address() == "127.0.0.1"


def test_twenty_images_on_two_workers_equal_explain(ray_run, reference):
    summary, out = ray_run
    items = expand(["xray:", "imagenet:"])
    assert len(items) == 20
    assert (summary.total, summary.explained, summary.failed, summary.workers) == (20, 20, 0, 2)
    assert_matches(out, items, reference)
    per_worker: dict[str, int] = {}
    for record in summary.records:
        per_worker[record["worker"]] = per_worker.get(record["worker"], 0) + 1
    assert len(per_worker) == 2 and min(per_worker.values()) >= 4, per_worker  # both workers did a share


def test_manifest_contents_and_rerun_skips(ray_run, spec):
    summary, out = ray_run
    lines = manifest(out)
    items = expand(["xray:", "imagenet:"])
    assert [r["image"] for r in lines] == [i.id for i in items]  # one line per image, in input order
    for record, item in zip(lines, items):
        assert record["status"] == "ok" and record["error"] is None
        assert record["source"] == item.path and record["truth"] == item.truth
        assert record["settings"]["patch"] == 8 and record["settings"]["stride"] == 8
        assert record["settings"]["mode"] == "exact" and record["mode"] == "exact"
        assert record["model"]["model"] == "squeezenet1_1" and record["model"]["weights"] == spec.weights
        assert record["time_s"] > 0 and record["positions"] == 16
        assert record["label"] == f"class {record['target']}"
        with np.load(out / record["outputs"]["npz"]) as arrays:
            p = torch.softmax(torch.from_numpy(arrays["clean_scores"]).double(), -1)[record["target"]]
        assert record["probability"] == pytest.approx(float(p))
        on_disk = json.loads((out / record["outputs"]["json"]).read_text())
        assert on_disk["batch"] == record and on_disk["target"] == record["target"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    again = explain_many(spec, ["xray:", "imagenet:"], out_dir=out, workers=1, progress=False, **SETTINGS)
    assert (again.skipped, again.explained, again.workers) == (20, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == stamps
    assert manifest(out) == lines


def test_killed_worker_is_restarted_and_its_images_redone(ray_local, spec, reference, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    items = expand("xray:")[:9]
    for item in items:
        (data / Path(item.path).name).write_bytes(Path(item.path).read_bytes())
    (data / "broken.jpeg").write_bytes(b"not an image at all")
    killed: list[int] = []

    def kill_first_worker(record: dict) -> None:
        if not killed:
            killed.append(int(record["worker"].rsplit(":", 1)[1]))
            os.kill(killed[0], signal.SIGKILL)  # it has its next image in flight

    out = tmp_path / "out"
    summary = explain_many(spec, data, out_dir=out, workers=2, progress=False, on_result=kill_first_worker, **SETTINGS)
    assert (summary.explained, summary.failed) == (9, 1)
    assert_matches(out, [i for i in expand(data) if i.id != "broken"], reference)
    workers = {r["worker"] for r in summary.records}
    assert len(workers) >= 3 and any(w.endswith(f":{killed[0]}") for w in workers), workers  # back, new pid
    broken = next(r for r in summary.records if r["image"] == "broken")
    assert broken["status"] == "failed" and "cannot read image" in broken["error"]


def test_broken_and_wrong_size_images_fail_and_run_goes_on(spec, reference, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    sources = expand("imagenet:")
    for item in sources[:2]:  # good images, already at the model's size
        Image.open(item.path).convert("RGB").resize((32, 32)).save(data / f"{item.id.split('/')[1]}.png")
    (data / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    jpeg = Path(expand("xray:")[0].path).read_bytes()
    (data / "truncated.jpeg").write_bytes(jpeg[: len(jpeg) // 3])
    Image.new("RGB", (40, 30)).save(data / "wrong_size.png")
    out = tmp_path / "out"
    run = dict(out_dir=out, workers=1, cpus_per_worker=1, progress=False, resize=False, **SETTINGS)
    summary = explain_many(spec, data, **run)
    assert (summary.total, summary.explained, summary.failed) == (5, 2, 3)
    errors = {r["image"]: r["error"] for r in manifest(out) if r["status"] == "failed"}
    assert set(errors) == {"garbage", "truncated", "wrong_size"}
    assert "cannot read image" in errors["garbage"] and "truncated" in errors["truncated"]
    assert errors["wrong_size"] == "wrong size 30x40: the model takes 32x32 (resizing is off)"
    assert not (out / "garbage.png").exists()
    Image.open(sources[2].path).convert("RGB").resize((32, 32)).save(data / "garbage.png")  # fixed
    again = explain_many(spec, data, **run)
    assert (again.skipped, again.explained, again.failed) == (2, 1, 2)  # failed ones retried, good ones kept
    assert [r["status"] for r in manifest(out)].count("ok") == 3


def _batch_cmd(spec: ModelSpec, inputs: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "krypton.scale", "batch", inputs, "--out", str(out), "--model", spec.model,
        "--weights", str(spec.weights), "--size", "32", "--patch", "8", "--stride", "8", "--cpus-per-worker", "1",
        *extra,
    ]  # fmt: skip


def _wait_for_lines(out: Path, count: int, proc: subprocess.Popen, limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "manifest.jsonl").exists() and len((out / "manifest.jsonl").read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {count} results within {limit} s (rc {proc.poll()})")


def test_resume_after_killed_driver(spec, reference, tmp_path):
    """SIGKILL the driver of a 2-worker Ray run mid-run; the same command then finishes only the rest."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        _batch_cmd(spec, "xray:", out, "--workers", "2"), cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for_lines(out, 3, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        first = len((out / "manifest.jsonl").read_text().splitlines())
        assert 3 <= first < 16
        for record in out.rglob("*.json"):  # every record on disk is whole and has its files
            assert json.loads(record.read_text())["batch"]["status"] == "ok"
            assert record.with_suffix(".png").exists() and record.with_suffix(".npz").exists()
        summary = explain_many(spec, "xray:", out_dir=out, workers=1, cpus_per_worker=1, progress=False, **SETTINGS)
    finally:
        _reap_group(proc.pid)
    assert summary.skipped >= first and summary.skipped + summary.explained == 16 and summary.failed == 0
    assert not [p for p in out.rglob(".*") if p.name != ".krypton-batch.lock"]  # no temporary files left
    assert_matches(out, expand("xray:"), reference)
    assert [r["image"] for r in manifest(out)] == [i.id for i in expand("xray:")]


def _reap_group(pgid: int) -> None:
    """Ray helpers that outlive a killed driver (for up to a minute otherwise), by the test's own group id."""
    for _ in range(50):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def test_ctrl_c_stops_cleanly_and_rerun_resumes(spec, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _batch_cmd(spec, "xray:", out, "--workers", "1"), cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "krypton batch: interrupted:" in stdout and "re-run the same command to resume" in stdout
    assert "Traceback" not in stderr
    done = len(manifest(out))
    assert not (out / ".krypton-batch.lock").exists()
    rerun = subprocess.run(
        _batch_cmd(spec, "xray:", out, "--workers", "1", "--no-progress"), cwd=tmp_path, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} done earlier" in rerun.stdout.splitlines()[-1]
    assert len(manifest(out)) == 16


def test_stale_cluster_file_fails_fast(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    stale = tmp_path / "ray_current_cluster"
    stale.write_text(f"127.0.0.1:{port}")
    monkeypatch.setattr(cluster_module, "CLUSTER_FILE", str(stale))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started = time.monotonic()
    with pytest.raises(ClusterError, match="left over from a cluster that ended"):
        cluster_module.resolve_address("auto")
    with pytest.raises(ClusterError, match="no Ray cluster answers"):
        cluster_module.resolve_address(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10


def test_images_shipped_as_bytes_read_like_files(tmp_path):
    """Workers on other machines get the file's bytes: same pixels, and errors name the original path."""
    from krypton.io import read_image

    item = expand("xray:0")[0]
    np.testing.assert_array_equal(item.pixels(item.read_bytes()), read_image(item.path))
    broken = expand([str(_write(tmp_path / "scan.png", b"junk"))])[0]
    with pytest.raises(ValueError, match=f"cannot read image {tmp_path / 'scan.png'}"):
        broken.pixels(broken.read_bytes())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_inputs_folder_glob_and_list(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.png", "a/b/y.jpg", "a/b/x.png", "a/x.jpg", "a/.hidden.png", "a/notes.md"):
        (tmp_path / name).write_bytes(b"")
    assert [i.id for i in expand(tmp_path / "a")] == ["b/x", "b/y", "x_jpg", "x_png"]
    assert [i.id for i in expand(str(tmp_path / "a" / "**" / "*.png"))] == ["b/x", "x"]
    listing = tmp_path / "a" / "list.txt"
    listing.write_text("# images\nx.png,cat\nb/y.jpg\n\n")
    items = expand(listing)
    assert [(i.id, i.truth) for i in items] == [("x", "cat"), ("b/y", None)]
    with pytest.raises(InputError, match="no images found"):
        expand(tmp_path, exclude=tmp_path / "a")  # the output folder is never input
