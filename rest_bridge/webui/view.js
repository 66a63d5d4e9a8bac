// The thread's messages. An answer is drawn at most once a frame, whatever the token rate:
// deltas only collect text, and the frame draws what came (markdown.js draws it incrementally).

import { MarkdownView } from "./markdown.js";

function el(tag, parent, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  if (parent) parent.append(node);
  return node;
}

function keepAtBottom(scroller, draw) {
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  draw();
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}

/** A user's message, shown as the text it is. */
export function userMessage(thread, text) {
  const root = el("div", thread, "msg user");
  el("div", root, "role", "You");
  el("div", root, "content plain", text);
  thread.scrollTop = thread.scrollHeight;
}

/** A readable error in the thread. */
export function errorMessage(thread, text) {
  const node = el("div", thread, "msg error", text);
  node.setAttribute("role", "alert");
  thread.scrollTop = thread.scrollHeight;
  return node;
}

function tokensPerSecond(timings) {
  const rate = Number(timings.predicted_per_second);
  return Number.isFinite(rate) ? rate.toFixed(1) : "?";
}

/** What the timings say: tokens, tokens/s and the context the conversation now fills. */
export function describeTimings(timings, nCtx) {
  if (!timings) return "";
  const n = (key) => (Number.isFinite(Number(timings[key])) ? Number(timings[key]) : 0);
  const used = n("cache_n") + n("prompt_n") + n("predicted_n");
  const context = nCtx > 0 ? `${used} / ${nCtx} (${Math.round((100 * used) / nCtx)}%)` : `${used}`;
  return `${n("predicted_n")} tokens, ${tokensPerSecond(timings)} tokens/s · context ${context}`;
}

/** One assistant answer, streamed: content (Markdown), folded reasoning, tool calls. */
export class AnswerView {
  constructor(thread) {
    this.thread = thread;
    this.root = el("div", thread, "msg assistant");
    el("div", this.root, "role", "Assistant");
    this.reasoning = el("details", this.root, "reasoning");
    el("summary", this.reasoning, "", "Reasoning");
    this.reasoningText = el("div", this.reasoning, "reasoning-text");
    this.reasoning.hidden = true;
    this.content = el("div", this.root, "content");
    this.tools = el("div", this.root, "tools");
    this.meta = el("div", this.root, "meta");
    this.markdown = new MarkdownView(this.content);
    this.reasoningPending = "";
    this.calls = [];
    this.timings = null;
    this.finishReason = null;
    this.frame = 0;
    this.timer = 0;
    // How long the page spends on the answer, for anyone measuring it (the browser test):
    // reads: {ms, chunks, length} per network read; draws: {ms, length} per frame drawn.
    this.stats = { reads: [], draws: [] };
  }

  get text() {
    return this.markdown.text;
  }

  get isEmpty() {
    return !this.text && !this.reasoningText.textContent && !this.reasoningPending
      && this.calls.length === 0;
  }

  chunk(chunk) {
    if (chunk.timings) this.timings = chunk.timings;
    for (const choice of Array.isArray(chunk.choices) ? chunk.choices : []) {
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
      const d = choice.delta || {};
      if (typeof d.content === "string") this.markdown.append(d.content);
      if (typeof d.reasoning_content === "string") this.reasoningPending += d.reasoning_content;
      if (Array.isArray(d.tool_calls)) d.tool_calls.forEach((tc) => this._toolDelta(tc));
    }
    this._schedule();
  }

  read(ms, chunks) {
    this.stats.reads.push({ ms, chunks, length: this.text.length });
  }

  _toolDelta(tc) {
    const i = Number.isInteger(tc.index) ? tc.index : this.calls.length;
    if (!this.calls[i]) this.calls[i] = { name: "", args: "", shown: 0, node: null };
    const call = this.calls[i];
    const f = tc.function || {};
    if (typeof f.name === "string") call.name += f.name;
    if (typeof f.arguments === "string") call.args += f.arguments;
    call.dirty = true;
  }

  _schedule() {
    if (this.frame) return;
    // A frame, or a timer when frames are not drawn (a hidden tab), whichever comes first.
    this.frame = requestAnimationFrame(() => this.draw());
    this.timer = setTimeout(() => this.draw(), 250);
  }

  draw(final = false) {
    cancelAnimationFrame(this.frame);
    clearTimeout(this.timer);
    this.frame = this.timer = 0;
    const t0 = performance.now();
    keepAtBottom(this.thread, () => {
      this.markdown.render(final);
      if (this.reasoningPending) {
        this.reasoningText.append(this.reasoningPending);
        this.reasoningPending = "";
        this.reasoning.hidden = false;
      }
      this.calls.forEach((call) => this._drawCall(call, final));
    });
    this.stats.draws.push({ ms: performance.now() - t0, length: this.text.length });
  }

  _drawCall(call, final) {
    if (!call || !call.dirty) return;
    if (!call.node) {
      call.node = el("div", this.tools, "tool-call");
      call.nameNode = el("div", call.node, "tool-name");
      call.argsNode = el("pre", call.node, "tool-args");
    }
    call.nameNode.textContent = "Tool call: " + (call.name || "(unnamed)");
    // Arguments only grow while streaming: append what is new, as the answer's text is.
    if (call.args.length > call.shown) call.argsNode.append(call.args.slice(call.shown));
    call.shown = call.args.length;
    if (final) {
      try {
        call.argsNode.textContent = JSON.stringify(JSON.parse(call.args), null, 2);
      } catch { /* shown as sent */ }
    }
    call.dirty = false;
  }

  /** The answer ended: "done", "stopped" (by the user) or "error". */
  finish(outcome, nCtx) {
    this.calls.forEach((call) => { if (call) call.dirty = true; });
    this.draw(true);
    const parts = [];
    if (outcome === "stopped") parts.push("stopped");
    if (this.finishReason === "length") parts.push("stopped at the token limit");
    const timings = describeTimings(this.timings, nCtx);
    if (timings) parts.push(timings);
    this.meta.textContent = parts.join(" · ");
    this.root.dataset.state = outcome;
    return timings;
  }
}
