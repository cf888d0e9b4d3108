// The File panel: drop or pick a file, upload it with progress, show and download the transcript.

import { authHeaders, errorMessage } from "./api.js";
import { clock, download, duration, toTxt } from "./captions.js";
import { languageName } from "./languages.js";

const $ = (id) => document.getElementById(id);

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(0)} KB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
}

export class FilePanel {
  constructor() {
    this.zone = $("drop-zone");
    this.input = $("file-input");
    this.language = $("file-language");
    this.job = $("file-job");
    this.status = $("file-status");
    this.progress = $("file-progress");
    this.alert = $("file-alert");
    this.result = $("file-result");
    this.audio = $("file-audio");
    this.segmentsList = $("file-segments");
    this.segments = [];
    this.request = null;

    this.input.addEventListener("change", () => {
      if (this.input.files.length > 0) this.transcribe(this.input.files[0]);
      this.input.value = "";
    });
    this.zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      this.zone.classList.add("dragging");
    });
    this.zone.addEventListener("dragleave", (event) => {
      if (!this.zone.contains(event.relatedTarget)) this.zone.classList.remove("dragging");
    });
    this.zone.addEventListener("drop", (event) => {
      event.preventDefault();
      this.zone.classList.remove("dragging");
      const file = event.dataTransfer.files[0];
      if (file) this.transcribe(file);
    });
    // A file dropped next to the zone must not navigate away from the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
    $("file-cancel").addEventListener("click", () => this.request?.abort());
    for (const button of document.querySelectorAll("[data-file-action]")) {
      button.addEventListener("click", () => this.action(button.dataset.fileAction));
    }
    this.segmentsList.addEventListener("click", (event) => {
      const time = event.target.closest("[data-seek]");
      if (time) this.seek(Number(time.dataset.seek));
    });
    this.audio.addEventListener("timeupdate", () => this.highlight());
  }

  transcribe(file) {
    this.request?.abort();
    this.alert.hidden = true;
    this.result.hidden = true;
    this.fileName = file.name;
    $("file-name").textContent = `${file.name} · ${formatBytes(file.size)}`;
    this.job.hidden = false;
    $("file-cancel").hidden = false;
    this.setProgress(0, "Uploading… 0 %");

    const form = new FormData();
    form.append("file", file, file.name);
    form.append("model", "whisper-1");
    form.append("response_format", "verbose_json");
    if (this.language.value && this.language.value !== "auto") {
      form.append("language", this.language.value);
    }

    const request = new XMLHttpRequest();
    this.request = request;
    const startedAt = performance.now();
    let ticker = null;
    request.open("POST", "/v1/audio/transcriptions");
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.responseType = "text";
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const fraction = event.loaded / event.total;
      this.setProgress(fraction, `Uploading… ${Math.round(fraction * 100)} %`);
    });
    request.upload.addEventListener("load", () => {
      const uploadedAt = performance.now();
      this.progress.removeAttribute("value"); // indeterminate while the server works
      const tick = () => {
        const seconds = Math.round((performance.now() - uploadedAt) / 1000);
        this.status.textContent = `Uploaded. Transcribing… ${seconds} s`;
      };
      tick();
      ticker = setInterval(tick, 1000);
    });
    request.addEventListener("loadend", () => {
      clearInterval(ticker);
      if (this.request === request) this.request = null;
      $("file-cancel").hidden = true;
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) {
        this.setProgress(1, `Done in ${duration((performance.now() - startedAt) / 1000)}.`);
        this.show(request.responseText, file);
      } else if (request.status === 404) {
        this.fail(
          "File transcription is not available on this server "
            + "(POST /v1/audio/transcriptions answered 404).",
        );
      } else if (request.status === 413) {
        this.fail(`This file is too large for the server (${formatBytes(file.size)}).`);
      } else {
        this.fail(errorMessage(request.status, request.responseText));
      }
    });
    request.addEventListener("error", () => this.fail("The upload failed: the server cannot be reached."));
    request.addEventListener("abort", () => {
      this.setProgress(0, "Cancelled.");
    });
    request.send(form);
  }

  setProgress(fraction, message) {
    this.progress.value = fraction;
    this.status.textContent = message;
  }

  fail(message) {
    this.setProgress(0, "Failed.");
    this.alert.textContent = message;
    this.alert.dataset.tone = "error";
    this.alert.hidden = false;
  }

  show(body, file) {
    let answer;
    try {
      answer = JSON.parse(body);
    } catch {
      this.fail("The server's answer was not JSON.");
      return;
    }
    const segments = Array.isArray(answer.segments) ? answer.segments : [];
    this.segments = segments.length > 0
      ? segments.map((s) => ({ start: Number(s.start), end: Number(s.end), text: String(s.text) }))
      : [{ start: 0, end: Number(answer.duration) || 0, text: String(answer.text ?? "") }];
    const facts = [];
    if (answer.language) {
      const name = languageName(String(answer.language));
      facts.push(name.charAt(0).toUpperCase() + name.slice(1));
    }
    if (answer.duration) facts.push(duration(Number(answer.duration)));
    facts.push(`${this.segments.length} segment${this.segments.length === 1 ? "" : "s"}`);
    $("file-meta").textContent = facts.join(" · ");
    if (this.audioUrl) URL.revokeObjectURL(this.audioUrl);
    this.audioUrl = URL.createObjectURL(file);
    this.audio.src = this.audioUrl;

    const items = this.segments.map((segment) => {
      const item = document.createElement("li");
      item.className = "line";
      item.dataset.start = String(segment.start);
      item.dataset.end = String(segment.end);
      const time = document.createElement("button");
      time.type = "button";
      time.className = "line-time";
      time.dataset.seek = String(segment.start);
      time.textContent = `${clock(segment.start)}–${clock(segment.end)}`;
      time.setAttribute("aria-label", `Play from ${clock(segment.start)}`);
      const text = document.createElement("span");
      text.className = "line-text";
      text.textContent = segment.text.trim();
      item.append(time, text);
      return item;
    });
    this.segmentsList.replaceChildren(...items);
    this.result.hidden = false;
  }

  seek(seconds) {
    this.audio.currentTime = seconds;
    this.audio.play().catch(() => {});
  }

  highlight() {
    const now = this.audio.currentTime;
    for (const item of this.segmentsList.children) {
      const current = Number(item.dataset.start) <= now && now < Number(item.dataset.end);
      item.classList.toggle("current", current);
    }
  }

  async action(name) {
    const base = (this.fileName ?? "transcript").replace(/\.[^.]+$/, "");
    if (name === "copy") {
      await navigator.clipboard?.writeText(toTxt(this.segments)).catch(() => {});
    } else {
      download(this.segments, name, base);
    }
  }
}
