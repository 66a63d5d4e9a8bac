// The page's calls to the server: relative URLs (the page lives at the API's prefix), the API
// key as a Bearer token, server errors as ApiError with llama-server's message, and the chat
// completion's Server-Sent Events read off the response body as they arrive.

export class ApiError extends Error {
  constructor(status, message, type) {
    super(message);
    this.status = status;  // HTTP status; 0: no answer; -1: an error event mid-stream
    this.type = type || "";
  }

  /** What the page shows: the server's own message, and where it came from. */
  describe() {
    if (this.status === 0) return `Could not reach the server: ${this.message}`;
    if (this.status === -1) return `The server stopped the answer: ${this.message}`;
    return `${this.message} (HTTP ${this.status}${this.type ? ", " + this.type : ""})`;
  }
}

function headers(apiKey, json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey) h["Authorization"] = "Bearer " + apiKey;
  return h;
}

function errorOf(body, status, statusText) {
  const err = body && typeof body === "object" ? body.error : null;
  if (err && typeof err === "object") {
    return new ApiError(status, String(err.message || statusText || "error"), err.type);
  }
  if (typeof err === "string") return new ApiError(status, err, "");
  return new ApiError(status, statusText || "the server answered with an error", "");
}

async function failure(res) {
  let body = null;
  const text = await res.text().catch(() => "");
  try { body = JSON.parse(text); } catch { body = null; }
  if (body === null && text) return new ApiError(res.status, text.slice(0, 500), "");
  return errorOf(body, res.status, res.statusText);
}

async function call(path, init) {
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, e.message || String(e), "");
  }
  if (!res.ok) throw await failure(res);
  return res;
}

/** GET a JSON route (e.g. "props"). */
export async function getJson(path, apiKey) {
  const res = await call(path, { headers: headers(apiKey, false) });
  return res.json();
}

/** Split an SSE text buffer into complete events' `data` payloads; returns [payloads, rest]. */
export function sseEvents(buffer) {
  const payloads = [];
  const text = buffer.replace(/\r\n?/g, "\n");
  let start = 0;
  let end;
  while ((end = text.indexOf("\n\n", start)) !== -1) {
    const data = [];
    for (const line of text.slice(start, end).split("\n")) {
      if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
    }
    if (data.length) payloads.push(data.join("\n"));  // ":" keep-alives carry none
    start = end + 2;
  }
  return [payloads, text.slice(start)];
}

/**
 * POST a streaming chat completion; onChunk(chunk) for each parsed chunk, onRead(ms, n) after
 * each read with the time spent handling its n chunks. Resolves when the stream ends; rejects
 * with ApiError, or with an AbortError when `signal` aborts (the connection closes, and the
 * server cancels the generation).
 */
export async function streamChat(body, apiKey, signal, onChunk, onRead) {
  const res = await call("v1/chat/completions", {
    method: "POST", headers: headers(apiKey, true), body: JSON.stringify(body), signal,
  });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const t0 = performance.now();
    let payloads;
    [payloads, buffer] = sseEvents(buffer + decoder.decode(value, { stream: true }));
    try {
      if (handle(payloads, onChunk)) return;
    } finally {
      if (onRead) onRead(performance.now() - t0, payloads.length);
    }
  }
}

// Hand each chunk on; true at the end marker; an error event throws.
function handle(payloads, onChunk) {
  for (const payload of payloads) {
    if (payload === "[DONE]") return true;
    const chunk = JSON.parse(payload);
    if (chunk.error) throw errorOf(chunk, -1, "");
    onChunk(chunk);
  }
  return false;
}
