# -*- test-case-name: allworx.tests.voice.test_music -*-
"""
Music on hold: what an outside caller hears while the office holds them.

A WAV under `data_dir/voicemail/music.wav` (8 kHz mono 16-bit, as the
greetings are) when the office has put one there; otherwise a short, soft
melody made here (a few chords of sine tones with gentle fades), so the
caller knows the line is alive. Encoded once per codec and looped in
20 ms frames for the RTP relay's hold (`frame()`, `payload_type`).
"""

import math
import os
import struct

from allworx.protocols.voice import g711
from allworx.protocols.voice.wav import from_wav

RATE = 8000
FRAME = 160
# (frequencies of one chord, milliseconds): C, A minor, F, G, each twice as long at the end.
MELODY = [((261.6, 329.6, 392.0), 900), ((220.0, 261.6, 329.6), 900),
          ((174.6, 220.0, 261.6), 900), ((196.0, 246.9, 293.7), 900),
          ((261.6, 329.6, 392.0), 1800), ((0,), 400)]

_ENCODED = {}


def melody_pcm(amplitude=2500):
    """The built-in melody as 8 kHz 16-bit PCM."""
    samples = []
    for chord, ms in MELODY:
        n = RATE * ms // 1000
        fade = min(400, n // 4)
        for i in range(n):
            level = min(1.0, i / fade if fade else 1.0, (n - i) / fade if fade else 1.0)
            value = sum(math.sin(2 * math.pi * f * i / RATE) for f in chord if f) / max(1, len(chord))
            samples.append(int(amplitude * level * value))
    return struct.pack("<%dh" % len(samples), *samples)


def music_pcm(voicemail_dir=None):
    """The office's music (music.wav) when it is there and readable, else the melody."""
    if voicemail_dir:
        path = os.path.join(voicemail_dir, "music.wav")
        try:
            with open(path, "rb") as f:
                pcm = from_wav(f.read())
            if pcm:
                return pcm
        except (OSError, ValueError):
            pass
    return melody_pcm()


class MusicSource:
    """Loops G.711 frames of the music for one held caller."""

    def __init__(self, payload_type=g711.PCMU, voicemail_dir=None):
        self.payload_type = payload_type
        key = (payload_type, voicemail_dir)
        codes = _ENCODED.get(key)
        if codes is None:
            codes = g711.encode(music_pcm(voicemail_dir), payload_type)
            codes += bytes([g711.silence(payload_type)]) * (-len(codes) % FRAME)
            _ENCODED[key] = codes
        self.codes = codes
        self.at = 0

    def frame(self):
        """The next 20 ms (160 bytes) of music."""
        chunk = self.codes[self.at:self.at + FRAME]
        self.at = (self.at + FRAME) % len(self.codes)
        return chunk
