"""The two web pages in a real browser, against the real API (uvicorn), a real stream worker,
broker and Redis: a person rates Star Wars and sees "Recommended for you" change live; the
operator page, open all along, sees the event counted. Screenshots go to docs/img/."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_site import Site, running_site
from playwright.sync_api import Page, expect
from stream_harness import (
    REPO_ROOT,
    Message,
    keyed,
    ml100k_events,
    produce,
    shared_model_dir,
)

from devstack import DevStack
from recsys_core.dataset import Dataset

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
IMAGES = REPO_ROOT / "docs" / "img"
#: how long the page may take to show what the stream did (broker, worker, Redis, SSE)
LIVE_MS = 30_000
#: ml-100k ratings produced while the operator page watches
TRAFFIC = 300


@pytest.fixture(scope="module")
def site(devstack: DevStack, ml100k: Dataset,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    model_dir = shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)
    with running_site(devstack, model_dir, tmp_path_factory.mktemp("browser-site")) as s:
        yield s


def open_page(browser: Any, url: str, errors: list[str]) -> Page:
    """A page in a fresh context (its own localStorage), JavaScript errors collected."""
    page: Page = browser.new_context(viewport=DESKTOP).new_page()
    page.set_default_timeout(15_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page


def card_ids(page: Page) -> list[str]:
    return page.locator("#recs-list .card").evaluate_all(
        "cards => cards.map(c => c.dataset.movieId)")


def applied_on_ops(ops: Page) -> int:
    value = ops.locator("#kpi-applied .k-value").get_attribute("data-value")
    return int(float(value)) if value else -1


def test_a_person_rates_star_wars_and_both_pages_follow_live(site: Site, browser: Any,
                                                            ml100k: Dataset) -> None:
    errors: list[str] = []
    # the operator page is open all along: it must count the rating without a reload
    ops = open_page(browser, f"{site.base_url}/ops", errors)
    expect(ops.locator("#scrape-status")).to_have_attribute("data-state", "live")
    expect(ops.locator("#targets-table tbody tr")).to_have_count(2)
    expect(ops.locator("#targets-table tbody")).not_to_contain_text("down")
    applied_before = applied_on_ops(ops)
    assert applied_before >= 0, "the ops page shows no events-applied count"

    page = open_page(browser, f"{site.base_url}/", errors)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    # a new user, remembered in localStorage
    user = f"web-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Your name or user id").fill(user)
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#who-name")).to_have_text(user)
    assert page.evaluate("localStorage.getItem('recsys.user')") == user
    expect(page.locator("#recs-list .card")).to_have_count(12)
    expect(page.locator("#fallback")).to_be_visible()
    expect(page.locator("#fallback")).to_contain_text("rate a few movies to personalise")
    expect(page.locator("#live")).to_have_attribute("data-live", "on")
    cold = card_ids(page)
    assert "50" in cold, "Star Wars is among the most popular movies of ml-100k"

    # instant search as one types, debounced
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if "/v1/movies/search" in r.url
            else None)
    page.get_by_role("searchbox", name="Search movies").press_sequentially("star wars", delay=40)
    first = page.locator("#search-results button").first
    expect(first).to_contain_text("Star Wars (1977)")
    expect(page.locator("#search-status")).to_contain_text("found")
    assert 1 <= len(searches) <= 3, f"not debounced: {len(searches)} searches for 9 keys"

    # the movie: title, year, genres, no Freebase ids shown as people, similar movies
    first.click()
    expect(page.locator("#movie-title")).to_have_text("Star Wars (1977)")
    expect(page).to_have_url(re.compile(r"#movie/50$"))
    expect(page.locator("#movie-meta")).to_contain_text("1977")
    expect(page.locator("#movie-meta")).to_contain_text("Sci-Fi")
    expect(page.locator("#similar-taste li")).to_have_count(6)
    expect(page.locator("#similar-content li")).to_have_count(6)
    expect(page.locator("#similar-taste")).to_contain_text("Return of the Jedi")
    assert not re.search(r"\bm\.0", page.locator("#movie").inner_text())

    # rate it 5 stars with the keyboard: the stars are a radio group
    page.locator("#star-1").focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#star-5")).to_be_checked()
    expect(page.locator("#star-text")).to_have_text("5 of 5 stars")
    page.keyboard.press("Enter")
    expect(page.locator("#movie-status")).to_contain_text("Applied by the stream",
                                                          timeout=LIVE_MS)

    # "Recommended for you" changed in place, personal now, with reasons
    expect(page.locator("#fallback")).to_be_hidden()
    expect(page.locator("#recs-updated")).to_contain_text("Updated live")
    expect(page.locator("#recs-list .badge").first).to_have_text("New")
    personal = card_ids(page)
    assert personal != cold and "50" not in personal, personal
    reasons = page.locator("#recs-list .why").all_inner_texts()
    assert len(reasons) == 12 and all(reasons), reasons
    assert any("Star Wars (1977)" in r for r in reasons), reasons
    expect(page.locator("#byw-title")).to_have_text("Because you watched Star Wars (1977)")
    expect(page.locator("#byw-list .card").first).to_be_visible()
    # the row says it scrolls and scrolls on a click
    back, on = (page.get_by_role("button", name=n, exact=True)
                for n in ("Scroll back", "Scroll on"))
    expect(back).to_be_disabled()
    expect(on).to_be_enabled()
    on.click()
    page.wait_for_function("() => document.getElementById('byw-list').scrollLeft > 100")
    expect(back).to_be_enabled()
    # every genre of a card is shown (no cut at three)
    shown = page.locator("#recs-list .card, #byw-list .card").evaluate_all(
        "cards => cards.map(c => c.querySelectorAll('.tag').length)")
    assert max(shown) > 3, shown
    expect(page.locator("#history-list")).to_contain_text("Star Wars (1977)")
    expect(page.locator("#history-list")).to_contain_text("5 ★")
    expect(page.locator("#movie-predicted")).to_contain_text("You rated it 5 ★")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "web.png"), full_page=True)

    # browse by genre: the chips filter the recommendations
    page.locator("#genres").get_by_role("button", name="Horror", exact=True).click()
    expect(page.locator("#genres [data-genre='Horror']")).to_have_attribute("aria-pressed",
                                                                            "true")
    expect(page.locator("#recs-list .card").first).to_be_visible()
    page.wait_for_function("() => [...document.querySelectorAll('#recs-list .card')]"
                           ".every(c => c.textContent.includes('Horror'))")
    page.locator("#genres").get_by_role("button", name="All genres").click()
    page.wait_for_function("() => ![...document.querySelectorAll('#recs-list .card')]"
                           ".every(c => c.textContent.includes('Horror'))")

    # the operator page counted the rating, live
    ops.wait_for_function(f"() => Number(document.querySelector('#kpi-applied .k-value')"
                          f".dataset.value) > {applied_before}", timeout=LIVE_MS)
    # then a burst of ml-100k ratings and two malformed messages straight to Kafka
    events = ml100k_events(ml100k, TRAFFIC, user_prefix=f"{user}-ml-")
    produce(site.stack.bootstrap, site.stack.topic("rating"),
            keyed(events) + [Message(b"bad", b"{not json")] * 2)
    ops.wait_for_function(f"() => Number(document.querySelector('#kpi-applied .k-value')"
                          f".dataset.value) >= {applied_before + 1 + TRAFFIC}",
                          timeout=LIVE_MS)
    expect(ops.locator("#dead-table tbody")).to_contain_text("malformed_json")
    expect(ops.locator("#kpi-dead .k-value")).not_to_have_text("0")
    expect(ops.locator("#l-events")).to_contain_text("rating applied")
    expect(ops.locator("#kpi-fresh .k-value")).not_to_have_text("–")
    expect(ops.locator("#l-lat")).to_contain_text(re.compile(r"p95 [\d.]+ ms"))
    expect(ops.locator("#l-req")).to_contain_text("2xx")
    expect(ops.locator("#l-lag")).to_contain_text("ratings.v1:0")
    expect(ops.locator("#models-table tbody")).to_contain_text("v1")
    expect(ops.locator("#fresh")).to_contain_text("API loaded its model")
    assert errors == [], errors
    ops.screenshot(path=str(IMAGES / "ops.png"), full_page=True)

    # at phone width nothing is wider than the screen (wide tables scroll inside their box)
    for p in (page, ops):
        p.set_viewport_size(PHONE)
        overflow = p.evaluate("document.documentElement.scrollWidth")
        assert overflow <= PHONE["width"], f"{p.url}: {overflow} px wide at phone width"
        p.context.close()


def test_pages_ask_for_the_api_key_and_send_it(site: Site, browser: Any,
                                                 tmp_path: Path) -> None:
    with site.another_api(tmp_path / "keyed-api.log", RECSYS_API_KEY="s3cret") as api:
        errors: list[str] = []
        ops = open_page(browser, f"{api.base_url}/ops", errors)
        expect(ops.locator("#error")).to_contain_text("An API key is needed")
        expect(ops.locator("#scrape-status")).to_have_attribute("data-state", "error")
        ops.get_by_role("button", name="Enter the API key").click()
        ops.get_by_label("API key", exact=True).fill("wrong")
        ops.get_by_role("button", name="Save key").click()
        expect(ops.locator("#error")).to_contain_text("That API key was refused")
        ops.get_by_role("button", name="Enter the API key").click()
        ops.get_by_label("API key", exact=True).fill("s3cret")
        ops.get_by_role("button", name="Save key").click()
        expect(ops.locator("#scrape-status")).to_have_attribute("data-state", "live")
        expect(ops.locator("#error")).to_be_hidden()

        # the people page reads without a key and asks for it on the first write
        page = open_page(browser, f"{api.base_url}/#movie/1", errors)
        page.get_by_label("Your name or user id").fill(f"key-{uuid.uuid4().hex[:6]}")
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#movie-title")).to_have_text("Toy Story (1995)")
        page.get_by_role("button", name="Mark as watched").click()
        expect(page.locator("#key-dialog")).to_be_visible()
        page.get_by_label("API key", exact=True).fill("s3cret")
        page.get_by_role("button", name="Save key").click()
        expect(page.locator("#movie-status")).to_contain_text("Applied by the stream",
                                                              timeout=LIVE_MS)
        # each page keeps its own key: the people page's is an events key, sent by it alone
        assert page.evaluate("localStorage.getItem('recsys.eventsKey')") == "s3cret"
        assert errors == [], errors
        for p in (page, ops):
            p.context.close()


def test_ops_rates_and_percentiles_match_hand_computed_values(site: Site, browser: Any) -> None:
    """The page's rate() and histogram_quantile() (serving/static/samples.js) on known input."""
    page = open_page(browser, f"{site.base_url}/ops", [])
    got = page.evaluate("""async () => {
        const m = await import("/static/samples.js");
        const s = (name, labels, value) => ({ name, labels, value });
        const old = m.index([
            s("c_total", { k: "a" }, 10), s("c_total", { k: "b" }, 50),
            s("h_bucket", { le: "0.1", route: "/x" }, 0),
            s("h_bucket", { le: "0.5", route: "/x" }, 0),
            s("h_bucket", { le: "+Inf", route: "/x" }, 0)]);
        const cur = m.index([
            s("c_total", { k: "a" }, 30), s("c_total", { k: "b" }, 4),
            s("c_total", { k: "c" }, 6),
            s("h_bucket", { le: "0.1", route: "/x" }, 10),
            s("h_bucket", { le: "0.5", route: "/x" }, 30),
            s("h_bucket", { le: "+Inf", route: "/x" }, 40),
            s("h_bucket", { le: "0.1", route: "/sse" }, 0),
            s("h_bucket", { le: "0.5", route: "/sse" }, 0),
            s("h_bucket", { le: "+Inf", route: "/sse" }, 100)]);
        const r = m.rates(cur, old, 2, "c_total", (l) => l.k);
        const q = m.quantiles(cur, old, "h_bucket", (l) => l.route !== "/sse",
                              [0.25, 0.5, 0.99]);
        const none = m.quantiles(old, old, "h_bucket", () => true, [0.5]);
        return { a: r.get("a"), b: r.get("b"), c: r.get("c"), q, none,
                 total: m.total(cur, "c_total") };
    }""")
    page.context.close()
    # a: +20 in 2 s; b went down (a restart): its value is the increase; c is new
    assert (got["a"], got["b"], got["c"]) == (10, 2, 3)
    assert got["total"] == 40
    # 40 requests: 10 under 0.1 s, 20 in (0.1, 0.5], 10 above; linear inside a bucket and
    # the largest finite bound above it, as Prometheus does; the /sse route is left out
    assert got["q"] == pytest.approx([0.1, 0.3, 0.5])
    assert got["none"] == [None]


def test_api_docs_work_with_the_network_blocked(site: Site, browser: Any) -> None:
    """/docs loads Swagger UI from the API itself: with every request to another host
    aborted, the operations are still listed."""
    errors: list[str] = []
    outside: list[str] = []
    context = browser.new_context(viewport=DESKTOP)
    api_host = re.sub(r"^https?://", "", site.base_url).split("/")[0]

    def only_the_api(route: Any) -> None:
        if re.sub(r"^https?://", "", route.request.url).split("/")[0] == api_host:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_api)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{site.base_url}/docs")
    expect(page.locator(".opblock-summary-path").filter(
        has_text="/v1/users/{user_id}/recommendations").first).to_be_visible()
    assert page.locator(".opblock").count() > 10
    assert outside == [] and errors == [], (outside, errors)
    context.close()


def test_the_page_switches_between_up_next_and_top_picks(site: Site, browser: Any) -> None:
    errors: list[str] = []
    page = open_page(browser, f"{site.base_url}/", errors)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/recommendations" in r.url else None)
    page.get_by_label("Your name or user id").fill(f"web-{uuid.uuid4().hex[:6]}")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#recs-list .card")).to_have_count(12)
    # the model's default surface answers first, and the page marks it
    up_next = page.get_by_role("button", name="Up next")
    picks = page.get_by_role("button", name="Top picks for you")
    expect(up_next).to_have_attribute("aria-pressed", "true")
    expect(picks).to_have_attribute("aria-pressed", "false")
    assert asked and "surface=" not in asked[-1]
    picks.click()
    expect(picks).to_have_attribute("aria-pressed", "true")
    expect(up_next).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#recs-list .card")).to_have_count(12)
    assert "surface=for_you" in asked[-1]
    assert not errors, errors
