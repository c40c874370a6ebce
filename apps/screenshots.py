"""Screenshots of every page of ``probelab app`` (the PNGs in docs/), taken in headless Chromium.

    python apps/screenshots.py                                   # embedded model, default SAE
    python apps/screenshots.py --compare runs/a/final runs/b/final --base smollm2-135m
    python apps/screenshots.py --concepts-model tiny-llama --sae tiny   # without a trained SAE

Starts the app on a free port, opens each page, waits until it has drawn, and saves
``app_<page>.png`` into ``--out`` (default ``docs/``). Pages whose inputs are missing (no SAE
trained yet, nothing to compare) are skipped with a message.
"""
from __future__ import annotations

import argparse
import os
import urllib.parse
from pathlib import Path

from probelab.app_support import browser


def shoot(page, out: Path, name: str) -> None:
    page.wait_for_timeout(1200)  # let plotly finish its transitions
    path = browser.screenshot_main(page, out / f"app_{name}.png")
    print(f"wrote {path}")


def sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def tab(page, name: str) -> None:
    """Open a tab and scroll the tab bar to the top of the view, so its content fills the screenshot."""
    page.get_by_role("tab", name=name).first.click()
    page.get_by_role("tablist").first.evaluate("e => e.scrollIntoView({block: 'start'})")


def alignment_pages(page, url: str, out: Path) -> None:
    page.goto(f"{url}/")
    browser.wait_for_plots(page, count=1, timeout_s=900)
    shoot(page, out, "alignment")
    for name, label in (("umap", "UMAP"), ("neighbours", "Nearest neighbours"), ("pairs", "Pair similarity")):
        tab(page, label)
        page.wait_for_timeout(800)
        shoot(page, out, name)


def compare_page(page, url: str, out: Path, folders: list[str], base: str | None) -> None:
    page.goto(f"{url}/")
    browser.wait_for_plots(page, count=1, timeout_s=900)
    bar = sidebar(page)
    bar.get_by_text("Checkpoints", exact=True).first.click()
    box = bar.get_by_label("or checkpoint folders, one per line")
    box.fill("\n".join(folders))
    box.press("Control+Enter")
    if base:
        bar.get_by_text("a base model, layer by layer", exact=True).click()
        field = bar.get_by_label("base model (name or folder)")
        field.fill(base)
        field.press("Enter")
    page.wait_for_timeout(500)
    bar.get_by_role("button", name="Align").click()
    page.get_by_text("checkpoints side by side").wait_for(timeout=1_800_000)
    browser.wait_for_plots(page, count=2, timeout_s=900)
    shoot(page, out, "compare")


def concepts_page(page, url: str, out: Path, model: str, sae: str, name: str = "concepts") -> None:
    page.goto(f"{url}/concepts?" + urllib.parse.urlencode({"model": model, "sae": sae}))
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(".plt-text", state="attached", timeout=900_000)
    except PlaywrightTimeout:
        alerts = page.locator("[data-testid=stAlert]")
        print(f"skipped the concepts page: {alerts.first.inner_text() if alerts.count() else 'nothing drawn'}")
        return
    shoot(page, out, name)


def steering_page(page, url: str, out: Path, model: str, sae: str, concept: int, factor: float | None,
                  prompt: str | None) -> None:
    page.goto(f"{url}/steering?" + urllib.parse.urlencode({"model": model, "sae": sae}))
    values = [("concept id", str(concept))] + ([("factor", f"{factor:g}")] if factor is not None else [])
    for label, value in values:
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        page.wait_for_timeout(300)
    if prompt:
        box = page.get_by_label("prompt")
        box.fill(prompt)
        box.press("Control+Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("text=unsteered", timeout=600_000)
    if page.locator("[data-testid='stAlert']").filter(has_text="steering:").count():
        print(f"skipped the steering page: {page.locator('[data-testid=stAlert]').first.inner_text()}")
        return
    shoot(page, out, "steering")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="the app's base model")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--compare", nargs="*", default=[], help="checkpoint folders for the side-by-side page")
    ap.add_argument("--base", default=None, help="compare them with this base model (default: Control LLM branches)")
    ap.add_argument("--concepts-model", default=None, help="model for the concepts/steering pages (default --model)")
    ap.add_argument("--sae", default=None, help="SAE for the concepts/steering pages")
    ap.add_argument("--concept", type=int, default=0, help="concept id to steer by")
    ap.add_argument("--factor", type=float, default=None, help="steering factor (default: the page's)")
    ap.add_argument("--prompt", default=None, help="steering prompt (default: the page's)")
    ap.add_argument("--pages", default="alignment,compare,concepts,steering")
    args = ap.parse_args()
    cmodel = args.concepts_model or args.model
    from probelab.app_support.settings import default_sae_for

    sae = args.sae or default_sae_for(cmodel)
    pages = set(args.pages.split(","))
    env = {"PROBELAB_APP_ROOTS": str(Path.cwd() / "runs")}
    with browser.running_app(model=args.model, env=env, log=Path(os.devnull)) as url, \
            browser.chromium_page(1440, 1000) as page:
        if "alignment" in pages:
            alignment_pages(page, url, args.out)
        if "compare" in pages and len(args.compare) >= 2:
            compare_page(page, url, args.out, args.compare, args.base)
        if "concepts" in pages:
            concepts_page(page, url, args.out, cmodel, sae)
        if "steering" in pages:
            steering_page(page, url, args.out, cmodel, sae, args.concept, args.factor, args.prompt)


if __name__ == "__main__":
    main()
