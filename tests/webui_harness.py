"""What the web page's browser tests share: Debian's Chromium driven by Playwright (nothing
downloads a browser), crafted chat-completion streams, and a small HTTP server that streams one
of them slowly enough that the page reads it in many pieces, as it reads a real answer."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        if shutil.which(candidate):
            return candidate
    raise RuntimeError("no system Chromium: `apt-get install chromium` "
                       "(scripts/setup.sh --test installs it)")


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path())
        try:
            yield browser
        finally:
            browser.close()


class ConsoleLog:
    """Every console message and uncaught error of a page."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def _console(self, msg: ConsoleMessage) -> None:
        self.messages.append(f"{msg.type}: {msg.text}")
        if msg.type in ("error", "warning"):
            self.errors.append(f"{msg.type}: {msg.text}")


def chunk(delta: dict[str, Any], finish: str | None = None,
          timings: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-crafted", "object": "chat.completion.chunk",
                           "created": 0, "model": "crafted",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if timings is not None:
        out["timings"] = timings
    return out


def sse(chunks: Sequence[dict[str, Any]], done: bool = True) -> str:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return body + ("data: [DONE]\n\n" if done else "")


def content_chunks(pieces: Sequence[str], timings: dict[str, Any] | None = None,
                   ) -> list[dict[str, Any]]:
    out = [chunk({"role": "assistant", "content": None})]
    out += [chunk({"content": p}) for p in pieces]
    out.append(chunk({}, "stop", timings or {"prompt_n": 12, "predicted_n": len(pieces),
                                              "predicted_per_second": 123.4}))
    return out


class SlowSSEServer:
    """Serves one crafted SSE body to every POST, written event by event with a pause every
    `every` events, so the browser receives it in many reads."""

    def __init__(self, events: Sequence[dict[str, Any]], every: int = 25,
                 pause_s: float = 0.002) -> None:
        frames = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                for n, frame in enumerate(frames):
                    self.wfile.write(frame)
                    if n % outer.every == 0:
                        self.wfile.flush()
                        time.sleep(outer.pause_s)

            def log_message(self, *args: Any) -> None:
                pass

        self.every, self.pause_s = every, pause_s
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/chat/completions"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SlowSSEServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# Counts the text the page takes out of the document while an answer streams: an incremental
# render removes only the unfinished last line each frame; re-rendering the answer would remove
# everything drawn so far, every frame.
REMOVED_TEXT_PROBE = """
window.__removedChars = 0;
new MutationObserver((records) => {
  for (const r of records) for (const n of r.removedNodes) {
    window.__removedChars += (n.textContent || "").length;
  }
}).observe(document, {childList: true, subtree: true});
window.__longestTaskMs = 0;
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__longestTaskMs = Math.max(window.__longestTaskMs, e.duration);
    }
  }).observe({type: "longtask", buffered: true});
} catch (e) { /* no Long Tasks API: the figure stays 0 */ }
"""


def per_token_ms(stats: dict[str, Any], lo: int, hi: int) -> tuple[float, int]:
    """The page's time per token (reading, parsing and drawing) while the answer's length was in
    [lo, hi): (ms per token, tokens)."""
    reads = [r for r in stats["reads"] if lo <= r["length"] < hi]
    draws = [d for d in stats["draws"] if lo <= d["length"] < hi]
    tokens = sum(r["chunks"] for r in reads)
    ms = sum(r["ms"] for r in reads) + sum(d["ms"] for d in draws)
    return (ms / tokens if tokens else float("nan")), tokens
