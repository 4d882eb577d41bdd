# -*- test-case-name: allworx.tests.voice.test_voice -*-
"""WAV files of 8 kHz mono 16-bit PCM: what voicemail attaches and what greetings are."""

import audioop  # noqa: deprecated in 3.11, still the fast resampler at hand
import io
import wave

RATE = 8000


class WavError(ValueError):
    """A file that is not a WAV this server can play; the text says why."""


def to_wav(pcm, rate=RATE):
    """Bytes of a WAV file holding mono 16-bit `pcm` at `rate`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def from_wav(data):
    """Mono 16-bit PCM at 8 kHz from any PCM WAV (mixes channels, resamples)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise WavError("not a PCM WAV file: %s" % e)
    if width not in (1, 2, 3, 4):
        raise WavError("unsupported sample width %d" % width)
    if width == 1:
        frames = audioop.bias(frames, 1, -128)
    if width != 2:
        frames = audioop.lin2lin(frames, width, 2)
    if channels == 2:
        frames = audioop.tomono(frames, 2, 0.5, 0.5)
    elif channels != 1:
        raise WavError("unsupported channel count %d" % channels)
    if rate != RATE:
        frames, _ = audioop.ratecv(frames, 2, 1, rate, RATE, None)
    return frames


def duration(pcm, rate=RATE):
    """Seconds of mono 16-bit audio."""
    return len(pcm) / 2.0 / rate
