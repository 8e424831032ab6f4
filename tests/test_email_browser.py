"""Every rendered email in real headless Chromium: no horizontal scrolling on a phone or at 600 px, a visible
unsubscribe link in the footer, no text below 14 px, and a dark mode that applies.

Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright for Python; no browser is downloaded.
Locally the test skips without it; under CI=true a missing Chromium fails the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route
from starlette.testclient import TestClient

from newsletter.lessons import load_series
from newsletter.markup import MEDIA_PATH
from newsletter.models import CONFIRMATION
from newsletter.project import Project
from newsletter.web import create_app

pytestmark = pytest.mark.browser

WIDTHS = (375, 600)
REPO = Path(__file__).resolve().parent.parent
BUNDLED = load_series(REPO / "lessons")
EMAILS = [(CONFIRMATION, "confirmation"), *((lesson.slug, lesson.slug) for lesson in BUNDLED)]

# Text the reader can see (not hidden, not the preheader) whose computed size is below 14 px.
SMALL_VISIBLE_TEXT = """() => {
  const small = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const element = node.parentElement;
    if (!node.textContent.trim() || !element) continue;
    const rect = element.getBoundingClientRect();
    const style = getComputedStyle(element);
    const hidden = rect.width === 0 || rect.height <= 1 || style.visibility === "hidden" || style.opacity === "0";
    if (!hidden && parseFloat(style.fontSize) < 14) small.push([node.textContent.trim(), style.fontSize]);
  }
  return small;
}"""

# Visible text whose colour has less than 4.5:1 contrast (WCAG AA) with the background it sits on.
LOW_CONTRAST_TEXT = """() => {
  const rgba = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const channel = (value) => {
      value /= 255;
      return value <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = rgba(getComputedStyle(node).backgroundColor);
      if (colour.length === 3 || (colour.length === 4 && colour[3] > 0)) return colour;
    }
    return [255, 255, 255];
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const element = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !element) continue;
    const rect = element.getBoundingClientRect();
    if (rect.width === 0 || rect.height <= 1 || getComputedStyle(element).opacity === "0") continue;
    const [light, dark] = [luminance(rgba(getComputedStyle(element).color)), luminance(background(element))]
      .sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    if (ratio < 4.5) low.push([walker.currentNode.textContent.trim().slice(0, 40), ratio.toFixed(2)]);
  }
  return low;
}"""


def open_email(
    chromium: Browser, project: Project, week: str, width: int, color_scheme: Literal["light", "dark"] = "light"
) -> Page:
    """A page showing the email's HTML part at this viewport width."""
    sample = project.sample_subscriber()
    html = project.render(sample, week).html
    page = chromium.new_page(
        viewport={"width": width, "height": 900}, color_scheme=color_scheme, java_script_enabled=False
    )
    page.set_content(html, wait_until="load")
    return page


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("week", "slug"), EMAILS, ids=[slug for _, slug in EMAILS])
def test_the_email_fits_and_shows_its_unsubscribe_link(
    chromium: Browser, project: Project, tmp_path: Path, week: str, slug: str, width: int
) -> None:
    page = open_email(chromium, project, week, width)
    try:
        page.screenshot(path=str(tmp_path / f"{slug}-{width}.png"), full_page=True)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{slug} scrolls sideways at {width} px: {scroll_width} px wide"
        assert page.evaluate("document.body.scrollWidth") <= width

        unsubscribe = project.links(project.sample_subscriber().id).unsubscribe
        link = page.locator(f'a[href="{unsubscribe}"]')
        assert link.count() == 1, f"{slug}: no link to {unsubscribe}"
        assert link.is_visible()
        box = link.bounding_box()
        heading = page.locator("h1").bounding_box()
        assert box is not None and heading is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"{slug}: the unsubscribe link is cut off"
        assert box["y"] > heading["y"] + heading["height"], f"{slug}: the unsubscribe link is not in the footer"
        assert float(link.evaluate("a => parseFloat(getComputedStyle(a).fontSize)")) >= 14

        assert page.evaluate(SMALL_VISIBLE_TEXT) == []
    finally:
        page.close()


@pytest.mark.parametrize(("week", "slug"), EMAILS[:2], ids=[slug for _, slug in EMAILS[:2]])
def test_dark_mode_styles_apply(chromium: Browser, project: Project, week: str, slug: str) -> None:
    backgrounds: dict[str, str] = {}
    schemes: tuple[Literal["light", "dark"], ...] = ("light", "dark")
    for scheme in schemes:
        page = open_email(chromium, project, week, 600, color_scheme=scheme)
        try:
            backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        finally:
            page.close()
    assert backgrounds["light"] != backgrounds["dark"]
    assert backgrounds["dark"] == "rgb(17, 20, 24)"


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(("week", "slug"), EMAILS, ids=[slug for _, slug in EMAILS])
def test_text_is_readable_in_light_and_dark_mode(
    chromium: Browser, project: Project, week: int, slug: str, scheme: Literal["light", "dark"]
) -> None:
    page = open_email(chromium, project, week, 600, color_scheme=scheme)
    try:
        assert page.evaluate(LOW_CONTRAST_TEXT) == []
    finally:
        page.close()


def serve_base_url(page: Page, project: Project) -> list[str]:
    """Answer requests to base_url as `newsletter serve` would: /media/ from the app, other images a stand-in.

    Returns the URLs asked for, so a test can see every image was fetched.
    """
    client = TestClient(create_app(project, studio=False, live_reload=False))
    stand_in = (project.settings.newsletter.lessons / "images" / "trail.png").read_bytes()
    asked: list[str] = []

    def answer(route: Route) -> None:
        url = route.request.url
        asked.append(url)
        path = urlsplit(url)
        if path.path.startswith(MEDIA_PATH):
            response = client.get(f"{path.path}?{path.query}")
            route.fulfill(status=response.status_code, body=response.content, content_type="image/png")
        else:  # the remote image of the lesson (a map on the club's own server)
            route.fulfill(status=200, body=stand_in, content_type="image/png")

    page.route(project.settings.newsletter.base_url + "/**", answer)
    return asked


@pytest.mark.parametrize("width", WIDTHS)
def test_a_lesson_with_images_a_button_and_a_quote_fits_and_shows_them(
    chromium: Browser, rich_project: Project, tmp_path: Path, width: int
) -> None:
    html = rich_project.render(rich_project.sample_subscriber(), "trails").html
    page = chromium.new_page(viewport={"width": width, "height": 900}, java_script_enabled=False)
    try:
        asked = serve_base_url(page, rich_project)
        page.set_content(html, wait_until="load")
        page.screenshot(path=str(tmp_path / f"trails-{width}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        images = page.evaluate(
            "() => [...document.images].map(i => [i.naturalWidth, i.getBoundingClientRect().left,"
            " i.getBoundingClientRect().right, i.getBoundingClientRect().height])"
        )
        assert len(images) == 2 and len(asked) == 2
        for natural, left, right, height in images:
            assert natural > 0, "the image loaded"
            assert left >= 0 and right <= width, f"an image sticks out at {width} px: {left}–{right}"
            assert height > 0
        first = images[0]
        assert abs((first[2] - first[1]) / first[3] - 552 / 368) < 0.02, "the image keeps its shape"

        button = page.locator('a[href="https://running.example.com/trails"]')
        assert button.is_visible()
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["height"] >= 40, "a button is big enough to tap"
        cell = "a => getComputedStyle(a.closest('td')).backgroundColor"
        assert button.evaluate(cell) == "rgb(11, 110, 79)"

        quote = page.locator("blockquote p").first
        assert quote.is_visible()
        assert float(quote.evaluate("p => parseFloat(getComputedStyle(p).fontSize)")) >= 18
        assert page.locator("blockquote p.quote-source").inner_text() == "— A club coach"
        assert page.evaluate(SMALL_VISIBLE_TEXT) == []
        assert page.evaluate(LOW_CONTRAST_TEXT) == []
    finally:
        page.close()
