"""Fixtures of the UI suite: one headless Chromium for the session, fresh pages on a desktop or a
phone screen, screenshots, and a real server for a module. Helpers live in ``tests/ui/browser.py``.

UI tests are ``async def`` (Playwright's async API, on pytest-asyncio's session loop; see
``browser.py`` for why not the sync API)::

    from tests.ui.browser import axe_violations, console_errors, focus_ring_visible

    async def test_models_page(ui_server, new_page, screenshot):
        page = await new_page(ui_server.url)               # 1280x800; device="phone" for 390x844
        await page.goto("/ui/models")
        assert await page.title() == "Models"
        assert await axe_violations(page) == []             # serious and critical, WCAG 2 A/AA
        assert await focus_ring_visible(page, "a.model")
        assert console_errors(page) == []                   # CSP refusals show up here
        await screenshot(page, "models-desktop")           # $REGISTRY_UI_SCREENSHOTS or tmp_path
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.support import Server, server_for
from tests.ui.browser import launch, open_context, save_screenshot, screenshot_dir, watch_console

NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium (``/usr/bin/chromium``) for the whole session."""
    async with async_playwright() as playwright:
        try:
            chromium = await launch(playwright)
        except FileNotFoundError as exc:
            pytest.fail(str(exc))
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[NewPage]:
    """``await new_page(base_url=None, device="desktop", **context_options)``: a page in a
    context of its own (fresh cookies and storage), 1280x800 on "desktop", 390x844 with touch
    and a mobile viewport on "phone". Every context is closed when the test ends."""
    contexts: list[BrowserContext] = []

    async def make(base_url: str | None = None, device: str = "desktop", **options: Any) -> Page:
        context = await open_context(browser, base_url, device, **options)
        contexts.append(context)
        page = await context.new_page()
        watch_console(page)  # the context's "page" event may come only after this returns
        return page

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture
def new_phone_page(new_page: NewPage) -> NewPage:
    """``await new_phone_page(base_url=None, **context_options)``: ``new_page`` on the phone."""
    return functools.partial(new_page, device="phone")


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Page, str], Awaitable[Path]]:
    """``await screenshot(page, name)``: a full-page PNG ``<name>.png`` in
    ``$REGISTRY_UI_SCREENSHOTS`` when set, else in the test's tmp_path; returns its path."""
    directory = screenshot_dir(tmp_path)

    async def take(page: Page, name: str) -> Path:
        return await save_screenshot(page, name, directory)

    return take


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``python -m registry serve`` on loopback with a fresh SQLite database, for the
    module (``.url``, ``.token``: an admin bootstrap token, ``.api``, ``.headers``). For both
    backends, take the ``server`` fixture of tests/conftest.py instead."""
    with server_for("sqlite", tmp_path_factory.mktemp("ui-serve")) as srv:
        yield srv
