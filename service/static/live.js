// The Live panel: Start/Stop, level meter, partial and final text, latency, how far the server
// is behind (while its status frames say so), options.

import { settings } from "./api.js";
import { clock, download, toTxt } from "./captions.js";
import { MicrophoneError, openMicrophone } from "./microphone.js";
import { LiveStream } from "./stream.js";

const $ = (id) => document.getElementById(id);

const SENTIMENT_LABELS = { positive: "Positive", negative: "Negative", neutral: "Neutral" };
// The server sends `status` every second while a session is behind and once when it catches
// up; this long without one, the figures it carried are stale and go.
const STATUS_QUIET_MS = 2500;

export class LivePanel {
  constructor() {
    this.button = $("live-toggle");
    this.stateText = $("live-state");
    this.alert = $("live-alert");
    this.list = $("live-transcript");
    this.empty = $("live-empty");
    this.language = $("live-language");
    this.sentiment = $("live-sentiment");
    this.record = $("live-record");
    this.meterFill = $("level-fill");
    this.meterPeak = $("level-peak");
    this.finals = []; // {start, end, text} for downloads
    this.latencies = [];
    this.partials = new Map(); // key -> <li>
    this.mode = "idle"; // idle | starting | live | finishing
    this.level = { rms: 0, peak: 0, shownPeak: 0 };

    const saved = settings.load();
    this.sentiment.checked = Boolean(saved.sentiment);
    this.record.checked = Boolean(saved.record);
    const save = () => settings.save({ sentiment: this.sentiment.checked, record: this.record.checked });
    this.sentiment.addEventListener("change", save);
    this.record.addEventListener("change", save);
    this.button.addEventListener("click", () => this.toggle());
    for (const button of document.querySelectorAll("[data-live-action]")) {
      button.addEventListener("click", () => this.action(button.dataset.liveAction));
    }
    window.addEventListener("pagehide", () => this.stream?.abort());
    this.render();
  }

  toggle() {
    if (this.mode === "idle") this.start();
    else if (this.mode === "live") this.stop();
    else if (this.mode === "finishing") this.stream?.abort(); // "Give up" while reconnecting
  }

  params() {
    const params = new URLSearchParams({
      sample_rate: "16000",
      encoding: "pcm_s16le",
      language: this.language.value || "auto",
      sentiment: String(this.sentiment.checked),
      record: String(this.record.checked),
    });
    return params;
  }

  async start() {
    this.setMode("starting");
    this.hideAlert();
    this.showState("Asking for the microphone…");
    this.stream = new LiveStream({
      params: () => this.params(),
      emit: (type, detail) => this.onStreamEvent(type, detail),
    });
    try {
      this.microphone = await openMicrophone({
        onFrame: (pcm, rms, peak) => {
          this.stream.pushAudio(pcm);
          this.level.rms = rms;
          this.level.peak = Math.max(this.level.peak, peak);
        },
        onEnded: () => {
          this.showAlert("The microphone was disconnected.", "warn");
          this.stop();
        },
      });
    } catch (error) {
      const message = error instanceof MicrophoneError ? error.message : String(error);
      this.showAlert(message, "error", "Microphone unavailable");
      this.showState("Press Start and speak.");
      this.stream = null;
      this.setMode("idle");
      return;
    }
    this.startedAt = performance.now();
    this.setMode("live");
    this.addMarker(`Started ${new Date().toLocaleTimeString()}`);
    this.stream.start();
    this.animate();
  }

  async stop() {
    if (this.mode !== "live") return;
    this.setMode("finishing");
    const microphone = this.microphone;
    this.microphone = null;
    await microphone.flush();
    microphone.close();
    this.level.rms = 0;
    this.level.peak = 0;
    this.stream.finish();
  }

  onStreamEvent(type, detail) {
    switch (type) {
      case "state":
        if (detail.state === "live") this.hideAlert();
        this.showState(detail.message, detail.tone);
        if (this.mode === "finishing") {
          // Finishing needs the server; while it cannot be reached, let the user give up.
          const stuck = detail.tone === "warn";
          this.button.disabled = !stuck;
          this.button.querySelector(".mic-label").textContent = stuck ? "Give up" : "Stop";
          this.button.setAttribute("aria-label", stuck ? "Give up waiting" : "Stop listening");
        }
        break;
      case "session":
        // Partials of a dropped session will come back from the new one.
        for (const item of this.partials.values()) item.remove();
        this.partials.clear();
        break;
      case "notice":
        this.showAlert(detail.message, detail.tone ?? "warn");
        break;
      case "server-error":
        this.showAlert(`${detail.message} (${detail.code})`, detail.fatal ? "error" : "warn");
        break;
      case "partial":
        this.showPartial(detail);
        break;
      case "final":
        this.showFinal(detail);
        break;
      case "status":
        this.showStatus(detail);
        break;
      case "stopped":
        // The page's own count: after a reconnection the server's duration_s covers only the
        // last session.
        this.addMarker(`Stopped after ${clock(this.stream.sentSeconds)}`);
        break;
      case "ended":
        this.ended(detail);
        break;
      default:
        break;
    }
  }

  showStatus({ lag_s, degraded, caption_delay_s }) {
    const behind = Number(caption_delay_s ?? 0).toFixed(1);
    if ($("stat-captions-item").hidden) {
      // Announced when it appears and when it goes, not at every second's figure.
      $("live-behind").textContent = `Text is ${behind} seconds behind the speech.`;
    }
    $("stat-lag-item").hidden = false;
    $("stat-lag").textContent = `${Number(lag_s).toFixed(1)} s${degraded ? " ⚠" : ""}`;
    $("stat-captions-item").hidden = false;
    $("stat-captions").textContent = `${behind} s`;
    clearTimeout(this.statusQuiet);
    this.statusQuiet = setTimeout(() => this.hideStatus(true), STATUS_QUIET_MS);
  }

  hideStatus(caughtUp) {
    clearTimeout(this.statusQuiet);
    if (caughtUp && !$("stat-captions-item").hidden) {
      $("live-behind").textContent = "The text has caught up with the speech.";
    }
    $("stat-lag-item").hidden = true;
    $("stat-captions-item").hidden = true;
  }

  ended({ message, tone }) {
    this.hideStatus(false);
    $("stat-elapsed").textContent = clock(this.stream.sentSeconds);
    this.microphone?.close();
    this.microphone = null;
    for (const item of this.partials.values()) item.remove();
    this.partials.clear();
    this.setMode("idle");
    if (message) this.showState(message, tone);
    if (tone === "error" || tone === "warn") this.showAlert(message, tone);
    this.stream = null;
  }

  line(kind) {
    const item = document.createElement("li");
    item.className = `line ${kind}`;
    const time = document.createElement("span");
    time.className = "line-time";
    const text = document.createElement("span");
    text.className = "line-text";
    const badges = document.createElement("span");
    badges.className = "line-badges";
    item.append(time, text, badges);
    return item;
  }

  showPartial({ key, text, start }) {
    let item = this.partials.get(key);
    if (!item) {
      item = this.line("partial");
      item.setAttribute("aria-hidden", "true"); // finals are announced, drafts are not
      this.partials.set(key, item);
      this.list.append(item);
    }
    item.querySelector(".line-time").textContent = clock(start);
    item.querySelector(".line-text").textContent = text.trim();
    this.scroll();
  }

  showFinal(final) {
    const partial = this.partials.get(final.key);
    this.partials.delete(final.key);
    const text = String(final.text ?? "").trim();
    if (!text) {
      partial?.remove();
      return;
    }
    const item = this.line("final");
    item.querySelector(".line-time").textContent = `${clock(final.start)}–${clock(final.end)}`;
    item.querySelector(".line-text").textContent = text;
    const badges = item.querySelector(".line-badges");
    if (final.sentiment?.type) {
      const badge = document.createElement("span");
      badge.className = `badge badge-${final.sentiment.type}`;
      badge.textContent = SENTIMENT_LABELS[final.sentiment.type] ?? final.sentiment.type;
      badge.title = `Sentiment ${final.sentiment.type}, polarity ${final.sentiment.polarity}`;
      badges.append(badge);
    }
    if (Array.isArray(final.flags) && final.flags.length > 0) {
      const badge = document.createElement("span");
      badge.className = "badge badge-flag";
      badge.textContent = "Check";
      badge.title = final.flags.join("; ");
      badges.append(badge);
    }
    if (final.latency !== null && final.latency !== undefined) {
      this.latencies.push(final.latency);
      const badge = document.createElement("span");
      badge.className = "badge badge-latency";
      badge.textContent = `${final.latency.toFixed(2)} s`;
      badge.title = "Latency: arrival of this final minus the moment its last audio was sent";
      badges.append(badge);
    }
    item.dataset.start = String(final.start);
    if (partial) partial.replaceWith(item);
    else this.list.append(item);
    this.finals.push({ start: final.start, end: final.end, text });
    this.render();
    this.scroll();
  }

  addMarker(text) {
    const item = this.line("marker");
    item.querySelector(".line-text").textContent = text;
    this.list.append(item);
    this.render();
    this.scroll();
  }

  scroll() {
    // Follow new text unless the reader scrolled up to look at something.
    const list = this.list;
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 120) {
      list.scrollTop = list.scrollHeight;
    }
  }

  render() {
    this.empty.hidden = this.list.children.length > 0;
    $("stat-finals").textContent = String(this.finals.length);
    if (this.latencies.length > 0) {
      const sorted = [...this.latencies].sort((a, b) => a - b);
      const middle = Math.floor(sorted.length / 2);
      const median = sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
      $("stat-latency").textContent = `${median.toFixed(2)} s`;
    }
  }

  setMode(mode) {
    this.mode = mode;
    this.button.dataset.state = mode;
    this.button.disabled = mode === "starting" || mode === "finishing";
    const label = { idle: "Start", starting: "Start", live: "Stop", finishing: "Stop" }[mode];
    this.button.querySelector(".mic-label").textContent = label;
    const busy = mode === "live" || mode === "finishing";
    this.button.setAttribute("aria-label", busy ? "Stop listening" : "Start listening");
    for (const control of [this.language, this.sentiment, this.record]) {
      control.disabled = mode !== "idle";
    }
  }

  showState(message, tone = "info") {
    this.stateText.textContent = message;
    this.stateText.dataset.tone = tone;
  }

  showAlert(message, tone = "warn", title = "") {
    this.alert.replaceChildren();
    if (title) {
      const strong = document.createElement("strong");
      strong.textContent = title;
      this.alert.append(strong);
    }
    this.alert.append(document.createTextNode(message));
    this.alert.dataset.tone = tone;
    this.alert.hidden = false;
  }

  hideAlert() {
    this.alert.hidden = true;
  }

  animate() {
    const frame = () => {
      const active = this.mode === "live" || this.mode === "finishing";
      const toMeter = (value) => Math.max(0, Math.min(1, (20 * Math.log10(value + 1e-9) + 60) / 60));
      const level = active ? toMeter(this.level.rms) : 0;
      const peak = active ? toMeter(this.level.peak) : 0;
      this.level.shownPeak = Math.max(peak, this.level.shownPeak - 0.01);
      this.level.peak = 0;
      this.meterFill.style.transform = `scaleX(${level})`;
      this.meterPeak.style.left = `calc(${(this.level.shownPeak * 100).toFixed(1)}% - 3px)`;
      this.meterPeak.hidden = !active;
      if (this.startedAt !== undefined && this.stream) {
        $("stat-elapsed").textContent = clock(this.stream.sentSeconds);
      }
      if (active) requestAnimationFrame(frame);
      else {
        this.meterFill.style.transform = "scaleX(0)";
        this.meterPeak.hidden = true;
        this.level.shownPeak = 0;
      }
    };
    requestAnimationFrame(frame);
  }

  async action(name) {
    const base = `chorus-live-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}`;
    if (name === "copy") {
      await navigator.clipboard?.writeText(toTxt(this.finals)).catch(() => {});
    } else if (name === "clear") {
      for (const item of [...this.list.children]) {
        if (!item.classList.contains("partial")) item.remove();
      }
      this.finals = [];
      this.latencies = [];
      $("stat-latency").textContent = "–";
      this.render();
    } else if (this.finals.length > 0) {
      download(this.finals, name, base);
    }
  }
}
