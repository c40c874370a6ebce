"""Drive ``probelab app`` in a real headless Chromium: the end-to-end test, the screenshots and the bench.

Uses the system browser (Debian ``chromium`` at ``/usr/bin/chromium``) through playwright-python;
never ``playwright install`` (no downloads). ``make test`` installs both (the ``browser`` target).

>>> "--headless" in CHROMIUM_ARGS and "--disable-background-networking" in CHROMIUM_ARGS
True
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from ..errors import ProbelabError

CHROMIUM = os.environ.get("PROBELAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PLOT = ".js-plotly-plot .main-svg"


def missing() -> str | None:
    """Why the browser tests cannot run here (``None`` when they can)."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (`make browser` installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright-python is not installed (`make browser` installs it)"
    return None


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok`` (or the server died / time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log is not None and log.is_file() else ""
            raise ProbelabError(f"probelab app exited with code {proc.returncode}: {tail.strip()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise ProbelabError(f"probelab app did not answer on {url} within {timeout:.0f} s")


@contextlib.contextmanager
def running_app(port: int | None = None, model: str | None = None, env: dict | None = None,
                log: Path | None = None, timeout: float = 120) -> Iterator[str]:
    """Start ``probelab app`` on 127.0.0.1 in a subprocess; yield its URL; stop it on exit."""
    from .launch import free_port

    port = port or free_port()
    argv = [sys.executable, "-m", "probelab.cli", "app", "--port", str(port)] + (["--model", model] if model else [])
    out = open(log, "w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None:
            out.close()


@contextlib.contextmanager
def chromium_page(width: int = 1440, height: int = 1000) -> Iterator[object]:
    """A playwright page in the system's headless Chromium."""
    from playwright.sync_api import sync_playwright

    reason = missing()
    if reason:
        raise ProbelabError(reason)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def wait_for_plots(page, count: int = 1, timeout_s: float = 300) -> None:
    """Wait until ``count`` plotly charts have drawn their SVG."""
    page.wait_for_function(f"document.querySelectorAll('{PLOT}').length >= {count}", timeout=timeout_s * 1000)


def wait_script_done(page, timeout_s: float = 300) -> None:
    """Wait until the page's script has finished running (Streamlit's ``stApp`` says ``notRunning``, and
    still says so half a second later: a page that switches or reruns starts again in between)."""
    done = "document.querySelector('[data-testid=\"stApp\"][data-test-script-state=\"notRunning\"]') !== null"
    deadline = time.monotonic() + timeout_s
    while True:
        page.wait_for_function(done, timeout=max(1.0, deadline - time.monotonic()) * 1000)
        page.wait_for_timeout(500)
        if page.evaluate(done) or time.monotonic() > deadline:
            return


def screenshot_main(page, path: str | Path) -> Path:
    """A screenshot of the viewport (Streamlit scrolls inside its own container, not the page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path
