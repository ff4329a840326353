"""The UI suite's own machinery works here: Debian's Chromium starts headless, renders a page of
the real service, axe-core runs under a strict Content-Security-Policy and finds a deliberate
violation, the focus-ring check tells a visible ring from none, and screenshots are written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.async_api import Error as PlaywrightError

from tests.support import Server
from tests.ui.browser import axe_violations, console_errors, failed_requests, focus_ring_visible

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

PROBE = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>CSP probe</title><link rel="stylesheet" href="/style.css"></head>
<body><main>
  <h1>Probe</h1>
  <img src="/pixel.png">
  <p><a id="ringed" href="/">a link with a focus ring</a></p>
  <p><button id="bare" type="button">a button without one</button></p>
  <script>window.inlineRan = true;</script>
</main></body>
</html>"""

STYLE = b"""#bare:focus, #bare:focus-visible { outline: none; box-shadow: none; }
a:focus-visible { outline: 3px solid #1a4fa0; outline-offset: 2px; }"""

PIXEL = bytes.fromhex(  # a 1x1 PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5b1e1b30000000049454e44ae426082")

FILES = {"/": ("text/html; charset=utf-8", PROBE), "/style.css": ("text/css", STYLE),
         "/pixel.png": ("image/png", PIXEL)}


class _ProbeHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        content_type, body = FILES.get(self.path, ("text/plain", b"not found"))
        self.send_response(200 if self.path in FILES else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def csp_site() -> Iterator[str]:
    """A tiny site on loopback whose every answer carries a strict CSP."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ProbeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def test_schema_page_of_the_service_renders(ui_server: Server, new_page, new_phone_page, screenshot) -> None:
    page = await new_page(ui_server.url)
    response = await page.goto("/schema")
    assert response is not None and response.status == 200
    assert await page.title() == "Model Registry"
    # Its script and fonts come from CDNs, which no name resolves to here: refused at once.
    assert any("ERR_NAME_NOT_RESOLVED" in failure for failure in failed_requests(page))
    shot = await screenshot(page, "schema-desktop")
    assert shot.read_bytes().startswith(b"\x89PNG")

    phone = await new_phone_page(ui_server.url)
    await phone.goto("/schema")
    assert await phone.evaluate("[window.innerWidth, navigator.maxTouchPoints > 0]") == [390, True]
    assert (await screenshot(phone, "schema-phone")).stat().st_size > 0


async def test_axe_runs_under_a_strict_csp_and_finds_a_violation(csp_site: str, new_page, screenshot) -> None:
    page = await new_page(csp_site)
    response = await page.goto("/")
    assert response is not None and response.headers["content-security-policy"] == CSP
    # The policy is in force: the inline script was refused, and so is a <script> tag with content.
    assert await page.evaluate("window.inlineRan") is None
    assert any("Content Security Policy" in e for e in console_errors(page)), console_errors(page)
    try:
        await page.add_script_tag(content="window.tagRan = true;")
    except PlaywrightError:
        pass
    assert await page.evaluate("window.tagRan") is None

    violations = await axe_violations(page)
    assert violations == [{"id": "image-alt", "impact": "critical",
                           "help": "Images must have alternative text", "targets": ["img"]}]
    assert await page.evaluate("window.axe.version") == "4.14.1"
    assert await axe_violations(page, impact={"minor"}) == []

    assert await focus_ring_visible(page, "#ringed")
    assert not await focus_ring_visible(page, "#bare")
    await screenshot(page, "csp-probe")
