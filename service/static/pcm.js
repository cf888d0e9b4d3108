// Conversion math for microphone capture: any sample rate -> 16 kHz mono PCM16.
//
// Plain ES module with no DOM or Web Audio dependency, so that the AudioWorklet (worklet.js)
// imports it on the audio thread and the tests load it in a page and check it on known input.

export const TARGET_RATE = 16000;

// Kernel table resolution (entries per input sample); linear interpolation between entries keeps
// the kernel error far below 16-bit quantisation.
const TABLE_STEPS = 512;

/**
 * Streaming band-limited resampler (windowed-sinc interpolation, Blackman window).
 *
 * Output sample n sits at input time n * inputRate / outputRate. When downsampling, the kernel's
 * cutoff sits below the output Nyquist frequency, so content above 8 kHz (at 16 kHz out) is removed
 * instead of folding back into the speech band. Input before the first sample counts as silence;
 * `flush()` pads the end with silence, so a stream of N input samples yields exactly
 * ceil(N * outputRate / inputRate) output samples in total.
 */
export class Resampler {
  constructor(inputRate, outputRate = TARGET_RATE, { zeroCrossings = 16, rolloff = 0.92 } = {}) {
    if (!(inputRate > 0 && outputRate > 0)) throw new RangeError("sample rates must be positive");
    this.inputRate = inputRate;
    this.outputRate = outputRate;
    this.step = inputRate / outputRate;
    this.passthrough = inputRate === outputRate;
    // Cutoff in cycles per input sample.
    const cutoff = 0.5 * Math.min(1, outputRate / inputRate) * rolloff;
    this.halfWidth = zeroCrossings / (2 * cutoff);
    this.table = kernelTable(cutoff, this.halfWidth);
    const history = Math.ceil(this.halfWidth) + 1;
    this.buffer = new Float32Array(4096 + history);
    this.bufferStart = -history; // absolute input index of buffer[0]
    this.bufferLength = history; // starts with `history` samples of silence
    this.received = 0; // input samples seen
    this.produced = 0; // output samples emitted
  }

  /** Feeds input samples; returns the output samples that are now complete. */
  process(input) {
    if (this.passthrough) {
      this.received += input.length;
      this.produced += input.length;
      return Float32Array.from(input);
    }
    this.append(input);
    this.received += input.length;
    return this.emit(this.received);
  }

  /** Ends the stream: returns the remaining output, computed with silence after the end. */
  flush() {
    if (this.passthrough) return new Float32Array(0);
    const end = this.received;
    this.append(new Float32Array(Math.ceil(this.halfWidth) + 1));
    const out = this.emit(end);
    this.bufferLength = 0;
    return out;
  }

  append(input) {
    const needed = this.bufferLength + input.length;
    if (needed > this.buffer.length) {
      const grown = new Float32Array(Math.max(needed, this.buffer.length * 2));
      grown.set(this.buffer.subarray(0, this.bufferLength));
      this.buffer = grown;
    }
    this.buffer.set(input, this.bufferLength);
    this.bufferLength += input.length;
  }

  // Emits the outputs before input index `end` whose kernel support is buffered, then drops the
  // input that no later output reaches back to.
  emit(end) {
    const { buffer, table, halfWidth, step } = this;
    const available = this.bufferStart + this.bufferLength; // one past the last buffered sample
    let n = this.produced;
    while (n * step < end && n * step + halfWidth < available) n += 1;
    const out = new Float32Array(n - this.produced);
    for (let i = 0; i < out.length; i += 1) {
      const time = (this.produced + i) * step;
      const first = Math.max(Math.ceil(time - halfWidth), this.bufferStart);
      const last = Math.floor(time + halfWidth);
      let sum = 0;
      let weights = 0;
      for (let k = first; k <= last; k += 1) {
        const position = Math.abs(time - k) * TABLE_STEPS;
        const index = Math.floor(position);
        if (index + 1 >= table.length) continue;
        const fraction = position - index;
        const weight = table[index] + (table[index + 1] - table[index]) * fraction;
        sum += buffer[k - this.bufferStart] * weight;
        weights += weight;
      }
      out[i] = weights > 0 ? sum / weights : 0;
    }
    this.produced = n;
    // Keep what the next output's kernel reaches back to.
    const keepFrom = Math.floor(n * step - halfWidth) - 1;
    const drop = Math.min(Math.max(0, keepFrom - this.bufferStart), this.bufferLength);
    if (drop > 0) {
      buffer.copyWithin(0, drop, this.bufferLength);
      this.bufferLength -= drop;
      this.bufferStart += drop;
    }
    return out;
  }
}

function kernelTable(cutoff, halfWidth) {
  const size = Math.ceil(halfWidth * TABLE_STEPS) + 2;
  const table = new Float32Array(size);
  for (let i = 0; i < size; i += 1) {
    const t = i / TABLE_STEPS;
    if (t >= halfWidth) break;
    const x = 2 * cutoff * t;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const w = t / halfWidth; // 0..1 from the centre to the edge
    const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
    table[i] = 2 * cutoff * sinc * blackman;
  }
  return table;
}

/** Converts float samples in [-1, 1] to signed 16-bit integers, clipping and rounding. */
export function floatToPcm16(samples, out = new Int16Array(samples.length)) {
  for (let i = 0; i < samples.length; i += 1) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = Math.round(s < 0 ? s * 32768 : s * 32767);
  }
  return out;
}

/** Mixes the channels of one Web Audio block down to mono (returns the only channel as is). */
export function mixToMono(channels) {
  if (channels.length === 1) return channels[0];
  const mono = new Float32Array(channels[0].length);
  for (const channel of channels) {
    for (let i = 0; i < mono.length; i += 1) mono[i] += channel[i] / channels.length;
  }
  return mono;
}

/**
 * Collects PCM16 samples into frames of a fixed size (e.g. 100 ms = 1600 samples at 16 kHz) and
 * measures each frame's level, so the socket sends few, even messages.
 */
export class FrameBuilder {
  constructor(frameSamples) {
    this.frameSamples = frameSamples;
    this.reset();
  }

  reset() {
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }

  /** Adds float samples; returns the frames completed by them. */
  push(samples) {
    const frames = [];
    let offset = 0;
    while (offset < samples.length) {
      const take = Math.min(samples.length - offset, this.frameSamples - this.filled);
      const part = samples.subarray(offset, offset + take);
      floatToPcm16(part, this.frame.subarray(this.filled, this.filled + take));
      for (let i = 0; i < part.length; i += 1) {
        const s = part[i];
        this.sumSquares += s * s;
        const magnitude = Math.abs(s);
        if (magnitude > this.peak) this.peak = magnitude;
      }
      this.filled += take;
      offset += take;
      if (this.filled === this.frameSamples) frames.push(this.take());
    }
    return frames;
  }

  /** Returns the incomplete frame (possibly empty) and starts a new one. */
  drain() {
    return this.take();
  }

  take() {
    const pcm = this.filled === this.frameSamples ? this.frame : this.frame.slice(0, this.filled);
    const frame = {
      pcm,
      rms: this.filled > 0 ? Math.sqrt(this.sumSquares / this.filled) : 0,
      peak: this.peak,
    };
    this.reset();
    return frame;
  }
}
