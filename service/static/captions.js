// Transcript formats built in the browser from timed segments: [{start, end, text}] in seconds.

function pad(value, width = 2) {
  return String(value).padStart(width, "0");
}

function splitTime(seconds) {
  const totalMs = Math.max(0, Math.round(seconds * 1000));
  return {
    hours: Math.floor(totalMs / 3_600_000),
    minutes: Math.floor(totalMs / 60_000) % 60,
    seconds: Math.floor(totalMs / 1000) % 60,
    ms: totalMs % 1000,
  };
}

/** "HH:MM:SS,mmm" (SRT) or "HH:MM:SS.mmm" (WebVTT). */
export function cueTime(seconds, separator = ",") {
  const t = splitTime(seconds);
  return `${pad(t.hours)}:${pad(t.minutes)}:${pad(t.seconds)}${separator}${pad(t.ms, 3)}`;
}

/** Short clock for the page: "0:07.3", "12:04.0", "1:02:03.5". */
export function clock(seconds) {
  const totalTenths = Math.max(0, Math.round(seconds * 10));
  const tenths = totalTenths % 10;
  const whole = Math.floor(totalTenths / 10);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor(whole / 60) % 60;
  const secs = whole % 60;
  const head = hours > 0 ? `${hours}:${pad(minutes)}` : `${minutes}`;
  return `${head}:${pad(secs)}.${tenths}`;
}

/** Duration for people: "7.6 s", "3 min 05 s", "1 h 02 min". */
export function duration(seconds) {
  if (seconds < 59.95) return `${Math.max(0, seconds).toFixed(1)} s`;
  const whole = Math.round(seconds);
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min ${pad(whole % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${pad(minutes % 60)} min`;
}

function cues(segments) {
  return segments
    .map((segment) => ({ ...segment, text: String(segment.text ?? "").trim() }))
    .filter((segment) => segment.text.length > 0);
}

export function toSrt(segments) {
  return cues(segments)
    .map((cue, i) => `${i + 1}\n${cueTime(cue.start)} --> ${cueTime(cue.end)}\n${cue.text}\n`)
    .join("\n");
}

export function toVtt(segments) {
  const body = cues(segments)
    .map((cue) => `${cueTime(cue.start, ".")} --> ${cueTime(cue.end, ".")}\n${cue.text}\n`)
    .join("\n");
  return `WEBVTT\n\n${body}`;
}

export function toTxt(segments, { timestamps = false } = {}) {
  const lines = cues(segments).map((cue) =>
    timestamps ? `[${clock(cue.start)} - ${clock(cue.end)}] ${cue.text}` : cue.text,
  );
  return lines.length > 0 ? `${lines.join("\n")}\n` : "";
}

const FORMATS = {
  txt: { build: (segments) => toTxt(segments), type: "text/plain" },
  srt: { build: toSrt, type: "application/x-subrip" },
  vtt: { build: toVtt, type: "text/vtt" },
};

/** Saves the segments as a file in one of "txt", "srt", "vtt" (a download in the browser). */
export function download(segments, format, baseName) {
  const { build, type } = FORMATS[format];
  const blob = new Blob([build(segments)], { type: `${type};charset=utf-8` });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `${baseName}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
