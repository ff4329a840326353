"""Browser helpers for the UI suite: Debian's headless Chromium driven by Playwright's async API,
pages in fresh contexts (a desktop and a phone), axe-core's accessibility checks, full-page
screenshots, a visible-focus check and the console errors a page logged.

Why the async API: Playwright's sync API leaves its own event loop marked as running in the test
thread after every call, and pytest-asyncio's session loop then refuses to run any later async
test or fixture ("Runner.run() cannot be called from a running event loop"). So UI tests are
``async def`` and await these helpers, on the session loop like the rest of the suite.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``), never a browser build of
Playwright's own (``playwright install`` downloads one; this machine cannot). It runs without its
sandbox (Playwright's default, ``chromium_sandbox=False``): as root the sandbox cannot start.

axe-core comes from the npm registry, pinned below, installed once per machine under
``~/.cache/registry-tests/axe-core-<version>/`` (or ``REGISTRY_TEST_AXE_CACHE``) and reused, like
the MLflow venvs of ``tests/mlflow/env.py``. The pages under test send a strict
Content-Security-Policy (``script-src 'self'``), which refuses a ``<script>`` tag with axe's
source; ``page.evaluate`` runs it through the DevTools protocol instead, which the page's CSP does
not govern, so the app's policy stays exactly as it is served."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = os.environ.get("REGISTRY_TEST_CHROMIUM") or "/usr/bin/chromium"

# -- the two screens every page is looked at on --------------------------------------------------

DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {  # an iPhone 12-15 sized screen, touch, a mobile layout viewport
    "viewport": {"width": 390, "height": 844},
    "screen": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DEVICES = {"desktop": DESKTOP, "phone": PHONE}


# No name resolves but loopback's: a page that asks for anything off this machine (a CDN's script,
# a web font) gets ERR_NAME_NOT_RESOLVED at once, instead of waiting on the network, and
# ``failed_requests`` names it.
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"


async def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, without its sandbox (Playwright passes ``--no-sandbox``),
    resolving no host name but loopback's."""
    if not os.access(CHROMIUM, os.X_OK):
        raise FileNotFoundError(
            f"{CHROMIUM} not found: the UI tests drive Debian's Chromium "
            "(apt-get install -y chromium; .ci/run installs it)")
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            chromium_sandbox=False, args=[LOOPBACK_ONLY])


async def open_context(browser: Browser, base_url: str | None = None, device: str = "desktop",
                       **options: Any) -> BrowserContext:
    """A fresh context (no cookies, no storage) for ``device`` ("desktop" or "phone"); relative
    URLs in ``page.goto`` resolve against ``base_url``. ``options`` go to ``new_context``."""
    context = await browser.new_context(base_url=base_url, **{**DEVICES[device], **options})
    context.on("page", watch_console)
    return context


# -- what a page logged ------------------------------------------------------------------------------

_console: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()
_failed: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


def watch_console(page: Page) -> None:
    """Record ``page``'s console errors, uncaught exceptions and failed requests (``open_context``
    does this for every page of its contexts)."""
    if page in _console:
        return
    errors = _console[page] = []
    failed = _failed[page] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("requestfailed", lambda req: failed.append(f"{req.url} ({req.failure})"))


def console_errors(page: Page) -> list[str]:
    """The console errors and uncaught exceptions ``page`` had so far (``[]`` on a clean page).
    A script or a style that the page's Content-Security-Policy refused shows up here."""
    return list(_console.get(page, []))


def failed_requests(page: Page) -> list[str]:
    """``"<url> (<reason>)"`` for each request of ``page`` that failed so far: one for a host off
    this machine fails with net::ERR_NAME_NOT_RESOLVED (``LOOPBACK_ONLY``)."""
    return list(_failed.get(page, []))


# -- screenshots --------------------------------------------------------------------------------------

SCREENSHOTS_ENV = "REGISTRY_UI_SCREENSHOTS"


def screenshot_dir(default: Path) -> Path:
    """``$REGISTRY_UI_SCREENSHOTS`` when set (to collect them), else ``default``."""
    return Path(os.environ.get(SCREENSHOTS_ENV) or default)


async def save_screenshot(page: Page, name: str, directory: Path) -> Path:
    """A full-page PNG of ``page`` as ``directory/<name>.png``; returns its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "page"
    path = directory / (safe if safe.endswith(".png") else safe + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    # caret="initial": hiding the caret (the default) injects a <style>, which a strict CSP refuses
    # and logs as a console error the tests would then see.
    await page.screenshot(path=str(path), full_page=True, caret="initial")
    return path


# -- keyboard focus ------------------------------------------------------------------------------------

_FOCUS_STYLE = """el => {
  const s = getComputedStyle(el);
  return {outlineStyle: s.outlineStyle, outlineWidth: s.outlineWidth, outlineColor: s.outlineColor,
          boxShadow: s.boxShadow, focusVisible: el.matches(':focus-visible')};
}"""


def _transparent(color: str) -> bool:
    return color == "transparent" or bool(re.fullmatch(r"rgba\(.*,\s*0(\.0+)?\)", color.strip()))


async def focus_style(page: Page, selector: str, max_tabs: int = 100) -> dict[str, Any]:
    """Reach the element ``selector`` names by pressing Tab (from the top of the page), as a
    keyboard user would, and return its computed focus styles. Raises ``AssertionError`` if Tab
    never reaches it (not keyboard-focusable, or hidden)."""
    target = page.locator(selector).first
    await target.wait_for(state="attached")
    # Start sequential navigation before the first focusable element.
    await page.evaluate("""() => {
      if (document.activeElement) document.activeElement.blur();
      const start = document.createElement('span');
      start.tabIndex = -1;
      document.body.prepend(start);
      start.focus();
      start.remove();
    }""")
    for _ in range(max_tabs):
        await page.keyboard.press("Tab")
        if await target.evaluate("el => el === document.activeElement || el.contains(document.activeElement)"):
            return await page.evaluate(f"({_FOCUS_STYLE})(document.activeElement)")
    raise AssertionError(f"{selector!r} was not reached by {max_tabs} presses of Tab")


async def focus_ring_visible(page: Page, selector: str, max_tabs: int = 100) -> bool:
    """Whether the element ``selector`` names shows a focus indicator once Tab has moved the
    keyboard focus to it: a computed outline (not ``none``, not zero wide, not transparent) or a
    box-shadow. See ``focus_style`` for the styles themselves."""
    style = await focus_style(page, selector, max_tabs)
    outline = (style["outlineStyle"] != "none" and style["outlineWidth"] not in ("0px", "0")
               and not _transparent(style["outlineColor"]))
    return outline or style["boxShadow"] not in ("none", "")


# -- axe-core ----------------------------------------------------------------------------------------------

AXE_VERSION = "4.14.1"
# npm's integrity of that tarball (npm view axe-core@4.14.1 dist.integrity): checked after install.
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
AXE_TAGS = ("wcag2a", "wcag2aa")
DEFAULT_IMPACT = frozenset({"serious", "critical"})


def axe_cache_dir() -> Path:
    return Path(os.environ.get("REGISTRY_TEST_AXE_CACHE") or Path.home() / ".cache" / "registry-tests")


def axe_path() -> Path:
    """axe.min.js of the pinned axe-core, installing it with npm first if this machine has not
    yet (under a file lock, so concurrent test processes install it once)."""
    home = axe_cache_dir() / f"axe-core-{AXE_VERSION}"
    script = home / "node_modules" / "axe-core" / "axe.min.js"
    marker = home / ".installed"
    wanted = f"axe-core@{AXE_VERSION} {AXE_INTEGRITY}\n"
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f"axe-core-{AXE_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted and script.exists():
            return script
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError("npm not found: the UI tests install axe-core from the npm registry")
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        subprocess.run([npm, "install", "--prefix", str(home), "--no-audit", "--no-fund", "--ignore-scripts",
                        "--save-exact", "--loglevel=error", f"axe-core@{AXE_VERSION}"],
                       check=True, capture_output=True, timeout=300)
        lock_entry = json.loads((home / "package-lock.json").read_text())["packages"]["node_modules/axe-core"]
        if (lock_entry.get("version"), lock_entry.get("integrity")) != (AXE_VERSION, AXE_INTEGRITY):
            raise RuntimeError(f"npm installed axe-core {lock_entry.get('version')} with integrity "
                               f"{lock_entry.get('integrity')}, not {AXE_VERSION} {AXE_INTEGRITY}")
        marker.write_text(wanted)
    return script


_axe_source: str | None = None


def axe_source() -> str:
    global _axe_source
    if _axe_source is None:
        _axe_source = axe_path().read_text()
    return _axe_source


async def inject_axe(page: Page) -> None:
    """Make ``window.axe`` exist in ``page``'s main frame. ``page.evaluate`` runs the source
    through the DevTools protocol, which the page's Content-Security-Policy does not govern
    (``add_script_tag`` would add a ``<script>`` element, which ``script-src 'self'`` refuses)."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(axe_source() + "\n;undefined")


def _target(target: list[Any]) -> str:
    # A node inside shadow DOM or a frame has a list of selectors, outermost first.
    return " >>> ".join(_target(t) if isinstance(t, list) else str(t) for t in target)


async def axe_results(page: Page, tags: Collection[str] = AXE_TAGS,
                      options: dict[str, Any] | None = None) -> dict[str, Any]:
    """axe-core's full result object for ``page`` with the rules of ``tags`` (frames are not
    descended into: ``iframes: false``)."""
    await inject_axe(page)
    run_options = {"runOnly": {"type": "tag", "values": list(tags)}, "resultTypes": ["violations"],
                   "iframes": False, **(options or {})}
    return await page.evaluate("options => window.axe.run(document, options)", run_options)


async def axe_violations(page: Page, impact: Collection[str] | None = DEFAULT_IMPACT,
                         tags: Collection[str] = AXE_TAGS,
                         options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A and AA violations on ``page`` whose impact is in ``impact`` (``None``:
    all of them), each as ``{"id", "impact", "help", "targets"}`` (``targets``: the CSS
    selectors of the offending nodes), so that ``assert await axe_violations(page) == []``
    names what is wrong and where. ``options`` go to ``axe.run`` (e.g. ``{"rules":
    {"color-contrast": {"enabled": False}}}``)."""
    results = await axe_results(page, tags, options)
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"],
         "targets": [_target(node["target"]) for node in v["nodes"]]}
        for v in results["violations"]
        if impact is None or v["impact"] in impact
    ]

