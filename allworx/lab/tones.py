"""
Tones in WAV files: the lab's phones send a sine and baresip's sndfile
module writes what each call heard; these tell which tone was heard and for
how long (Goertzel power over 50 ms windows). Used by `allworx lab call` to
say whether audio flowed both ways, and by the lab tests.
"""

import io
import math
import struct
import wave


def tone_wav(path, freq, seconds, amplitude=9000):
    n = int(8000 * seconds)
    frames = struct.pack("<%dh" % n, *(int(amplitude * math.sin(2 * math.pi * freq * i / 8000))
                                       for i in range(n)))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)


def goertzel_power(samples, rate, freq):
    """Relative power of `freq` in `samples` (normalised by total energy)."""
    if not samples:
        return 0.0
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    energy = sum(x * x for x in samples) or 1.0
    return power / (energy * len(samples) / 2)


def pcm_so_far(path):
    """
    (samples, rate) of a WAV file baresip may still be writing: its header's
    sizes are only final at the close, so the data runs to the end of file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return [], 0
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return [], 0
    pos, rate, channels = 12, 0, 1
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and pos + 16 <= len(data):
            channels, rate = struct.unpack("<HI", data[pos + 10:pos + 16])
        elif chunk == b"data":
            raw = data[pos + 8:]
            samples = struct.unpack("<%dh" % (len(raw) // 2), raw[:len(raw) // 2 * 2])
            return list(samples[::channels]), rate
        pos += 8 + size + (size & 1)
    return [], rate


def longest_tone(samples, rate, freq, start=0):
    """
    Seconds of the longest run of `freq` in `samples` from `start` (50 ms
    windows), and the sample index where that run ends.
    """
    win = max(1, rate // 20)
    best = (0, start)
    run = 0
    for i in range(start, len(samples) - win + 1, win):
        if goertzel_power(samples[i:i + win], rate, freq) > 0.5:
            run += 1
            if run * win > best[0]:
                best = (run * win, i + win)
        else:
            run = 0
    return (best[0] / rate if rate else 0.0), best[1]


def wav_samples(data):
    with wave.open(io.BytesIO(data), "rb") as w:
        channels, rate = w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = struct.unpack("<%dh" % (len(raw) // 2), raw)
    if channels == 2:
        samples = samples[::2]
    return list(samples), rate
