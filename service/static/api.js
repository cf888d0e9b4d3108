// Talking to the Chorus server: settings the user chose, authentication, JSON requests.

const STORAGE_KEY = "chorus.settings";

const DEFAULTS = { language: "auto", sentiment: false, record: false };

/** Page settings kept in localStorage; the API key stays in sessionStorage (this tab only). */
export const settings = {
  load() {
    try {
      return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(STORAGE_KEY) ?? "{}") };
    } catch {
      return { ...DEFAULTS };
    }
  },
  save(values) {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify({ ...this.load(), ...values }));
    } catch {
      // Storage can be disabled (private windows); settings then last for this visit only.
    }
  },
  get apiKey() {
    try {
      return sessionStorage.getItem("chorus.apiKey") ?? "";
    } catch {
      return "";
    }
  },
  set apiKey(value) {
    try {
      if (value) sessionStorage.setItem("chorus.apiKey", value);
      else sessionStorage.removeItem("chorus.apiKey");
    } catch {
      // See save().
    }
  },
};

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function authHeaders() {
  const key = settings.apiKey;
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Adds the API key as `token` query parameter, for what cannot send headers (WebSocket, <audio>). */
export function withToken(url) {
  const key = settings.apiKey;
  if (!key) return url;
  const parsed = new URL(url, location.href);
  parsed.searchParams.set("token", key);
  return parsed.toString();
}

/** The human part of an error body: OpenAI's {error: {message}}, {detail}, {message} or text. */
export function errorMessage(status, body) {
  let text = typeof body === "string" ? body : "";
  let parsed = typeof body === "object" && body !== null ? body : null;
  if (parsed === null && text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (parsed !== null) {
    const error = parsed.error;
    text = (typeof error === "object" && error?.message) || parsed.detail || parsed.message
      || (typeof error === "string" ? error : "") || text;
  }
  text = String(text).trim().slice(0, 300);
  return text ? `HTTP ${status}: ${text}` : `HTTP ${status}`;
}

/** GET/POST JSON; throws HttpError on a non-2xx answer and TypeError when unreachable. */
export async function requestJson(path, { method = "GET", signal } = {}) {
  const response = await fetch(path, { method, headers: authHeaders(), signal });
  if (!response.ok) {
    throw new HttpError(response.status, errorMessage(response.status, await response.text()));
  }
  return response.status === 204 ? null : response.json();
}
