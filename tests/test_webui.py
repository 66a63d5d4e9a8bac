"""The web page at `/` in a real browser: Debian's Chromium driven by Playwright, against the real
service and REST bridge on the tiny model (or crafted streams fed through a route the test
controls, where the model's output must be something in particular)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect
from rest.rest_harness import BridgeAlone, RestServer, started, wait_http
from webui_harness import (
    REMOVED_TEXT_PROBE,
    ConsoleLog,
    SlowSSEServer,
    chromium,
    chunk,
    content_chunks,
    per_token_ms,
    sse,
)

pytestmark = pytest.mark.slow
# Waits, not timings: `expect` polls for 5 s by default, which a loaded 2-core machine can pass
# while a long answer is still streaming.
expect.set_options(timeout=120_000)
KEY = "webui-key-93d1"
CHAT = "**/v1/chat/completions"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    # One slot of 4,096 tokens: a Stop test's answer cannot end on its own for seconds.
    s = started(RestServer(tiny_bpe_path, ctx=4096, parallel=1))
    yield s
    s.stop()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()


def _open(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("#model")).not_to_have_text("…")


def _send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def _answer_state(page: Page, state: str) -> None:
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", state)


def _load(server: RestServer) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(server.url + "/load", timeout=10).json()
    return result


def test_page_loads_with_no_console_errors(page: Page, server: RestServer) -> None:
    log = ConsoleLog(page)
    response = page.goto(server.url + "/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("#model")).to_have_text(Path(server_model(server)).name)
    page.wait_for_load_state("networkidle")
    assert log.errors == [], log.errors
    # Every file is served with its ETag; a reload of an unchanged one is a 304.
    app_js = httpx.get(server.url + "/app.js")
    assert app_js.headers["content-type"].startswith("text/javascript")
    again = httpx.get(server.url + "/app.js", headers={"If-None-Match": app_js.headers["etag"]})
    assert again.status_code == 304


def server_model(server: RestServer) -> str:
    props: dict[str, Any] = httpx.get(server.url + "/props", timeout=10).json()
    return str(props["model_path"])


def test_a_message_streams_an_answer_with_saved_settings(page: Page, server: RestServer) -> None:
    _open(page, server.url)
    page.click("#open-settings")
    page.fill("textarea[name=system]", "You are terse.")
    page.fill("input[name=max_tokens]", "abc")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings-error")).to_have_text("max_tokens must be a number")
    page.fill("input[name=max_tokens]", "48")
    page.fill("input[name=temperature]", "0.5")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings")).not_to_be_visible()
    page.reload()  # the settings live in localStorage
    expect(page.locator("#model")).not_to_have_text("…")
    page.route(CHAT, _ignoring_eos)

    with page.expect_request(CHAT) as sent:
        _send(page, "Hello, model")
    body = json.loads(sent.value.post_data or "{}")
    assert body["stream"] is True and body["max_tokens"] == 48 and body["temperature"] == 0.5
    assert body["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Hello, model"}]
    _answer_state(page, "done")
    answer = page.locator(".msg.assistant .content").last
    assert answer.inner_text().strip()
    stats = page.evaluate("window.llamaWebui.answer.stats")
    # The 48 tokens came as SSE chunks, one a token but where a character spans tokens (the
    # Stop test sees the text drawn while it streams).
    assert sum(r["chunks"] for r in stats["reads"]) > 10
    meta = page.locator(".msg.assistant .meta").last.inner_text()
    assert "tokens/s" in meta and "context" in meta and " / 4096 " in meta, meta
    assert "tokens/s" in page.inner_text("#stats")


def _slot_busy(server: RestServer) -> bool:
    load = _load(server)
    return bool(load["n_processing"]) or any(s.get("busy") for s in load["slots"])


def _ignoring_eos(route: Route) -> None:
    # The random model could end on EOS at once; these answers must have text, or last.
    body = json.loads(route.request.post_data or "{}")
    route.continue_(post_data=json.dumps({**body, "ignore_eos": True}))


def test_stop_ends_the_stream_and_frees_the_slot(page: Page, server: RestServer) -> None:
    _open(page, server.url)
    page.route(CHAT, _ignoring_eos)
    _send(page, "Tell me everything")
    expect(page.locator(".msg.assistant .content").last).not_to_be_empty()
    assert _slot_busy(server)
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    _answer_state(page, "stopped")
    expect(page.locator("#send")).to_be_visible()
    assert page.evaluate("window.llamaWebui.answer.finishReason") is None  # not its own end
    assert "stopped" in page.locator(".msg.assistant .meta").last.inner_text()
    page.wait_for_function("""async (url) => {
        const load = await (await fetch(url)).json();
        return load.n_processing === 0 && load.slots.every((s) => !s.busy);
    }""", arg=server.url + "/load", polling=200)
    assert not _slot_busy(server)
    page.unroute(CHAT)
    # The conversation goes on, the stopped answer part of it, and the slot serves again.
    page.click("#open-settings")
    page.fill("input[name=max_tokens]", "8")
    page.click("#settings-form button[type=submit]")
    with page.expect_request(CHAT) as sent:
        _send(page, "Short, please")
    messages = json.loads(sent.value.post_data or "{}")["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"]
    _answer_state(page, "done")


@pytest.fixture(scope="module")
def keyed_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    s = started(RestServer(tiny_bpe_path, "--api-key", KEY, "-n", "24", ctx=1024,
                            parallel=1))
    yield s
    s.stop()


def test_api_key_is_asked_for_and_a_wrong_one_shows_an_error(
        page: Page, keyed_server: RestServer) -> None:
    log = ConsoleLog(page)
    _open(page, keyed_server.url)  # the page and /props need no key
    page.route(CHAT, _ignoring_eos)
    _send(page, "Hi")
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator(".msg.error").last).to_contain_text("Invalid API Key (HTTP 401")
    page.fill("#key-input", "not-the-key")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-error")).to_contain_text("The key was refused: Invalid API Key")
    expect(page.locator(".msg.error")).to_have_count(2)
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")
    _answer_state(page, "done")
    assert page.locator(".msg.assistant .content").last.inner_text().strip()
    assert page.evaluate("localStorage.getItem('llama-grpc-webui.api-key')") == KEY
    assert not [e for e in log.errors if "pageerror" in e], log.errors


def test_model_output_is_shown_as_text(page: Page, server: RestServer) -> None:
    pieces = ["Hello <script>window.__pwned = 1</script> and ",
              "<img src=x onerror=\"window.__pwned = 2\"> ",
              "[click](javascript:window.__pwned=3) ", "[mail](data:text/html,<b>x</b>) ",
              "<a href=\"javascript:window.__pwned=4\">a</a>\n\n",
              "**bold** and `<b>code</b>` and [safe](https://example.com/a?b=1)\n",
              "- item <i>one</i>\n- [x](https://example.com/\" onmouseover=\"x)\n\n",
              "```html\n<script>window.__pwned = 5</script>\n```\n"]
    events = [chunk({"role": "assistant", "content": None}),
              chunk({"reasoning_content": "thinking <script>window.__pwned = 6</script>"})]
    events += [chunk({"content": p}) for p in pieces]
    events.append(chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {
        "name": "<img src=x onerror=window.__pwned=7>", "arguments": "{\"q\": \"<b>"}}]}))
    events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "x</b>\"}"}}]}))
    events.append(chunk({}, "tool_calls", {"predicted_n": 9, "predicted_per_second": 5.0}))
    _open(page, server.url)
    page.route(CHAT, lambda r: r.fulfill(status=200, content_type="text/event-stream",
                                         body=sse(events)))
    _send(page, "Show me tricks")
    _answer_state(page, "done")
    msg = page.locator(".msg.assistant").last
    text = msg.inner_text()
    assert "<script>window.__pwned = 1</script>" in text
    assert "[click](javascript:window.__pwned=3)" in text
    assert "<a href=\"javascript:window.__pwned=4\">a</a>" in text
    assert page.evaluate("window.__pwned") is None
    assert msg.locator("script, img, i, b, iframe").count() == 0
    hrefs = msg.locator("a").evaluate_all("(as) => as.map((a) => a.getAttribute('href'))")
    # The attribute trick is no link; its URL, cut at the quote, is (as a bare URL would be).
    assert hrefs == ["https://example.com/a?b=1", "https://example.com/"], hrefs
    assert msg.locator("[onmouseover], [onerror]").count() == 0
    assert msg.locator("strong").inner_text() == "bold"
    assert msg.locator("p code").inner_text() == "<b>code</b>"
    assert msg.locator("li").count() == 2
    assert msg.locator("pre code").inner_text() == "<script>window.__pwned = 5</script>\n"
    reasoning = msg.locator("details.reasoning")
    assert reasoning.get_attribute("open") is None  # folded
    assert "<script>" in (reasoning.locator(".reasoning-text").text_content() or "")
    tool = msg.locator(".tool-name").inner_text()
    assert tool == "Tool call: <img src=x onerror=window.__pwned=7>"
    assert json.loads(msg.locator(".tool-args").inner_text()) == {"q": "<b>x</b>"}

    # A server error's message, HTML and all, is shown as text too.
    page.unroute(CHAT)
    refusal = {"error": {"code": 400, "message": "bad <b>request</b>",
                         "type": "invalid_request_error"}}
    page.route(CHAT, lambda r: r.fulfill(status=400, content_type="application/json",
                                         body=json.dumps(refusal)))
    _send(page, "again")
    error = page.locator(".msg.error").last
    expect(error).to_have_text("bad <b>request</b> (HTTP 400, invalid_request_error)")
    assert page.evaluate("window.__pwned") is None


def test_errors_mid_stream_and_network_failures_are_readable(page: Page,
                                                              server: RestServer) -> None:
    _open(page, server.url)
    body = sse([chunk({"role": "assistant", "content": None}), chunk({"content": "partial"})],
               done=False)
    body += ":\n\n" + 'data: {"error": {"code": 500, "message": "boom <i>x</i>", ' \
        '"type": "server_error"}}\n\n'
    page.route(CHAT, lambda r: r.fulfill(status=200, content_type="text/event-stream",
                                         body=body))
    _send(page, "one")
    _answer_state(page, "error")
    assert page.locator(".msg.assistant .content").last.inner_text() == "partial"
    expect(page.locator(".msg.error").last).to_have_text(
        "The server stopped the answer: boom <i>x</i>")
    page.unroute(CHAT)
    page.route(CHAT, lambda r: r.abort())
    _send(page, "two")
    expect(page.locator(".msg.error").last).to_contain_text("Could not reach the server")
    expect(page.locator("#send")).to_be_visible()


MARKDOWN_DOCS = [
    "# Title\n\nSome *emphasis*, **strong**, ~~gone~~, `co*de*` and snake_case_name.\n",
    "1. one\n2. two\n   more of two\n\n5. five\n- a\n- b\n\n> quoted\n> twice\n\n---\nend",
    "```js\nconst a = `x`;\n\n// the blank line stays in the code\n```\nafter\n"
    "~~~\nraw ``` inside\n~~~",
    "See https://example.com/a_b, [doc](https://example.com/x) and [bad](javascript:alert(1)).",
    "line one\nline two\n\n\n\nafter gap\n```\nunterminated <b>code",
]


def test_incremental_rendering_matches_one_pass(page: Page, server: RestServer) -> None:
    """markdown.js fed in pieces of any size, drawn after each, ends as it renders in one pass;
    a line longer than 2,048 characters is committed in parts and keeps its text."""
    _open(page, server.url)
    mismatches = page.evaluate("""async (docs) => {
        const {MarkdownView} = await import("./markdown.js");
        const draw = (text, size) => {
            const view = new MarkdownView(document.createElement("div"));
            for (let i = 0; size && i < text.length; i += size) {
                view.append(text.slice(i, i + size));
                view.render();
            }
            if (!size) view.append(text);
            view.render(true);
            return view.root;
        };
        const out = [];
        for (const doc of docs) {
            const whole = draw(doc, 0).innerHTML;
            for (const size of [1, 2, 3, 7, 50]) {
                const pieces = draw(doc, size).innerHTML;
                if (pieces !== whole) out.push({doc, size, whole, pieces});
            }
        }
        const long = Array.from({length: 1500}, (_, i) => "word" + i).join(" ");
        const root = draw(long, 10);
        if (root.textContent !== long || root.children.length !== 1) out.push({long: true});
        return out;
    }""", MARKDOWN_DOCS)
    assert mismatches == []


def _long_answer(target: int = 100_000) -> list[str]:
    """About `target` characters of Markdown (paragraphs, lists, code), cut in 4-character
    tokens."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
             "kappa", "lambda", "mu"]
    lines: list[str] = []
    n = 0
    while sum(len(line) + 1 for line in lines) < target:
        n += 1
        if n % 40 == 0:
            lines += ["```python", *[f"x{i} = {i} * {n}  # <tag>" for i in range(8)], "```"]
        elif n % 30 == 0:
            lines += [f"- item {i} with **bold** and `code`" for i in range(4)] + [""]
        else:
            lines.append(" ".join(words[(n + i) % len(words)] for i in range(14)))
            if n % 5 == 0:
                lines.append("")
    text = "\n".join(lines)[:target]
    return [text[i:i + 4] for i in range(0, len(text), 4)]


def test_a_100000_character_answer_renders_incrementally(page: Page, server: RestServer) -> None:
    pieces = _long_answer()
    total = sum(map(len, pieces))
    page.add_init_script(REMOVED_TEXT_PROBE)
    _open(page, server.url)
    with SlowSSEServer(content_chunks(pieces)) as slow:
        page.route(CHAT, lambda r: r.continue_(url=slow.url))
        _send(page, "Write at length")
        content = page.locator(".msg.assistant .content").last
        expect(content.locator("p").first).to_be_visible()
        first_block = content.locator("p").first.element_handle()
        _answer_state(page, "done")
    stats: dict[str, Any] = page.evaluate("window.llamaWebui.answer.stats")
    removed = page.evaluate("window.__removedChars")
    assert page.evaluate("window.llamaWebui.answer.text.length") == total
    assert len(content.inner_text()) > total * 0.9
    # Appended, not rebuilt: the block drawn first is the same node at the end, and over many
    # frames the page took out less text than the answer holds (re-rendering the answer on
    # each frame would take out all of it drawn so far, every frame).
    assert first_block.evaluate("(p) => p.isConnected")
    draws = len(stats["draws"])
    assert draws >= 20, draws
    assert removed < total, (removed, total)
    # What a page re-rendering the whole answer would pay on each frame at the end.
    full_ms = page.evaluate("""async () => {
        const {MarkdownView} = await import("./markdown.js");
        const view = new MarkdownView(document.createElement("div"));
        view.append(window.llamaWebui.answer.text);
        const t0 = performance.now();
        view.render(true);
        return performance.now() - t0;
    }""")
    start_ms, start_n = per_token_ms(stats, 0, total // 10)
    end_ms, end_n = per_token_ms(stats, total - total // 10, total + 1)
    print(f"\n[webui] {total} characters, {len(pieces)} tokens, {draws} frames drawn, "
          f"{len(stats['reads'])} reads; page time per token: first 10% {start_ms * 1000:.1f} us "
          f"({start_n} tokens), last 10% {end_ms * 1000:.1f} us ({end_n} tokens); "
          f"text removed while streaming {removed} chars; longest task over 50 ms: "
          f"{page.evaluate('window.__longestTaskMs') or 'none'}; one full render of the answer "
          f"{full_ms:.1f} ms")
    assert start_n > 0 and end_n > 0


def test_no_webui_answers_404(tiny_bpe_path: Path) -> None:
    s = started(RestServer(tiny_bpe_path, "--no-webui", ctx=512, parallel=1))
    try:
        for path in ("/", "/index.html", "/app.js"):
            r = httpx.get(s.url + path)
            assert r.status_code == 404, path
            assert r.json()["error"]["type"] == "not_found_error"
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        s.stop()


def test_path_serves_that_directory(tiny_bpe_path: Path, tmp_path: Path,
                                    browser: Browser) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>mine</title><p id=x>my page")
    (tmp_path / "notes.txt").write_text("static notes")
    s = started(RestServer(tiny_bpe_path, "--path", str(tmp_path), ctx=512, parallel=1))
    try:
        page = browser.new_page()
        page.goto(s.url + "/")
        assert page.inner_text("#x") == "my page"
        page.close()
        assert httpx.get(s.url + "/notes.txt").text == "static notes"
        assert httpx.get(s.url + "/app.js").status_code == 404  # not the built-in page
        assert httpx.get(s.url + "/health").status_code == 200  # the API keeps its paths
        assert httpx.post(s.url + "/nowhere").status_code == 404
    finally:
        s.stop()


def test_path_files_need_the_api_key_as_in_llama_server(server: RestServer,
                                                        tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("keyed")
    bridge = BridgeAlone(server.grpc_target, "--path", str(tmp_path), "--api-key", KEY)
    try:
        wait_http(bridge, bridge.url + "/health", {200}, 60)
        assert httpx.get(bridge.url + "/").status_code == 401
        r = httpx.get(bridge.url + "/", headers={"Authorization": f"Bearer {KEY}"})
        assert r.text == "keyed"
    finally:
        bridge.stop()


def test_the_page_follows_the_api_prefix(server: RestServer, page: Page) -> None:
    bridge = BridgeAlone(server.grpc_target, "--api-prefix", "/llama")
    try:
        wait_http(bridge, bridge.url + "/llama/health", {200}, 60)
        assert httpx.get(bridge.url + "/").status_code == 404
        with page.expect_request("**/llama/props"):
            _open(page, bridge.url + "/llama")
        expect(page.locator("#model")).to_have_text(Path(server_model(server)).name)
    finally:
        bridge.stop()


def test_path_must_be_a_directory(server: RestServer, tmp_path: Path) -> None:
    bridge = BridgeAlone(server.grpc_target, "--path", str(tmp_path / "missing"))
    assert bridge.proc.wait(60) == 2
    assert "--path: not a directory" in bridge.output()


def test_screenshot(page: Page, server: RestServer, tmp_path: Path) -> None:
    """The picture in docs/webui.png: a crafted answer (the tiny model writes gibberish) through
    the real page. LLAMA_GRPC_WEBUI_SCREENSHOT=docs/webui.png writes it there."""
    reply = ("Here is a function that reverses a string:\n\n```python\ndef reverse(s: str) -> "
             "str:\n    return s[::-1]\n```\n\nIt uses **slicing** with a step of `-1`:\n\n"
             "- it works on any sequence\n- it makes a copy\n\nSee the "
             "[Python docs](https://docs.python.org/3/library/stdtypes.html).")
    events = [chunk({"role": "assistant", "content": None}),
              chunk({"reasoning_content": "The user wants a string reversed; slicing is "
                                          "the idiomatic way."})]
    events += [chunk({"content": reply[i:i + 6]}) for i in range(0, len(reply), 6)]
    events.append(chunk({}, "stop", {"cache_n": 0, "prompt_n": 41, "predicted_n": 74,
                                     "predicted_per_second": 48.2}))
    page.set_viewport_size({"width": 960, "height": 560})
    _open(page, server.url)
    page.route(CHAT, lambda r: r.fulfill(status=200, content_type="text/event-stream",
                                         body=sse(events)))
    _send(page, "How do I reverse a string in Python?")
    _answer_state(page, "done")
    out = Path(os.environ.get("LLAMA_GRPC_WEBUI_SCREENSHOT") or tmp_path / "webui.png")
    page.screenshot(path=str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
