"""The page's microphone conversion (service/static/pcm.js, worklet.js) checked in Chromium.

The conversion math is a plain ES module, so the page loads it and feeds known signals: a 48 kHz
(and a 44.1 kHz) sine must come out as 16 kHz Int16 samples of the same sine, a tone above 8 kHz
must be filtered out rather than folded back, and the AudioWorklet itself, run in an
OfflineAudioContext at 48 kHz, must post 100 ms frames of 1,600 PCM16 samples of its input.
The static files are served by `web_routes()` on a real hypercorn server over loopback.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import trio
from starlette.applications import Starlette
from support.web.browser import open_page
from support.web.server import serve_on_loopback

from service.routes.web import web_routes

# Runs in the page: resample a sine through Resampler + FrameBuilder in 128-sample blocks (what
# the audio thread sees) and return the frames as plain arrays.
CONVERT_SINE = """
async ([inputRate, frequency, amplitude, seconds]) => {
  const { Resampler, FrameBuilder } = await import("/static/pcm.js");
  const total = Math.round(inputRate * seconds);
  const input = new Float32Array(total);
  for (let i = 0; i < total; i += 1) {
    input[i] = amplitude * Math.sin((2 * Math.PI * frequency * i) / inputRate);
  }
  const resampler = new Resampler(inputRate, 16000);
  const builder = new FrameBuilder(1600);
  const frames = [];
  for (let i = 0; i < total; i += 128) {
    frames.push(...builder.push(resampler.process(input.subarray(i, i + 128))));
  }
  frames.push(...builder.push(resampler.flush()));
  frames.push(builder.drain());
  return frames.map((frame) => ({
    kind: frame.pcm.constructor.name,
    samples: Array.from(frame.pcm),
    rms: frame.rms,
  }));
}
"""

# Runs in the page: the real worklet in an OfflineAudioContext fed by an oscillator.
RENDER_WORKLET = """
async ([contextRate, frequency, amplitude, seconds]) => {
  const context = new OfflineAudioContext(1, Math.round(contextRate * seconds), contextRate);
  await context.audioWorklet.addModule("/static/worklet.js");
  const node = new AudioWorkletNode(context, "pcm16-capture", {
    channelCount: 1, channelCountMode: "explicit", processorOptions: { frameMs: 100 },
  });
  const frames = [];
  node.port.onmessage = (event) => {
    if (event.data.type === "audio") {
      frames.push({
        isArrayBuffer: event.data.pcm instanceof ArrayBuffer,
        samples: Array.from(new Int16Array(event.data.pcm)),
      });
    }
  };
  const oscillator = new OscillatorNode(context, { frequency });
  const gain = new GainNode(context, { gain: amplitude });
  oscillator.connect(gain).connect(node).connect(context.destination);
  oscillator.start(0);
  await context.startRendering();
  const expected = Math.floor((seconds * 16000 - 64) / 1600);
  for (let waited = 0; frames.length < expected && waited < 5000; waited += 20) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { sampleRate: context.sampleRate, frames };
}
"""


def expected_sine(count: int, frequency: float, amplitude: float) -> np.ndarray:
    n = np.arange(count)
    return amplitude * 32767 * np.sin(2 * math.pi * frequency * n / 16000)


def static_app() -> Starlette:
    return Starlette(routes=web_routes())


async def run_in_page(script: str, argument: list[float]) -> Any:
    async with serve_on_loopback(static_app()) as base_url:

        def drive() -> Any:
            with open_page(base_url) as page:
                return page.evaluate(script, argument)

        return await trio.to_thread.run_sync(drive)


async def test_48k_sine_becomes_16k_pcm16_frames() -> None:
    frames = await run_in_page(CONVERT_SINE, [48000, 440.0, 0.5, 1.0])

    assert {frame["kind"] for frame in frames} == {"Int16Array"}
    assert [len(frame["samples"]) for frame in frames] == [1600] * 10 + [0]
    output = np.concatenate([np.array(frame["samples"], dtype=np.int32) for frame in frames])
    assert len(output) == 16000  # one second at 16 kHz
    reference = expected_sine(len(output), 440.0, 0.5)
    # Away from the edges (where the filter sees silence beyond the signal) the samples are the
    # sine's, within a few quantisation steps.
    middle = slice(100, -100)
    assert np.max(np.abs(output[middle] - reference[middle])) <= 4
    assert frames[0]["rms"] == pytest.approx(0.5 / math.sqrt(2), abs=0.01)


async def test_44k1_input_and_aliasing() -> None:
    # 44.1 kHz does not divide evenly into 16 kHz: the count and the values must still be right.
    frames = await run_in_page(CONVERT_SINE, [44100, 1000.0, 0.8, 2.0])
    output = np.concatenate([np.array(frame["samples"], dtype=np.int32) for frame in frames])
    assert len(output) == 32000
    reference = expected_sine(len(output), 1000.0, 0.8)
    assert np.max(np.abs(output[100:-100] - reference[100:-100])) <= 6

    # A 12 kHz tone cannot exist at 16 kHz; a naive decimator would fold it to 4 kHz.
    frames = await run_in_page(CONVERT_SINE, [48000, 12000.0, 0.8, 1.0])
    output = np.concatenate([np.array(frame["samples"], dtype=np.int32) for frame in frames])
    assert len(output) == 16000
    assert np.sqrt(np.mean(output[100:-100].astype(np.float64) ** 2)) < 0.001 * 32767


async def test_clipping_and_rounding_to_int16() -> None:
    script = """
    async (values) => {
      const { floatToPcm16 } = await import("/static/pcm.js");
      return Array.from(floatToPcm16(Float32Array.from(values)));
    }
    """
    result = await run_in_page(script, [1.5, -1.5, 1.0, -1.0, 0.0, 0.5, -0.5, 1 / 65536])
    assert result == [32767, -32768, 32767, -32768, 0, 16384, -16384, 0]


async def test_worklet_posts_16k_pcm16_frames_from_a_48k_context() -> None:
    rendered = await run_in_page(RENDER_WORKLET, [48000, 440.0, 0.5, 1.2])

    assert rendered["sampleRate"] == 48000
    frames = rendered["frames"]
    # 1.2 s of input is 19,200 output samples; the filter holds back ~1 ms, so 11 whole frames.
    assert len(frames) == 11
    assert all(frame["isArrayBuffer"] for frame in frames)
    assert all(len(frame["samples"]) == 1600 for frame in frames)
    output = np.concatenate([np.array(frame["samples"], dtype=np.int32) for frame in frames])
    reference = expected_sine(len(output), 440.0, 0.5)
    assert np.max(np.abs(output[100:] - reference[100:])) <= 4
