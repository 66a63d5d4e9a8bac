// The user's settings and API key, kept in the browser's localStorage. An empty setting is left
// out of requests, so the server's default (its command line) applies.

const SETTINGS_KEY = "llama-grpc-webui.settings";
const API_KEY_KEY = "llama-grpc-webui.api-key";

/** The sampling fields a request may carry: name, parser, and the allowed range. */
export const SAMPLING = [
  { name: "temperature", min: 0, max: 10 },
  { name: "top_k", min: 0, max: 1e6, integer: true },
  { name: "top_p", min: 0, max: 1 },
  { name: "min_p", min: 0, max: 1 },
  { name: "max_tokens", min: 1, max: 1e7, integer: true },
];

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;  // storage disabled: settings last as long as the page
  }
}

const memory = {};

function read(key) {
  const s = storage();
  return s ? s.getItem(key) : memory[key] ?? null;
}

function write(key, value) {
  const s = storage();
  if (!s) {
    memory[key] = value;
  } else if (value === null) {
    s.removeItem(key);
  } else {
    s.setItem(key, value);
  }
}

/** The saved settings: {system: string, temperature: "0.7", ...} (numbers kept as typed). */
export function loadSettings() {
  try {
    const saved = JSON.parse(read(SETTINGS_KEY) || "{}");
    return saved && typeof saved === "object" ? saved : {};
  } catch {
    return {};
  }
}

export function saveSettings(settings) {
  write(SETTINGS_KEY, JSON.stringify(settings));
}

/** A setting's value checked against its range: [number] or [null, why] or [undefined]. */
export function parseSetting(field, text) {
  if (text === undefined || text === null || String(text).trim() === "") return [undefined];
  const value = Number(text);
  if (!Number.isFinite(value)) return [null, `${field.name} must be a number`];
  if (field.integer && !Number.isInteger(value)) return [null, `${field.name} must be a whole number`];
  if (value < field.min || value > field.max) {
    return [null, `${field.name} must be between ${field.min} and ${field.max}`];
  }
  return [value];
}

/** The request fields for the saved settings (invalid ones were refused when saved). */
export function samplingFields(settings) {
  const out = {};
  for (const field of SAMPLING) {
    const [value] = parseSetting(field, settings[field.name]);
    if (typeof value === "number") out[field.name] = value;
  }
  return out;
}

export function loadApiKey() {
  return read(API_KEY_KEY) || "";
}

export function saveApiKey(key) {
  write(API_KEY_KEY, key || null);
}
