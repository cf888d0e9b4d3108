// The History panel: stored sessions, their transcripts and recordings (GET /v1/sessions...).

import { HttpError, mediaUrl, requestJson } from "./api.js";
import { clock, download, duration } from "./captions.js";
import { languageName } from "./languages.js";

const $ = (id) => document.getElementById(id);

function when(value) {
  if (value === null || value === undefined || value === "") return "Unknown time";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function facts(session) {
  const parts = [];
  if (session.duration_s !== undefined && session.duration_s !== null) {
    parts.push(duration(Number(session.duration_s)));
  }
  if (session.language) parts.push(languageName(session.language));
  if (session.route) parts.push(session.route);
  return parts.join(" · ");
}

// What the list shows when it has no transcript text for a session.
function summary(session) {
  const count = Number(session.utterances);
  const parts = [];
  if (Number.isFinite(count)) {
    parts.push(count === 0 ? "No speech" : `${count} utterance${count === 1 ? "" : "s"}`);
  }
  if (session.has_audio) parts.push("recorded");
  if (session.ended_at === null) parts.push("live now");
  return parts.join(" · ");
}

export class HistoryPanel {
  constructor() {
    this.list = $("history-list");
    this.status = $("history-status");
    this.more = $("history-more");
    this.detail = $("history-detail");
    this.audio = $("detail-audio");
    this.audioNote = $("detail-audio-note");
    this.utterances = $("detail-utterances");
    this.next = null;
    this.loaded = false;
    this.current = null;

    $("history-refresh").addEventListener("click", () => this.load());
    this.more.addEventListener("click", () => this.load(this.next));
    this.list.addEventListener("click", (event) => {
      const item = event.target.closest("[data-session]");
      if (item) this.open(item.dataset.session);
    });
    this.utterances.addEventListener("click", (event) => {
      const line = event.target.closest("[data-seek]");
      if (line) this.seek(Number(line.dataset.seek));
    });
    for (const button of document.querySelectorAll("[data-session-action]")) {
      button.addEventListener("click", () => this.action(button.dataset.sessionAction));
    }
    this.audio.addEventListener("timeupdate", () => this.highlight());
    this.audio.addEventListener("error", () => {
      if (!this.audio.getAttribute("src")) return;
      this.showAudioNote(
        this.current?.ended_at === null
          ? "The recording is still being written; it can be played once the session ends."
          : "The recording could not be loaded.",
      );
    });
  }

  /** Called when the tab is shown: loads the list the first time. */
  shown() {
    if (!this.loaded) this.load();
  }

  async load(cursor = null) {
    this.loaded = true;
    this.status.hidden = false;
    this.status.textContent = "Loading sessions…";
    const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
    let page;
    try {
      page = await requestJson(`/v1/sessions${query}`);
    } catch (error) {
      if (!cursor) this.list.replaceChildren();
      this.more.hidden = true;
      this.status.textContent = error instanceof HttpError && error.status === 404
        ? "History is not available on this server (GET /v1/sessions answered 404)."
        : `Sessions could not be loaded. ${error.message}`;
      return;
    }
    const sessions = Array.isArray(page?.sessions) ? page.sessions : [];
    const items = sessions.map((session) => this.item(session));
    if (cursor) this.list.append(...items);
    else this.list.replaceChildren(...items);
    this.next = page?.next ?? null;
    this.more.hidden = !this.next;
    if (this.list.children.length === 0) {
      this.status.textContent = "No sessions yet. Sessions appear here after a live transcription.";
    } else {
      this.status.hidden = true;
    }
  }

  item(session) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "session-item";
    button.dataset.session = session.id;
    const title = document.createElement("span");
    title.className = "session-when";
    title.textContent = when(session.started_at);
    const details = document.createElement("span");
    details.className = "session-facts";
    details.textContent = facts(session);
    const snippet = document.createElement("span");
    snippet.className = "session-snippet";
    snippet.textContent = String(session.transcript ?? "").trim() || summary(session);
    button.append(title, details, snippet);
    item.append(button);
    return item;
  }

  async open(id) {
    for (const button of this.list.querySelectorAll("[data-session]")) {
      button.setAttribute("aria-current", String(button.dataset.session === id));
    }
    this.detail.hidden = false;
    $("detail-title").textContent = "Loading…";
    $("detail-meta").textContent = "";
    this.utterances.replaceChildren();
    this.releaseAudio();
    this.audio.hidden = true;
    this.audioNote.hidden = true;
    let session;
    try {
      session = await requestJson(`/v1/sessions/${encodeURIComponent(id)}`);
    } catch (error) {
      $("detail-title").textContent = "Session";
      $("detail-meta").textContent = error instanceof HttpError && error.status === 404
        ? "This session no longer exists."
        : `The session could not be loaded. ${error.message}`;
      this.current = null;
      return;
    }
    this.current = session;
    $("detail-title").textContent = when(session.started_at);
    $("detail-meta").textContent = facts(session);
    $("detail-meta").title = `Session ${session.id}`;
    if (session.has_audio === false) {
      this.showAudioNote("No recording was kept for this session (turn on “Keep recording” "
        + "before starting a live session to keep one).");
    } else {
      this.audio.hidden = false;
      this.loadAudio(session);
    }
    const utterances = Array.isArray(session.utterances) ? session.utterances : [];
    const lines = utterances.map((utterance) => this.line(utterance));
    if (lines.length === 0 && session.transcript) {
      lines.push(this.line({ start: 0, end: 0, text: session.transcript }));
    }
    this.utterances.replaceChildren(...lines);
    this.detail.scrollIntoView({ block: "nearest", behavior: "smooth" });
    if (matchMedia("(max-width: 640px)").matches) this.detail.focus({ preventScroll: true });
  }

  line(utterance) {
    const start = Number(utterance.start ?? 0);
    const end = Number(utterance.end ?? 0);
    const item = document.createElement("li");
    item.className = "line";
    item.dataset.start = String(start);
    item.dataset.end = String(end);
    const time = document.createElement("button");
    time.type = "button";
    time.className = "line-time";
    time.dataset.seek = String(start);
    time.textContent = `${clock(start)}–${clock(end)}`;
    time.setAttribute("aria-label", `Play from ${clock(start)}`);
    const text = document.createElement("span");
    text.className = "line-text";
    text.textContent = String(utterance.text ?? "").trim();
    item.append(time, text);
    return item;
  }

  // The recording, fetched with the key in a header (never in the URL) when there is one.
  async loadAudio(session) {
    let url;
    try {
      url = await mediaUrl(`/v1/sessions/${encodeURIComponent(session.id)}/audio`);
    } catch (error) {
      if (this.current !== session) return;
      this.showAudioNote(
        error instanceof HttpError && error.status === 409
          ? "The recording is still being written; it can be played once the session ends."
          : `The recording could not be loaded. ${error.message}`,
      );
      return;
    }
    if (this.current !== session) {
      if (url.startsWith("blob:")) URL.revokeObjectURL(url);
      return;
    }
    this.audio.src = url;
  }

  releaseAudio() {
    this.audio.pause();
    const src = this.audio.getAttribute("src");
    if (src?.startsWith("blob:")) URL.revokeObjectURL(src);
    this.audio.removeAttribute("src");
  }

  showAudioNote(text) {
    this.audio.hidden = true;
    this.audioNote.hidden = false;
    this.audioNote.textContent = text;
  }

  seek(seconds) {
    if (this.audio.hidden) return;
    this.audio.currentTime = seconds;
    this.audio.play().catch(() => {});
  }

  highlight() {
    const now = this.audio.currentTime;
    for (const item of this.utterances.children) {
      const current = Number(item.dataset.start) <= now && now < Number(item.dataset.end);
      item.classList.toggle("current", current);
    }
  }

  segments() {
    const utterances = Array.isArray(this.current?.utterances) ? this.current.utterances : [];
    return utterances.map((u) => ({ start: Number(u.start), end: Number(u.end), text: u.text }));
  }

  async action(name) {
    if (!this.current) return;
    if (name === "delete") {
      if (!window.confirm("Delete this session and its recording?")) return;
      const id = this.current.id;
      try {
        await requestJson(`/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
      } catch (error) {
        $("detail-meta").textContent = `The session could not be deleted. ${error.message}`;
        return;
      }
      this.current = null;
      this.audio.pause();
      this.audio.removeAttribute("src");
      this.detail.hidden = true;
      this.list.querySelector(`[data-session="${CSS.escape(id)}"]`)?.parentElement.remove();
      return;
    }
    download(this.segments(), name, `chorus-session-${this.current.id}`);
  }
}
