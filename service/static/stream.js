// One live transcription: a WebSocket to /v1/stream that survives drops without losing a final.
//
// Reconnection strategy. The page keeps every sample it captured after the end of the last final
// it received (the "ledger"). When the connection drops, it opens a new session and sends the
// ledger again before the live audio, so whatever the old session had not finalized yet (or had
// finalized but not delivered) is transcribed again by the new one. Finals that did arrive are
// never re-sent, so none is shown twice. We chose this over sending `finalize`/`stop` before
// closing because a drop gives no chance to send anything; the user's Stop does send `stop` and
// waits for `stopped`, so that ends cleanly too. The new session counts its time from the first
// re-sent sample; the page adds that offset, so time stamps stay on one clock since Start.
// The ledger is capped (MAX_LEDGER_S): audio older than that without a final is silence in
// practice (the server cuts utterances at max_utterance_s, 15 s) or lost to a very long outage.
//
// Resume. When the server resumes sessions, each `ready` carries a `resume_token`, and the page
// first tries to continue the SAME session after a drop (`resume=<token>&after_seq=<last seq>`):
// the server replays the finals the page missed, its clock goes on, and it drops the part of
// the re-sent ledger it already has, so the ledger is sent as before and nothing changes clock.
// A final whose `seq` is not above the last final's is a replay already shown: dropped. If the
// resume is refused twice (the token expired, or the ledger lost audio), a new session starts,
// as above.

import { authHeaders, withTicket } from "./api.js";
import { TARGET_RATE } from "./pcm.js";

const MAX_LEDGER_S = 30;
const FINISH_TIMEOUT_MS = 60_000;
const RESUME_TRIES = 2; // failed opens with the token before starting a new session
// Closes after which the server keeps the session for a resume (a drain closes 1012).
const RESUMABLE_CLOSE = new Set([1001, 1006, 1011, 1012]);
// Errors after which trying again can help (the server may say so with a fatal error frame).
const RETRYABLE_ERROR = /busy|overload|capacity|rate|limit|unavailable|shutdown|restart|timeout/i;

export class LiveStream {
  /**
   * @param {object} options
   * @param {() => URLSearchParams} options.params  query parameters for each new session
   * @param {(type: string, detail: object) => void} options.emit  events for the page
   */
  constructor({ params, emit }) {
    this.params = params;
    this.emit = emit;
    this.ledger = []; // [{start, pcm}] not yet covered by a received final; start in samples
    this.captured = 0; // samples captured since Start
    this.socket = null;
    this.connection = 0; // increases with every session opened
    this.sessionBase = 0; // sample (since Start) where the current session's time 0 lies
    this.sendLog = []; // [{end, at}] per sent frame of the current session
    this.attempt = 0;
    this.retryTimer = null;
    this.state = "idle"; // connecting | live | waiting | finishing | done
    this.finishing = false;
    this.droppedAudio = false;
    this.resumeToken = null; // the last `ready`'s, while the session may be resumed
    this.resuming = false; // the socket being opened continues the session
    this.resumeFailures = 0;
    this.lastSeq = 0; // the highest `seq` received in this session
    this.lastFinalSeq = 0;
    this.serverStopped = null; // a `stopped` the page did not ask for (a drain): the close decides
  }

  get sentSeconds() {
    return this.captured / TARGET_RATE;
  }

  start() {
    this.connect();
  }

  /** Audio from the microphone (Int16Array at 16 kHz). */
  pushAudio(pcm) {
    if (this.captured === 0 && this.state === "live") this.setState("live", "Listening…");
    const chunk = { start: this.captured, pcm };
    this.captured += pcm.length;
    this.ledger.push(chunk);
    const limit = MAX_LEDGER_S * TARGET_RATE;
    while (this.ledger.length > 1 && this.captured - this.ledger[0].start > limit) {
      this.ledger.shift();
      if (!this.isOpen()) this.droppedAudio = true; // never sent to any session
    }
    // While disconnected the chunk waits in the ledger for the next session.
    if (this.isOpen() && this.state !== "connecting") this.send(chunk);
  }

  /** Asks the server to finish (after the microphone's last samples were pushed). */
  finish() {
    if (this.state === "done") return;
    this.finishing = true;
    this.finishTimer = setTimeout(() => {
      this.end("The server did not finish in time; the last words may be missing.", "warn");
    }, FINISH_TIMEOUT_MS);
    if (this.isOpen()) {
      this.setState("finishing", "Finishing the last words…");
      this.socket.send(JSON.stringify({ type: "stop" }));
    } else {
      this.setState("finishing", "Reconnecting to finish the last words…");
    }
  }

  /** Gives up at once (the page is closing or the user insisted). */
  abort() {
    this.end(null);
  }

  isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  setState(state, message, tone = "info") {
    this.state = state;
    this.emit("state", { state, message, tone });
  }

  /** The session's URL, with a fresh ticket for each connection when there is a key, and the
   * resume token after a drop. */
  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = this.params();
    this.resuming = this.resumeToken !== null && !this.droppedAudio;
    if (this.resuming) {
      params.set("resume", this.resumeToken);
      params.set("after_seq", String(this.lastSeq));
    }
    return withTicket(`${scheme}//${location.host}/v1/stream?${params.toString()}`);
  }

  async connect() {
    clearTimeout(this.retryTimer);
    this.setState(
      this.finishing ? "finishing" : "connecting",
      this.attempt === 0 ? "Connecting…" : "Reconnecting…",
    );
    let url = null;
    try {
      url = await this.url();
    } catch {
      // No ticket (the server is away or refuses the key): as if the socket never opened.
    }
    if (this.state === "done") return;
    if (url === null) {
      this.retry({ code: 0 }, false);
      return;
    }
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    let opened = false;
    this.socket = socket;
    socket.onopen = () => {
      opened = true;
      this.opened(socket);
    };
    socket.onmessage = (event) => {
      if (socket === this.socket && typeof event.data === "string") this.receive(event.data);
    };
    socket.onclose = (event) => {
      if (socket === this.socket) this.closed(event, opened);
    };
  }

  opened(socket) {
    this.attempt = 0;
    this.sendLog = [];
    this.resumeFailures = 0;
    if (!this.resuming) { // a new session, on its own clock from the ledger's first sample
      this.connection += 1;
      this.lastSeq = 0;
      this.lastFinalSeq = 0;
      this.sessionBase = this.ledger.length > 0 ? this.ledger[0].start : this.captured;
    }
    this.emit("session", {
      connection: this.connection,
      base: this.sessionBase / TARGET_RATE,
      resumed: this.resuming,
    });
    if (this.droppedAudio) {
      this.droppedAudio = false;
      this.emit("notice", {
        message: `The connection was down for a long time; audio older than ${MAX_LEDGER_S} s `
          + "could not be sent.",
      });
    }
    for (const chunk of this.ledger) this.send(chunk);
    if (this.finishing) {
      this.setState("finishing", "Finishing the last words…");
      socket.send(JSON.stringify({ type: "stop" }));
    } else {
      this.setState("live", this.captured > 0 ? "Listening…" : "Connected; starting the microphone…");
    }
  }

  send(chunk) {
    this.socket.send(chunk.pcm);
    this.sendLog.push({ end: chunk.start + chunk.pcm.length, at: performance.now() });
  }

  // Session time (seconds) to time since Start (seconds).
  globalTime(seconds) {
    return this.sessionBase / TARGET_RATE + seconds;
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const key = (utterance) => `${this.connection}:${utterance}`;
    const seq = Number(frame.seq ?? 0);
    this.lastSeq = Math.max(this.lastSeq, seq);
    switch (frame.type) {
      case "ready":
        this.resumeToken = frame.resume_token ?? null;
        this.emit("ready", frame);
        break;
      case "partial":
        this.emit("partial", {
          key: key(frame.utterance),
          text: frame.text,
          start: this.globalTime(frame.start),
          end: this.globalTime(frame.end),
        });
        break;
      case "final":
        if (seq <= this.lastFinalSeq) break; // shown before the drop
        this.lastFinalSeq = seq;
        this.emit("final", {
          ...frame,
          key: key(frame.utterance),
          start: this.globalTime(frame.start),
          end: this.globalTime(frame.end),
          latency: this.confirm(frame.end),
        });
        break;
      case "status":
        this.emit("status", frame);
        break;
      case "error":
        this.lastError = frame;
        this.emit("server-error", frame);
        break;
      case "stopped":
        if (!this.finishing && this.resumeToken !== null) {
          this.serverStopped = frame;
          break;
        }
        this.emit("stopped", frame);
        this.end("Stopped.", "info");
        break;
      default:
        break;
    }
  }

  // A final ending at `end` (session seconds) arrived: measure its latency, then forget the audio
  // before that point (it never needs re-sending). Returns seconds or null.
  confirm(end) {
    const sample = this.sessionBase + Math.round(end * TARGET_RATE);
    const now = performance.now();
    const sent = this.sendLog.find((entry) => entry.end >= sample);
    const latency = sent ? (now - sent.at) / 1000 : null;
    this.sendLog = this.sendLog.filter((entry) => entry.end >= sample);
    while (this.ledger.length > 0) {
      const first = this.ledger[0];
      const firstEnd = first.start + first.pcm.length;
      if (firstEnd <= sample) {
        this.ledger.shift();
      } else {
        if (first.start < sample) {
          this.ledger[0] = { start: sample, pcm: first.pcm.subarray(sample - first.start) };
        }
        break;
      }
    }
    return latency;
  }

  closed(event, opened) {
    this.socket = null;
    if (this.state === "done") return;
    if (!opened && this.resuming && ++this.resumeFailures >= RESUME_TRIES) {
      this.resumeToken = null; // refused (expired, or lost audio): a new session next
    }
    const stopped = this.serverStopped;
    this.serverStopped = null;
    if (stopped !== null && !RESUMABLE_CLOSE.has(event.code)) {
      this.emit("stopped", stopped);
      this.end("Stopped.", "info");
      return;
    }
    const error = this.lastError;
    this.lastError = null;
    if (error?.fatal && !RETRYABLE_ERROR.test(`${error.code} ${error.message}`)) {
      this.end(`The server ended the stream: ${error.message}`, "error");
      return;
    }
    if (event.code === 1003 || event.code === 1007) {
      this.end(`The server refused the audio (${event.code} ${event.reason}).`, "error");
      return;
    }
    this.retry(event, opened);
  }

  async retry(event, opened) {
    this.attempt += 1;
    const delay = Math.min(15, 2 ** (this.attempt - 1)) * (0.8 + Math.random() * 0.4);
    let reason;
    if (event.code === 1013) {
      reason = "The server is busy (close code 1013).";
    } else if (event.code === 1001 || event.code === 1012) {
      reason = "The server is restarting.";
    } else if (opened) {
      reason = `The connection dropped${event.code ? ` (close code ${event.code})` : ""}.`;
    } else {
      reason = await this.diagnose();
    }
    if (this.state === "done") return;
    this.emit("notice", { message: reason, tone: "warn" });
    const until = Date.now() + delay * 1000;
    // The reason goes to the alert (above); the status line stays short.
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      if (this.finishing) {
        this.setState("finishing", `Waiting to finish the last words · retry in ${left} s…`, "warn");
      } else {
        this.setState("waiting", `Not connected · retrying in ${left} s (audio is kept)…`, "warn");
      }
    };
    tick();
    this.retryTimer = setInterval(() => {
      if (Date.now() >= until) {
        clearInterval(this.retryTimer);
        this.connect();
      } else {
        tick();
      }
    }, 250);
  }

  // The WebSocket failed before opening, and browsers hide the HTTP answer (503 when the server
  // is full, 429 for too many sessions, 401 without a valid key): ask plain HTTP what is up.
  async diagnose() {
    try {
      const health = await fetch("/health", { cache: "no-store" });
      if (health.status === 503) return "The server is starting or busy (HTTP 503).";
      if (!health.ok) return `The server answered HTTP ${health.status}.`;
      const probe = await fetch("/v1/sessions?limit=1", { cache: "no-store", headers: authHeaders() });
      if (probe.status === 401 || probe.status === 403) {
        return "The server needs a valid API key (use the API key button at the top).";
      }
      return "The server turned the stream away: it is busy (HTTP 503) or this browser has too "
        + "many sessions open (HTTP 429).";
    } catch {
      return "The server cannot be reached.";
    }
  }

  end(message, tone = "info") {
    if (this.state === "done") return;
    clearTimeout(this.finishTimer);
    clearInterval(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    this.state = "done";
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "client done");
    this.emit("ended", { message, tone });
  }
}
