"""The pages on a phone and in the dark, in Debian's chromium: at 375 px no main page is
wider than the screen; the theme follows the browser's setting and the switch in the
navigation overrides it, remembered across pages.

With XENWEB_SCREENSHOT_DIR set, the dark dashboard and guest page and the phone-sized
guest page are saved there (`make screenshots`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guests.models import Guest
from hosts.models import Host
from storage.models import Pool
from tests.conftest import PASSWORD
from tests.e2e.conftest import SCREENSHOT_DIR
from tests.e2e.test_browser import off_loop
from tests.live.processes import WebServer
from xenweb.jobs.models import Job

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(600)]

PHONE = {"width": 375, "height": 812}
# The database fixtures come before `browser` in the signatures: Playwright's loop runs in
# this thread once the browser is up, and Django refuses queries there.
# Elements reaching past the right edge, the outermost first (what to fix when it fails).
OFFENDERS_JS = """() => {
  const width = document.documentElement.clientWidth, found = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 1 && !found.some(f => f.el.contains(el))) {
      let scroller = el.parentElement, clipped = false;
      for (; scroller && scroller !== document.body; scroller = scroller.parentElement) {
        const style = getComputedStyle(scroller);
        if (["auto", "scroll", "hidden"].includes(style.overflowX)) { clipped = true; break; }
      }
      if (!clipped) found.push({el, what: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
        + (el.className && typeof el.className === "string" ? "." + el.className.trim()
           .split(/\\s+/).join(".") : "") + " right=" + Math.round(box.right)});
    }
  }
  return {scroll: document.documentElement.scrollWidth, width, offenders: found.map(f => f.what)};
}"""


def save(page: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Any, server: WebServer, username: str) -> None:
    page.goto(server.origin + "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.origin + "/")


def main_pages(demo: Host, user: Any) -> list[str]:
    web = Guest.objects.get(host=demo, name="web01")
    pool = Pool.objects.filter(host=demo).first()
    job = Job.objects.create(kind="selftest", title="A job with a long title to wrap on phones",
                             owner=user, state="succeeded", done=1, total=1,
                             result={"guest": web.pk, "note": "done"})
    return ["/", "/hosts/", demo.get_absolute_url(), "/hosts/add/", "/guests/",
            web.get_absolute_url(), f"/guests/{web.pk}/console/", "/guests/new/",
            "/guests/conflict-sets/", "/storage/", f"/storage/pools/{pool.pk}/",
            "/storage/v2v/", "/storage/p2v/", "/jobs/", f"/jobs/{job.pk}/", "/audit/",
            "/accounts/users/", "/accounts/profile/", "/guests/987654/"]


def test_every_main_page_fits_a_phone(demo: Host, admin_user: Any, e2e_server: WebServer,
                                      browser: Any, tmp_path: Path) -> None:
    pages = off_loop(main_pages, demo, admin_user)
    page = browser.new_page()
    page.set_viewport_size(PHONE)
    log_in(page, e2e_server, admin_user.username)
    wide = {}
    for path in pages:
        page.goto(e2e_server.origin + path)
        page.wait_for_load_state("load")
        seen = page.evaluate(OFFENDERS_JS)
        if seen["scroll"] > seen["width"]:
            wide[path] = seen
        if path.endswith(f"/{pages[5].split('/')[-2]}/"):
            save(page, "phone-guest-detail", tmp_path)
    assert not wide, wide
    # The menu folds into the toggler and opens on a tap.
    page.goto(e2e_server.origin + "/")
    assert not page.locator("#mainnav").is_visible()
    page.click("button.navbar-toggler")
    page.locator("#mainnav a.nav-link", has_text="Guests").wait_for()


def theme(page: Any) -> str:
    return page.evaluate("() => document.documentElement.getAttribute('data-bs-theme')")


SEEN_BACKGROUND_JS = """selector => {
  let el = document.querySelector(selector);
  for (; el; el = el.parentElement) {
    const colour = getComputedStyle(el).backgroundColor;
    if (!/rgba\\(.*, 0\\)$/.test(colour) && colour !== "transparent") return colour;
  }
  return getComputedStyle(document.documentElement).backgroundColor;
}"""


def background_luminance(page: Any, selector: str = "body") -> float:
    """How light the background behind `selector` looks (0 black, 1 white)."""
    rgb = page.evaluate(SEEN_BACKGROUND_JS, selector)
    red, green, blue = (int(part) for part in rgb[rgb.index("(") + 1:-1].split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_the_theme_follows_the_browser_and_the_switch(demo: Host, admin_user: Any,
                                                      e2e_server: WebServer, browser: Any,
                                                      tmp_path: Path) -> None:
    web = off_loop(lambda: Guest.objects.get(host=demo, name="web01"))
    page = browser.new_page()
    page.emulate_media(color_scheme="dark")
    log_in(page, e2e_server, admin_user.username)
    assert theme(page) == "dark" and background_luminance(page) < 0.2
    shot = save(page, "dark-dashboard", tmp_path)
    assert shot.stat().st_size > 10_000
    page.goto(e2e_server.origin + web.get_absolute_url())
    assert theme(page) == "dark"
    save(page, "dark-guest-detail", tmp_path)
    page.goto(e2e_server.origin + "/guests/")
    assert background_luminance(page, "table td") < 0.2  # no white table in the dark
    page.goto(e2e_server.origin + web.get_absolute_url())
    # auto → dark → light: light although the browser prefers dark, on every page.
    page.click("#theme-switch")
    page.click("#theme-switch")
    assert theme(page) == "light" and background_luminance(page) > 0.8
    assert page.get_attribute("#theme-switch", "title") == "Theme: light"
    page.goto(e2e_server.origin + "/guests/")
    assert theme(page) == "light"
    page.click("#theme-switch")  # back to following the browser
    assert theme(page) == "dark"
    page.emulate_media(color_scheme="light")  # the browser's setting changes: followed
    page.wait_for_function("() => document.documentElement.getAttribute('data-bs-theme') "
                           "=== 'light'")
