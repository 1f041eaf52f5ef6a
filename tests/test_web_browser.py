"""End to end in real headless Chromium: the web demo's page as a user drives it.

Debian's `chromium` (installed by `make test`: `apt-get install -y chromium`) is driven by Playwright for
Python through `executable_path`, so nothing is downloaded. Never skipped: a missing browser is a
failure that says how to install it. The test starts `python -m krypton.web` on 127.0.0.1 and a free
port, explains the bundled face demo (a real 10-MMAC Keras model on a real photo), drags a region,
brushes pixels away, and reads the heat-map canvas back to check what was drawn and where.
Set KRYPTON_SCREENSHOT=path.png to also save a screenshot of the page.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parents[1]
FINISHED = "['done', 'error', 'cancelled'].includes(document.body.dataset.jobState)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "krypton.web", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/queue", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    pytest.fail(f"the web demo did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()  # uvicorn shuts down, then re-raises SIGTERM: returncode -15 is normal
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's browser with `apt-get install -y chromium` "
            "(make test does) or set CHROMIUM=/path/to/chromium"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def _run(page) -> None:
    """Press Explain and wait for that new job to finish."""
    before = page.evaluate("document.body.dataset.jobId || ''")
    page.click("#run")
    page.wait_for_function(
        f"(before) => document.body.dataset.jobId !== undefined && "
        f"document.body.dataset.jobId !== before && {FINISHED}",
        arg=before,
        timeout=120_000,
    )
    assert page.evaluate("document.body.dataset.jobState") == "done", page.inner_text("#error")


HEAT_PIXELS = """([x0, y0, x1, y1]) => {
  const c = document.getElementById('heat');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let inside = 0, outside = 0, red = 0;
  for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
    const k = 4 * (y * c.width + x);
    if (d[k + 3] === 0) continue;
    if (x >= x0 && x < x1 && y >= y0 && y < y1) inside++; else outside++;
    if (d[k] > d[k + 2]) red++;
  }
  return {inside, outside, red, total: c.width * c.height};
}"""


def test_explain_region_and_brush_in_chromium(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 940})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(server + "/?demo=faces&patch=16&stride=8&mode=exact")
    page.wait_for_function("() => document.body.dataset.image", timeout=90_000)
    assert "happy" in page.inner_text("#prediction")  # the astronaut smiles
    page.wait_for_function("() => document.body.dataset.estimated", timeout=90_000)
    for mode in ("naive", "exact", "approximate"):
        assert "pos." in page.inner_text(f"#estimates tr[data-mode={mode}] .est")

    _run(page)  # the whole image, exact mode
    width = page.evaluate("document.getElementById('heat').width")
    whole = page.evaluate(HEAT_PIXELS, [0, 0, width, width])
    assert whole["inside"] > 0.5 * whole["total"] and whole["red"] > 0
    assert "x" in page.inner_text("#estimates tr[data-mode=exact] .spd")
    assert page.inner_text("#estimates tr[data-mode=exact] .act") != "–"
    assert page.evaluate("window.krypton.log.length") >= 1  # server-sent events reached the page

    box = page.locator("#draw").bounding_box()  # drag a region over the upper left of the face
    page.mouse.move(box["x"] + 0.15 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.65 * box["height"], steps=12)
    page.mouse.up()
    region = page.evaluate("window.krypton.region")
    assert region["width"] >= 20 and region["height"] >= 20 and page.inner_text("#run") == "Explain region"
    _run(page)
    scale = page.evaluate("window.krypton.scale")
    margin = 8 / 2 * scale + 2  # cells are drawn stride-wide around patch centres inside the region
    rect = [
        (region["x"]) * scale - margin,
        region["y"] * scale - margin,
        (region["x"] + region["width"]) * scale + margin,
        (region["y"] + region["height"]) * scale + margin,
    ]
    part = page.evaluate(HEAT_PIXELS, rect)
    assert part["inside"] > 0 and part["outside"] == 0, part
    assert page.inner_text("#jobs").count("done") == 2

    page.check("input[name=tool][value=brush]")  # paint over the mouth: the smile goes away
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.72 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.72 * box["height"], steps=12)
    page.mouse.up()
    page.wait_for_function("() => Number(document.body.dataset.brushPixels) > 0", timeout=30_000)
    assert len(page.locator("#brush-prediction li").all()) == 5 and "was" in page.inner_text("#brush-prediction")

    page.fill("#opacity", "0.3")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("getComputedStyle(document.getElementById('heat')).opacity") == "0.3"
    if os.environ.get("KRYPTON_SCREENSHOT"):
        page.screenshot(path=os.environ["KRYPTON_SCREENSHOT"], full_page=True)
    assert not errors, errors
    page.close()


def _page(server, browser, query: str):
    page = browser.new_page(viewport={"width": 1280, "height": 940})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + query)
    page.wait_for_function("() => document.body.dataset.image", timeout=120_000)
    return page, errors


SETTLED = """() => {
  const s = window.krypton;
  if (!s.picture || document.getElementById('status').textContent.startsWith('Loading')) return false;
  return document.body.dataset.image === s.picture.id;
}"""


def test_rapid_menu_switching_ends_with_one_consistent_picture(server, browser):
    page, errors = _page(server, browser, "/?demo=xray")
    page.focus("#image")
    for _ in range(5):  # arrow keys through the bundled X-rays: replies may arrive out of order
        page.keyboard.press("ArrowDown")
    page.wait_for_timeout(300)
    page.wait_for_function(SETTLED, timeout=120_000)
    page.wait_for_timeout(1500)  # any late reply would land now
    chosen = page.evaluate("document.getElementById('image').selectedOptions[0].textContent")
    picture = page.evaluate("window.krypton.picture")
    said = (page.inner_text("#status"), page.inner_text("#error"))
    assert chosen.split(" [")[0] == picture["name"], said
    assert page.evaluate("document.getElementById('demo').value") == "xray", said
    assert page.evaluate("document.body.dataset.image") == picture["id"]
    top = picture["top"][0]["label"]
    assert page.inner_text("#prediction").splitlines()[0].startswith(top)
    page.select_option("#demo", "faces")  # switch models and back before the first reply
    page.select_option("#demo", "mri")
    page.select_option("#demo", "faces")
    page.wait_for_function(SETTLED, timeout=120_000)
    page.wait_for_timeout(3000)
    menu = page.evaluate("document.getElementById('demo').value")
    said = (page.inner_text("#status"), page.inner_text("#error"))  # why, if a choice was refused
    assert page.evaluate("window.krypton.picture.demo") == "faces" == menu, said
    assert "happy" in page.inner_text("#prediction")
    assert not errors, errors
    page.close()


def test_one_job_per_click_refused_upload_compare_labels_and_play(server, browser):
    page, errors = _page(server, browser, "/?demo=faces&patch=16&stride=8&mode=approximate")
    page.check("input[name=tool][value=brush]")  # brushing while the first estimate runs: no internal error
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.5 * box["height"], steps=6)
    page.mouse.up()
    page.wait_for_function("() => Number(document.body.dataset.brushPixels) > 0", timeout=60_000)
    assert "internal error" not in page.inner_text("#error")
    page.click("#clear-brush")

    page.check("#compare")
    before = page.evaluate("document.body.dataset.jobId || ''")
    page.evaluate("for (let i = 0; i < 6; i++) document.getElementById('run').click()")  # impatient clicks
    assert page.is_disabled("#run")
    page.wait_for_function(
        f"(b) => document.body.dataset.jobId && document.body.dataset.jobId !== b && {FINISHED}",
        arg=before, timeout=120_000,
    )  # fmt: skip
    assert len(page.locator("#jobs li").all()) == 1 and not page.is_disabled("#run")
    for phase in ("approximate", "exact"):  # both maps can be downloaded, each named
        href = page.get_attribute(f"#dl-png-{phase}", "href")
        assert href and href.endswith(f"phase={phase}")
    assert "map" in page.inner_text("#heat-label") and " than exact" in page.inner_text("#ssim")

    page.click("#play")
    job = page.evaluate("document.body.dataset.jobId")
    page.wait_for_function("(id) => document.body.dataset.played === id", arg=job, timeout=60_000)

    picture = page.evaluate("window.krypton.picture.id")
    page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}])
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert not page.is_disabled("#run") and "Upload refused" in page.inner_text("#status")
    assert page.evaluate("window.krypton.picture.id") == picture  # the page still shows, and explains, the old one
    assert not errors, errors
    page.close()


def test_region_by_keyboard_and_number_fields(server, browser):
    page, errors = _page(server, browser, "/?demo=faces&patch=16&stride=8&mode=exact")
    width, height = page.evaluate("[window.krypton.picture.width, window.krypton.picture.height]")
    page.focus("#draw")  # the image is reachable with Tab and described for screen readers
    assert page.get_attribute("#draw", "tabindex") == "0" and page.get_attribute("#draw", "aria-label")
    page.keyboard.press("ArrowRight")  # the first arrow makes a region in the middle
    region = page.evaluate("window.krypton.region")
    middle = {"x": width / 4, "y": height / 4, "width": width / 2, "height": height / 2}
    assert region == {key: round(value) for key, value in middle.items()}
    step = max(1, round(min(width, height) / 32))
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    moved = page.evaluate("window.krypton.region")
    assert moved["x"] == region["x"] + step and moved["height"] == region["height"] + step
    fields = [page.input_value(f"#region-{k}") for k in "xywh"]
    assert fields == [str(moved[k]) for k in ("x", "y", "width", "height")]
    assert page.inner_text("#run") == "Explain region"
    for key, value in zip("xywh", ("5", "6", "30", "40")):  # typed numbers give the same region
        page.fill(f"#region-{key}", value)
        page.dispatch_event(f"#region-{key}", "change")
    assert page.evaluate("window.krypton.region") == {"x": 5, "y": 6, "width": 30, "height": 40}
    page.fill("#region-w", "100000")  # too wide: kept inside the picture
    page.dispatch_event("#region-w", "change")
    assert page.evaluate("window.krypton.region")["width"] == width and page.input_value("#region-x") == "0"
    _run(page)
    assert page.inner_text("#jobs").count("done") == 1
    page.focus("#draw")
    page.keyboard.press("Escape")  # clears the region, its map and the fields
    assert page.evaluate("window.krypton.region") is None and page.input_value("#region-x") == ""
    assert page.inner_text("#run") == "Explain"
    assert not errors, errors
    page.close()
