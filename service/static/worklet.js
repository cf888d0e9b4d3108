// AudioWorklet processor "pcm16-capture": microphone audio -> 16 kHz mono PCM16 frames.
//
// Runs on the audio rendering thread at the context's own rate (`sampleRate`, a global of the
// worklet scope, usually 44.1 or 48 kHz). It mixes to mono, resamples to 16 kHz and posts one
// message per frame to the page: {type: "audio", pcm: ArrayBuffer of Int16 (transferred), rms,
// peak}. The page sends each `pcm` as one binary WebSocket frame. On {type: "flush"} it posts the
// resampler's tail and the incomplete frame, then {type: "flushed"}, and stops processing.
// The conversion math lives in pcm.js so that tests can check it outside the audio thread.

import { FrameBuilder, mixToMono, Resampler, TARGET_RATE } from "./pcm.js";

class Pcm16CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = options?.processorOptions?.frameMs ?? 100;
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.frames = new FrameBuilder(Math.round((TARGET_RATE * frameMs) / 1000));
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data?.type === "flush" && this.running) this.flush();
    };
  }

  post(frame) {
    const buffer = frame.pcm.buffer.byteLength === frame.pcm.byteLength
      ? frame.pcm.buffer
      : frame.pcm.slice().buffer;
    this.port.postMessage({ type: "audio", pcm: buffer, rms: frame.rms, peak: frame.peak }, [
      buffer,
    ]);
  }

  flush() {
    this.running = false;
    for (const frame of this.frames.push(this.resampler.flush())) this.post(frame);
    const tail = this.frames.drain();
    if (tail.pcm.length > 0) this.post(tail);
    this.port.postMessage({ type: "flushed" });
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    // No channels means no source is connected (yet): nothing to capture in this block.
    if (channels && channels.length > 0) {
      const samples = this.resampler.process(mixToMono(channels));
      for (const frame of this.frames.push(samples)) this.post(frame);
    }
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16CaptureProcessor);
