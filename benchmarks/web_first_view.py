"""Web demo first view: seconds from opening the page (right after `krypton serve` answers) until the
default image is shown as stored (while its model loads), until the model's view of it and its prediction
are shown, and until the time estimates are in, in headless Chromium (Debian's).

    .venv/bin/python benchmarks/web_first_view.py
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.time()
    command = [sys.executable, "-m", "krypton.web", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/queue", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        up = time.time() - started
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            page = browser.new_page()
            opened = time.time()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => document.body.dataset.preview || document.body.dataset.image")
            preview = time.time() - opened
            page.wait_for_function("() => document.body.dataset.image", timeout=120_000)
            shown = time.time() - opened
            page.wait_for_function("() => document.body.dataset.estimated", timeout=180_000)
            estimated = time.time() - opened
            demo = page.evaluate("window.krypton.picture.demo")
            print(f"server up {up:.1f} s after start; page opened then: default image ({demo}) shown as "
                  f"stored after {preview:.1f} s, the model's view and prediction after {shown:.1f} s, "
                  f"estimates after {estimated:.1f} s")  # fmt: skip
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
