// Microphone capture: getUserMedia -> AudioWorklet (worklet.js) -> 16 kHz PCM16 frames.

export class MicrophoneError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

function explain(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MicrophoneError(
        "denied",
        "Microphone access was refused. Allow it for this site (the icon in the address bar) "
          + "and press Start again.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new MicrophoneError("missing", "No microphone was found. Plug one in and try again.");
    case "NotReadableError":
    case "AbortError":
      return new MicrophoneError(
        "busy",
        "The microphone could not be opened; another application may be using it.",
      );
    default:
      return new MicrophoneError("failed", `The microphone could not be opened: ${error}`);
  }
}

// Waits for a suspended context to run; a browser that blocks audio leaves the promise pending.
async function resumed(context) {
  let timer;
  const blocked = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("the browser kept audio processing paused")), 3000);
  });
  try {
    await Promise.race([context.resume(), blocked]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Opens the microphone and starts converting. `onFrame(pcm: Int16Array, rms, peak)` receives
 * 16 kHz mono frames of `frameMs`; `onEnded()` is called when the device goes away.
 * Returns {sampleRate, flush(), close()}; flush() delivers the last samples before resolving.
 */
export async function openMicrophone({ onFrame, onEnded, frameMs = 100 }) {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw new MicrophoneError(
      "insecure",
      "Browsers only allow the microphone on secure pages: open Chorus over https:// or at "
        + "http://localhost.",
    );
  }
  if (typeof AudioWorkletNode === "undefined") {
    throw new MicrophoneError("unsupported", "This browser cannot process audio (no AudioWorklet).");
  }
  // Created before the first await, while the click that called us still counts as a user
  // gesture, so that browsers' autoplay rules let it run. It runs at the device's own rate and
  // the worklet resamples (asking for a 16 kHz context fails in Firefox when the microphone
  // runs at another rate).
  const context = new AudioContext({ latencyHint: "interactive" });
  try {
    await context.audioWorklet.addModule(new URL("./worklet.js", import.meta.url));
  } catch (error) {
    context.close().catch(() => {});
    throw new MicrophoneError("failed", `Audio processing could not start: ${error}`);
  }
  // The microphone opens last, once everything is ready to take its first samples.
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (error) {
    context.close().catch(() => {});
    throw explain(error);
  }
  let flushed = null;
  try {
    if (context.state !== "running") await resumed(context);
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm16-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      channelInterpretation: "speakers",
      processorOptions: { frameMs },
    });
    node.port.onmessage = (event) => {
      const message = event.data;
      if (message.type === "audio") onFrame(new Int16Array(message.pcm), message.rms, message.peak);
      else if (message.type === "flushed") flushed?.();
    };
    source.connect(node);
    // The node writes silence; connecting it to the output keeps it pulled in every browser.
    node.connect(context.destination);
    for (const track of stream.getAudioTracks()) {
      track.addEventListener("ended", () => onEnded?.());
    }
    let closed = false;
    return {
      sampleRate: context.sampleRate,
      label: stream.getAudioTracks()[0]?.label ?? "",
      flush() {
        if (closed) return Promise.resolve();
        return new Promise((resolve) => {
          const timer = setTimeout(resolve, 1000);
          flushed = () => {
            clearTimeout(timer);
            resolve();
          };
          node.port.postMessage({ type: "flush" });
        });
      },
      close() {
        if (closed) return;
        closed = true;
        for (const track of stream.getTracks()) track.stop();
        source.disconnect();
        node.disconnect();
        node.port.onmessage = null;
        context.close().catch(() => {});
      },
    };
  } catch (error) {
    for (const track of stream.getTracks()) track.stop();
    context.close().catch(() => {});
    throw new MicrophoneError("failed", `Audio processing could not start: ${error}`);
  }
}
