// The chat page: a conversation through /v1/chat/completions, streamed; Stop aborts the request
// (closing the connection, which makes the server cancel the generation and free its slot).

import { ApiError, getJson, streamChat } from "./api.js";
import {
  SAMPLING, loadApiKey, loadSettings, parseSetting, samplingFields, saveApiKey, saveSettings,
} from "./settings.js";
import { AnswerView, errorMessage, userMessage } from "./view.js";

const $ = (id) => document.getElementById(id);
const thread = $("thread");

const state = {
  messages: [],  // the conversation as sent: {role, content}
  settings: loadSettings(),
  apiKey: loadApiKey(),
  nCtx: 0,
  controller: null,  // the running answer's AbortController
  unanswered: null,  // a message whose request failed with no answer: resent with a new key
};

// For whoever measures the page (the browser test): the last answer's view and its stats.
window.llamaWebui = { answer: null };

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

function requestMessages() {
  const system = (state.settings.system || "").trim();
  return system ? [{ role: "system", content: system }, ...state.messages] : [...state.messages];
}

async function answer() {
  const view = new AnswerView(thread);
  window.llamaWebui.answer = view;
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const body = { messages: requestMessages(), stream: true, ...samplingFields(state.settings) };
  let outcome = "done";
  let failure = null;
  try {
    await streamChat(body, state.apiKey, controller.signal,
      (chunk) => view.chunk(chunk), (ms, n) => view.read(ms, n));
  } catch (e) {
    if (e.name === "AbortError") {
      outcome = "stopped";
    } else {
      outcome = "error";
      failure = e instanceof ApiError ? e : new ApiError(0, String(e.message || e), "");
    }
  }
  state.controller = null;
  const timings = view.finish(outcome, state.nCtx);
  if (timings) $("stats").textContent = timings;
  if (!view.isEmpty) {
    state.messages.push({ role: "assistant", content: view.text });
  } else if (outcome !== "done") {
    view.root.remove();
    // Out of the conversation, so the next message does not follow it unanswered.
    state.unanswered = state.messages.pop();
  }
  setBusy(false);
  if (failure) {
    errorMessage(thread, failure.describe());
    if (failure.status === 401) askForKey(failure);
  }
}

function send(text) {
  if (state.controller || !text.trim()) return;
  state.unanswered = null;
  state.messages.push({ role: "user", content: text });
  userMessage(thread, text);
  answer();
}

function askForKey(failure) {
  const error = $("key-error");
  error.hidden = !state.apiKey;
  error.textContent = state.apiKey ? `The key was refused: ${failure.message}` : "";
  $("key-input").value = "";
  $("key-dialog").showModal();
}

function onKey(event) {
  event.preventDefault();
  state.apiKey = $("key-input").value.trim();
  saveApiKey(state.apiKey);
  $("key-dialog").close();
  if (!state.nCtx) loadProps();  // a server whose /props wants the key too
  if (state.unanswered && !state.controller) {  // the request the server refused: again
    state.messages.push(state.unanswered);
    state.unanswered = null;
    answer();
  }
}

function fillSettings(form) {
  form.elements.system.value = state.settings.system || "";
  for (const field of SAMPLING) form.elements[field.name].value = state.settings[field.name] ?? "";
  $("settings-error").hidden = true;
}

function onSettings(event) {
  event.preventDefault();
  const form = event.target;
  const next = { system: form.elements.system.value };
  for (const field of SAMPLING) {
    const text = form.elements[field.name].value.trim();
    const [value, why] = parseSetting(field, text);
    if (value === null) {
      $("settings-error").textContent = why;
      $("settings-error").hidden = false;
      return;
    }
    if (text) next[field.name] = text;
  }
  state.settings = next;
  saveSettings(next);
  $("settings").close();
}

function showDefaults(params) {
  const form = $("settings-form");
  for (const field of SAMPLING) {
    const value = params[field.name === "max_tokens" ? "n_predict" : field.name];
    if (typeof value === "number") form.elements[field.name].placeholder = `server: ${value}`;
  }
}

async function loadProps() {
  try {
    const props = await getJson("props", state.apiKey);
    const settings = props.default_generation_settings || {};
    state.nCtx = Number(settings.n_ctx) || 0;
    const path = String(props.model_path || "");
    const alias = props.model_alias && props.model_alias !== path ? props.model_alias : "";
    const name = alias || path.split(/[\\/]/).pop() || "model";
    $("model").textContent = name;
    $("model").title = path;
    if (settings.params) showDefaults(settings.params);
  } catch (e) {
    $("model").textContent = "model unknown";
    $("stats").textContent = e instanceof ApiError ? e.describe() : String(e);
    if (e instanceof ApiError && e.status === 401) askForKey(e);
  }
}

function newChat() {
  if (state.controller) state.controller.abort();
  state.messages = [];
  state.unanswered = null;
  thread.replaceChildren();
  $("stats").textContent = "";
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value;
    if (state.controller || !text.trim()) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("new-chat").addEventListener("click", newChat);
  $("open-settings").addEventListener("click", () => {
    fillSettings($("settings-form"));
    $("settings").showModal();
  });
  $("settings-form").addEventListener("submit", onSettings);
  $("settings-cancel").addEventListener("click", () => $("settings").close());
  $("key-form").addEventListener("submit", onKey);
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
}

wire();
loadProps();
