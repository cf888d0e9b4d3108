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

/**
 * A WebSocket URL that authenticates without the key in it (proxies log URLs): with a key, a
 * single-use ticket from POST /v1/tickets (the key in a header; the ticket is valid 60 s) goes in
 * its `ticket` parameter. Throws HttpError when the server refuses the key.
 */
export async function withTicket(url) {
  if (!settings.apiKey) return url;
  const response = await fetch("/v1/tickets", {
    method: "POST",
    headers: authHeaders(),
    cache: "no-store",
  });
  if (!response.ok) {
    throw new HttpError(response.status, errorMessage(response.status, await response.text()));
  }
  const { ticket } = await response.json();
  const parsed = new URL(url, location.href);
  parsed.searchParams.set("ticket", ticket);
  return parsed.toString();
}

/**
 * A URL for <audio src> and the like: without a key the path itself (the browser streams it
 * with Range requests); with one, a blob: URL of the answer fetched with the key in a header,
 * which the caller must `URL.revokeObjectURL` when done. Throws HttpError on a non-2xx answer.
 */
export async function mediaUrl(path, { signal } = {}) {
  if (!settings.apiKey) return path;
  const response = await fetch(path, { headers: authHeaders(), signal });
  if (!response.ok) {
    throw new HttpError(response.status, errorMessage(response.status, await response.text()));
  }
  return URL.createObjectURL(await response.blob());
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
