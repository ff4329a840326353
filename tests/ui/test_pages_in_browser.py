"""The pages in Debian's headless Chromium, against a real ``serve`` process on each backend:
a release engineer's whole path (sign in, find a model, read why a gate fails, request a
promotion, a second releaser approves it, the badge and the timeline change, a comment swapped in
by htmx, the lineage picture, sign out), keyboard use, and axe-core's WCAG 2 A/AA checks of every
page on a laptop and on a phone. Screenshots of each page go to ``$REGISTRY_UI_SCREENSHOTS``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.api.helpers import seg
from tests.support import Server
from tests.ui.browser import axe_violations, console_errors, failed_requests, focus_ring_visible

Shot = Callable[[Page, str], Awaitable[Path]]


class Scene:
    """A model in a state worth deciding on, and the people who decide (by token)."""

    def __init__(self, server: Server) -> None:
        uid = uuid.uuid4().hex[:6]
        self.name = f"card-fraud-{uid}"
        self.tokens: dict[str, str] = {}
        self.principal: dict[str, str] = {}
        with httpx.Client(base_url=server.api, headers=server.headers, timeout=30.0) as c:
            for who, role in (("alice", "editor"), ("bob", "releaser"), ("vera", "viewer")):
                self.principal[who] = f"{who}-{uid}"
                r = c.post("/tokens", json={"name": f"{who}-{uid}", "role": role,
                                            "principal": self.principal[who]})
                assert r.status_code == 201, r.text
                self.tokens[who] = r.json()["token"]
            self.tokens["admin"] = server.token
            ok(c.post("/models", json={"name": self.name, "description": "Scores card transactions."}))
            for i, auc in enumerate((0.91, 0.95, 0.80), start=1):
                ok(c.post(f"/models/{seg(self.name)}/versions", json={
                    "source": f"s3://models/fraud/{i}", "run_id": f"train-{i}", "metrics": {"auc": auc},
                    "description": f"trained by run train-{i}",
                    "inputs": [{"namespace": "s3://datasets", "name": "transactions", "version": f"2026-0{i}"}]}))
                ok(c.post(f"/models/{seg(self.name)}/versions/{i}/transitions", json={"to_stage": "staging"}))
            ok(c.post(f"/models/{seg(self.name)}/versions/1/transitions", json={"to_stage": "production"}))
            ok(c.put(f"/models/{seg(self.name)}/policies/production",
                     json={"metrics": {"auc": {"min": 0.9}}, "required_approvals": 1}))
            ok(c.post("/webhooks", json={"url": "https://192.0.0.9/hook", "event_types": ["comment.*"],
                                         "description": "chat notifier"}))

    def stage(self, server: Server, version: int) -> str:
        r = httpx.get(f"{server.api}/models/{seg(self.name)}/versions/{version}", headers=server.headers)
        return r.json()["stage"]


def ok(r: httpx.Response) -> Any:
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


@pytest.fixture(scope="module")
def scene(server: Server) -> Iterator[Scene]:
    yield Scene(server)


async def sign_in(page: Page, token: str) -> None:
    await page.goto("/ui")
    await expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui$"))
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/ui$"))


async def clean(page: Page) -> None:
    """Nothing the page's CSP refused, no script error, nothing asked of another host."""
    assert console_errors(page) == []
    assert failed_requests(page) == []


async def test_a_promotion_is_requested_approved_discussed_and_seen(
        server: Server, scene: Scene, new_page: Callable[..., Awaitable[Page]], screenshot: Shot) -> None:
    backend = server.database_url.split(":")[0].split("+")[0]
    alice = await new_page(server.url)
    await alice.goto("/ui")
    await screenshot(alice, f"{backend}-01-sign-in")
    await sign_in(alice, scene.tokens["alice"])
    await expect(alice.get_by_test_id("principal")).to_have_text(scene.principal["alice"])

    # Find the model by part of its name.
    await alice.get_by_label("Find a model").fill("fraud-" + scene.name.rsplit("-", 1)[1])
    await alice.get_by_role("button", name="Search").click()
    row = alice.get_by_role("row", name=re.compile(scene.name))
    await expect(row).to_contain_text("production")
    await expect(row).to_contain_text("v1")
    await screenshot(alice, f"{backend}-02-models")
    await row.get_by_role("link", name=scene.name).click()
    await expect(alice.get_by_role("heading", level=1)).to_have_text(scene.name)
    await expect(alice.locator("svg.timeline g.bar.production")).to_have_count(1)

    # A failing gate, and why.
    await alice.locator("#versions").get_by_role("link", name="v3").click()
    await expect(alice.get_by_test_id("gate-verdict")).to_contain_text("blocked")
    failed = alice.locator("#gate-results li.failed")
    await expect(failed.filter(has_text="metric:auc:min")).to_contain_text("auc = 0.8, needs >= 0.9")
    await screenshot(alice, f"{backend}-03-version-failing-gate")

    # Request the promotion of v2; the requester gets no approve button.
    await alice.goto(f"/ui/models/{seg(scene.name)}/versions/2")
    await alice.get_by_label("Why should this version go to production?").fill("auc 0.95 beats 0.91")
    await alice.get_by_role("button", name="Request production").click()
    request = alice.locator("article.request")
    await expect(request).to_contain_text("auc 0.95 beats 0.91")
    await expect(request.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(request).to_contain_text("You asked for this move")

    # A comment, swapped into the thread by htmx (the page is not reloaded).
    await alice.evaluate("window.__kept = 'same page'")
    await alice.get_by_label("Add a comment").fill("Shadow traffic looked fine for a week.")
    await alice.get_by_role("button", name="Comment", exact=True).click()
    await expect(alice.locator("#comments .comment")).to_contain_text("Shadow traffic looked fine")
    assert await alice.evaluate("window.__kept") == "same page"
    await screenshot(alice, f"{backend}-04-version-requested")
    await clean(alice)

    # A second releaser approves; the stage badge and the timeline change.
    bob = await new_page(server.url)
    await sign_in(bob, scene.tokens["bob"])
    await bob.get_by_role("link", name="Approvals").click()
    await expect(bob.get_by_role("row", name=re.compile(scene.name))).to_contain_text("production")
    await screenshot(bob, f"{backend}-05-approvals")
    await bob.get_by_role("row", name=re.compile(scene.name)).get_by_role("link", name=re.compile(r"^#")).click()
    await expect(bob.get_by_test_id("stage")).to_have_text("staging")
    await bob.get_by_label("Comment (optional)").fill("Approved after the shadow run.")
    await bob.get_by_role("button", name="Approve").click()
    await expect(bob.get_by_test_id("stage")).to_have_text("production")
    assert scene.stage(server, 2) == "production" and scene.stage(server, 1) == "archived"
    await bob.goto(f"/ui/models/{seg(scene.name)}")
    await expect(bob.get_by_test_id("stage-2")).to_have_text("production")
    await expect(bob.get_by_test_id("stage-1")).to_have_text("archived")
    await expect(bob.locator("svg.timeline g.bar.production")).to_have_count(2)
    await expect(bob.locator('svg.timeline g.bar.production[data-version="2"]')).to_have_count(1)
    await expect(bob.locator("#stays tbody tr").first).to_contain_text("v2")
    await screenshot(bob, f"{backend}-06-model-after-approval")

    # The lineage picture: datasets -> run -> version -> stage changes.
    await bob.goto(f"/ui/models/{seg(scene.name)}/versions/2#lineage")
    picture = bob.get_by_role("img", name=re.compile(r"Lineage of .* v2"))
    await expect(picture).to_be_visible()
    await expect(picture.locator("g.node.dataset")).to_contain_text("transactions")
    await expect(picture.locator("g.node.run")).to_contain_text("run train-2")
    await expect(picture.locator("g.node.stage")).to_have_count(2)
    await expect(bob.locator("#version-audit")).to_contain_text("staging → production")
    await screenshot(bob, f"{backend}-07-version-after-approval")
    await clean(bob)

    # Sign out: the session is gone, a page asks to sign in again.
    await bob.get_by_role("button", name="Sign out").click()
    await expect(bob).to_have_url(re.compile(r"/ui/login$"))
    await bob.goto(f"/ui/models/{seg(scene.name)}")
    await expect(bob).to_have_url(re.compile(r"/ui/login\?next="))


async def test_a_viewer_sees_the_pages_without_any_button(
        server: Server, scene: Scene, new_page: Callable[..., Awaitable[Page]]) -> None:
    vera = await new_page(server.url)
    await sign_in(vera, scene.tokens["vera"])
    await vera.goto(f"/ui/models/{seg(scene.name)}/versions/3")
    await expect(vera.get_by_test_id("gate-verdict")).to_be_visible()
    assert await vera.locator("main form").count() == 0
    await expect(vera.get_by_role("link", name="Webhooks")).to_have_count(0)


async def test_signing_in_and_acting_work_from_the_keyboard_alone(
        server: Server, scene: Scene, new_page: Callable[..., Awaitable[Page]]) -> None:
    page = await new_page(server.url)
    await page.goto("/ui/login")
    order = []
    for _ in range(3):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate("document.activeElement.className || document.activeElement.id"))
    assert order == ["skip", "brand", "token"]  # a skip link first, then the header, then the form
    await page.keyboard.type(scene.tokens["admin"])
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"/ui$"))
    assert await focus_ring_visible(page, "a.brand")
    assert await focus_ring_visible(page, "#q")
    assert await focus_ring_visible(page, "form[role=search] button")
    await page.goto(f"/ui/models/{seg(scene.name)}/versions/3")
    assert await focus_ring_visible(page, "#comment-body")


PAGES = ("/ui/login", "/ui", "/ui/models/{name}", "/ui/models/{name}/versions/3",
         "/ui/models/{name}/versions/2", "/ui/approvals", "/ui/audit", "/ui/webhooks")


@pytest.mark.parametrize("device", ["desktop", "phone"])
async def test_every_page_passes_axe_and_fits_the_screen(
        server: Server, scene: Scene, new_page: Callable[..., Awaitable[Page]], screenshot: Shot,
        device: str) -> None:
    page = await new_page(server.url, device=device)
    await page.goto("/ui/login")
    assert await axe_violations(page, impact=None) == []
    await sign_in(page, scene.tokens["admin"])
    backend = server.database_url.split(":")[0].split("+")[0]
    for path in PAGES[1:]:
        await page.goto(path.format(name=seg(scene.name)))
        assert await axe_violations(page, impact=None) == [], path
        width = await page.evaluate("document.documentElement.scrollWidth")
        viewport = await page.evaluate("window.innerWidth")
        assert width <= viewport, (path, width, viewport)  # wide tables scroll inside their box
        label = path.strip("/").replace("{name}", "model").replace("/", "-") or "ui"
        await screenshot(page, f"{backend}-{device}-{label}")
    await clean(page)
