// A small Markdown renderer for model output: safe, and incremental while an answer streams.
//
// Safety: nothing here parses HTML. Model text only ever reaches the page as Text nodes (the
// DOM escapes them); the only elements are the ones created below, and the only attribute taken
// from model text is a link's href, which must be an http(s) URL. So `<script>`, raw HTML and
// `[x](javascript:...)` in an answer are shown as the characters they are.
//
// Incremental: an answer is rendered line by line. A complete line is rendered once and
// appended to the current block (paragraph, list, quote, code); only the unfinished last line
// is redrawn on each frame. A 100,000-character answer then costs the same per token at its end
// as at its start, instead of re-rendering everything it has so far on every token.
//
// Supported: fenced code blocks (``` or ~~~), headings, lists (one level), block quotes,
// horizontal rules, `code`, **strong**, *emphasis*, ~~strike~~, [links](https://...) and bare
// http(s) URLs. Inline markup does not span lines; each newline is a line break.

const SAFE_URL = /^https?:\/\/[^\s<>"'`\\]+$/i;
const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])( *\1){2,}\s*$/;
const LIST_ITEM = /^(\s*)([-*+]|(\d{1,9})[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const LINK = /\[([^\]\n]{1,1000})\]\(([^()\s]{1,2000})\)/y;
const BARE_URL = /https?:\/\/[^\s<>"'`\\]+/y;
const URL_TRAILER = /[.,;:!?)\]}'"]+$/;
// A partial line longer than this is committed up to a space, so one endless line stays cheap.
const LONG_LINE = 2048;

/** The URL itself if it is a safe link target (http or https), else null. */
export function safeHref(url) {
  return SAFE_URL.test(url) ? url : null;
}

function el(tag, parent) {
  const node = document.createElement(tag);
  if (parent) parent.append(node);
  return node;
}

function link(href, parent) {
  const a = el("a", parent);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  return a;
}

const WORD = /[\p{L}\p{N}]/u;

// The end of the span that `delim` opens at `from`, or -1: the next `delim` preceded by a
// non-space (for a single `*`/`_`, not one half of a double; for `_`, not inside a word).
function closing(text, delim, from) {
  let j = text.indexOf(delim, from);
  while (j !== -1) {
    const doubled = delim.length === 1 && text[j + 1] === delim;
    const inWord = delim[0] === "_" && WORD.test(text[j + delim.length] || "");
    if (!doubled && !inWord && !/\s/.test(text[j - 1])) return j;
    j = text.indexOf(delim, j + (doubled ? 2 : 1));
  }
  return -1;
}

const EMPHASIS = { "**": "strong", "__": "strong", "~~": "del", "*": "em", "_": "em" };

function emphasisAt(text, i) {
  const two = text.slice(i, i + 2);
  const delim = EMPHASIS[two] ? two : EMPHASIS[text[i]] ? text[i] : null;
  if (!delim || delim === "~") return null;
  const after = text[i + delim.length];
  if (after === undefined || /\s/.test(after)) return null;
  if (delim[0] === "_" && i > 0 && WORD.test(text[i - 1])) return null;  // snake_case
  const end = closing(text, delim, i + delim.length);
  if (end === -1) return null;
  return { tag: EMPHASIS[delim], inner: text.slice(i + delim.length, end), next: end + delim.length };
}

function codeAt(text, i) {
  let n = 0;
  while (text[i + n] === "`") n++;
  const run = "`".repeat(n);
  let j = text.indexOf(run, i + n);
  while (j !== -1 && text[j + n] === "`") j = text.indexOf(run, j + n + 1);
  if (j === -1) return { n };
  let inner = text.slice(i + n, j);
  if (inner.length > 2 && inner[0] === " " && inner.at(-1) === " ") inner = inner.slice(1, -1);
  return { n, inner, next: j + n };
}

/** Append `text` to `parent` as inline Markdown: Text nodes plus the few elements above. */
export function renderInline(text, parent, links = true) {
  let plain = 0;
  let i = 0;
  const flush = (upTo) => {
    if (upTo > plain) parent.append(document.createTextNode(text.slice(plain, upTo)));
  };
  while (i < text.length) {
    const c = text[i];
    let span = null;
    if (c === "`") {
      const code = codeAt(text, i);
      if (code.inner === undefined) { i += code.n; continue; }
      flush(i);
      el("code", parent).textContent = code.inner;
      i = plain = code.next;
      continue;
    }
    if (c === "*" || c === "_" || c === "~") span = emphasisAt(text, i);
    if (span) {
      flush(i);
      renderInline(span.inner, el(span.tag, parent), links);
      i = plain = span.next;
      continue;
    }
    if (c === "[" && links) {
      LINK.lastIndex = i;
      const m = LINK.exec(text);
      if (m) {
        const href = safeHref(m[2]);
        if (href) {
          flush(i);
          renderInline(m[1], link(href, parent), false);
          plain = LINK.lastIndex;
        }
        i = LINK.lastIndex;  // an unsafe target stays in the text, as typed
        continue;
      }
    }
    if (c === "h" && links && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      BARE_URL.lastIndex = i;
      const m = BARE_URL.exec(text);
      if (m) {
        const url = m[0].replace(URL_TRAILER, "");
        if (url.length > "https://".length) {
          flush(i);
          link(url, parent).textContent = url;
          i = plain = i + url.length;
          continue;
        }
      }
    }
    i++;
  }
  flush(text.length);
}

/**
 * One streamed answer's Markdown in `root`. `append(text)` takes the text as it arrives;
 * `render()` draws what arrived since the last call (call it once a frame, not per token);
 * `render(true)` at the end draws the unfinished last line as final.
 */
export class MarkdownView {
  constructor(root) {
    this.root = root;
    this.text = "";
    this.pos = 0;         // text before this is drawn for good
    this.block = null;    // the open block: {kind, el, target, fence?}
    this.midLine = false; // a long line's start is drawn; the rest continues it
    this.pending = null;  // the unfinished last line's node, redrawn on each render
  }

  append(text) {
    this.text += text;
  }

  render(final = false) {
    if (this.pending) this.pending.remove();
    this.pending = null;
    let nl;
    while ((nl = this.text.indexOf("\n", this.pos)) !== -1) {
      this._line(this.text.slice(this.pos, nl));
      this.pos = nl + 1;
    }
    let rest = this.text.slice(this.pos);
    if (final) {
      if (rest) this._line(rest);
      this.pos = this.text.length;
      return;
    }
    if (rest.length > LONG_LINE) {
      const code = this.block && this.block.kind === "code";
      const cut = code ? rest.length : rest.lastIndexOf(" ") + 1;
      if (cut > 0) {
        this._partial(rest.slice(0, cut));
        this.pos += cut;
        rest = rest.slice(cut);
      }
    }
    if (rest) this._showPending(rest);
  }

  _partial(text) {
    if (this.midLine) this._continue(text);
    else if (this.block && this.block.kind === "code") this.block.target.append(text);
    else this._textLine(text);
    this.midLine = true;
  }

  _continue(text) {
    if (this.block && this.block.kind === "code") this.block.target.append(text);
    else if (this.block) renderInline(text, this.block.target);
    else this._textLine(text);
  }

  _close() {
    this.block = null;
  }

  _line(line) {
    const block = this.block;
    if (this.midLine) {
      this.midLine = false;
      this._continue(block && block.kind === "code" ? line + "\n" : line);
      return;
    }
    if (block && block.kind === "code") {
      const m = FENCE.exec(line);
      if (m && m[1][0] === block.fence[0] && m[1].length >= block.fence.length && !m[2]) {
        this._close();
      } else {
        block.target.append(line + "\n");
      }
      return;
    }
    if (!line.trim()) return this._close();
    let m;
    if ((m = FENCE.exec(line))) return this._openCode(m[1], m[2]);
    if ((m = HEADING.exec(line))) {
      this._close();
      renderInline(m[2], el("h" + Math.min(m[1].length + 2, 6), this.root));
      return;
    }
    if (RULE.test(line)) {
      this._close();
      el("hr", this.root);
      return;
    }
    if ((m = LIST_ITEM.exec(line))) return this._listItem(m[3], m[4]);
    if ((m = QUOTE.exec(line))) return this._quoteLine(m[1]);
    this._textLine(line);
  }

  _openCode(fence, lang) {
    this._close();
    const pre = el("pre", this.root);
    const code = el("code", pre);
    if (lang) code.dataset.lang = lang;
    this.block = { kind: "code", el: pre, target: code, fence };
  }

  _listItem(number, content) {
    const kind = number === undefined ? "ul" : "ol";
    if (!this.block || this.block.kind !== kind) {
      this._close();
      const list = el(kind, this.root);
      if (kind === "ol" && Number(number) !== 1) list.start = Number(number);
      this.block = { kind, el: list, target: null };
    }
    const item = el("li", this.block.el);
    renderInline(content, item);
    this.block.target = item;
  }

  _quoteLine(content) {
    if (this.block && this.block.kind === "quote") {
      el("br", this.block.target);
    } else {
      this._close();
      const quote = el("blockquote", this.root);
      this.block = { kind: "quote", el: quote, target: el("p", quote) };
    }
    renderInline(content, this.block.target);
  }

  _textLine(line) {
    if (this.block && this.block.kind !== "code") {
      el("br", this.block.target);  // a paragraph's next line, or a list item's
    } else {
      this._close();
      const p = el("p", this.root);
      this.block = { kind: "p", el: p, target: p };
    }
    renderInline(line.trimStart(), this.block.target);  // indentation means nothing here
  }

  _showPending(rest) {
    const block = this.block;
    if (block && block.kind === "code") {
      this.pending = document.createTextNode(rest);
      block.target.append(this.pending);
      return;
    }
    const span = document.createElement("span");
    span.className = "pending";
    if (block && !this.midLine) el("br", span);
    renderInline(rest, span);
    if (block) block.target.append(span);
    else el("p", this.root).append(span);
    // A pending paragraph of its own is removed with its <p>.
    this.pending = block ? span : span.parentNode;
  }
}
