"""End to end in a real headless Chromium: `probelab app` on a free port, the alignment page, its plots.

Needs Debian's chromium and playwright-python (`make browser`, a prerequisite of `make test`).
"""
from __future__ import annotations

import struct

import pytest

from probelab.app_support import browser

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_alignment_page_draws_its_plots_in_chromium_and_stays_local(tmp_path):
    env = {"PROBELAB_CACHE": str(tmp_path / "cache"), "PROBELAB_APP_UMAP": "0",
           "PROBELAB_APP_ROOTS": str(tmp_path / "runs")}
    requests = []
    with browser.running_app(model="tiny-llama", env=env, log=tmp_path / "app.log") as url, \
            browser.chromium_page() as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}/")
        browser.wait_for_plots(page, count=2, timeout_s=240)
        page.wait_for_timeout(500)
        shot = browser.screenshot_main(page, tmp_path / "alignment.png")
        body = page.inner_text("body")
        assert "Hidden-state alignment" in body and "alignment score" in body
        assert "tiny-llama + Lerp2 at init" in body
        assert body.count("1.0000") >= 5  # score and its four components at init
        assert "Traceback" not in body and "Page not found" not in body
        # every page is in the navigation
        nav = page.locator('[data-testid="stSidebarNavLink"]')
        assert [nav.nth(i).inner_text().split()[-1] for i in range(nav.count())] == ["Alignment", "Concepts", "Steering", "Lens",
                                                                                     "Features"]
    assert png_size(shot) == (1440, 1000) and shot.stat().st_size > 20_000
    assert requests and all(u.startswith((url, "data:", "blob:")) for u in requests), \
        [u for u in requests if not u.startswith((url, "data:", "blob:"))][:5]


EXCEPTION = '[data-testid="stException"]'


def test_every_page_opens_by_its_address_without_an_exception(tmp_path):
    """/, /alignment and every other page open (no "Page not found", no exception box, no traceback), and
    the Steering page with no trained SAE says what is missing instead of asking for a concept id."""
    env = {"PROBELAB_CACHE": str(tmp_path / "cache"), "PROBELAB_APP_UMAP": "0",
           "PROBELAB_APP_ROOTS": str(tmp_path / "runs")}
    with browser.running_app(model="tiny-llama", env=env, log=tmp_path / "app.log") as url, \
            browser.chromium_page() as page:
        page.goto(f"{url}/")
        browser.wait_script_done(page)
        assert page.url.rstrip("/").endswith("/alignment")  # / opens the alignment page under its address
        nav = page.locator('[data-testid="stSidebarNavLink"]')
        paths = [nav.nth(i).get_attribute("href").rstrip("/").rsplit("/", 1)[-1] for i in range(nav.count())]
        assert "alignment" in paths and "steering" in paths and "concepts" in paths
        for path in paths:
            page.goto(f"{url}/{path}")
            browser.wait_script_done(page)
            body = page.inner_text("body")
            assert page.url.rstrip("/").endswith(f"/{path}"), (path, page.url)
            assert "Page not found" not in body and "Traceback" not in body, (path, body[:500])
            assert page.locator(EXCEPTION).count() == 0, (path, page.locator(EXCEPTION).first.inner_text())
            if path == "alignment":
                assert "Hidden-state alignment" in body
        # no SAE: the default SAE is not trained in this fresh cache
        page.goto(f"{url}/steering?sae=default")
        browser.wait_script_done(page)
        body = page.inner_text("body")
        assert "not trained yet" in body and "probelab sae train" in body, body[:800]
        assert "Pick a concept id" not in body and "Generate" not in body
        assert page.locator(EXCEPTION).count() == 0


def test_lens_and_features_pages_draw_in_chromium_and_concepts_link_to_features(tmp_path):
    """Lens: a heatmap per model, side by side with a base; Features: a latent's histogram and contexts,
    opened by ?latent= and from the Concepts page's link; nothing is fetched from outside the app."""
    env = {"PROBELAB_CACHE": str(tmp_path / "cache"), "PROBELAB_APP_UMAP": "0",
           "PROBELAB_APP_ROOTS": str(tmp_path / "runs")}
    requests = []
    with browser.running_app(model="tiny-llama", env=env, log=tmp_path / "app.log") as url, \
            browser.chromium_page() as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}/lens")
        browser.wait_for_plots(page, count=1, timeout_s=240)
        body = page.inner_text("body")
        assert "Logit lens" in body and "greedy next token" in body and "Traceback" not in body
        field = page.get_by_label("base, side by side (optional)")
        field.fill("tiny-llama")
        field.press("Enter")
        browser.wait_for_plots(page, count=2, timeout_s=240)
        assert page.locator(EXCEPTION).count() == 0

        page.goto(f"{url}/features?latent=3")
        browser.wait_script_done(page, 600)
        body = page.inner_text("body")
        assert "SAE features" in body and "latent 3:" in body and page.locator(EXCEPTION).count() == 0, body[:800]
        assert "activation histogram" in body or "never fired" in body

        page.goto(f"{url}/concepts")
        browser.wait_script_done(page, 600)
        link = page.get_by_text("on the Features page", exact=False).first
        link.click()
        browser.wait_script_done(page, 600)
        assert "/features" in page.url and "latent=" in page.url, page.url
        assert "SAE features" in page.inner_text("body") and page.locator(EXCEPTION).count() == 0
    assert requests and all(u.startswith((url, "data:", "blob:")) for u in requests), \
        [u for u in requests if not u.startswith((url, "data:", "blob:"))][:5]
