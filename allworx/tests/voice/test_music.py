"""Tests of music on hold: the built-in melody, an office's own WAV, looping frames."""

import os

from twisted.trial import unittest

from allworx.protocols.voice import g711
from allworx.protocols.voice.greeting import tone
from allworx.protocols.voice.music import MusicSource, melody_pcm
from allworx.protocols.voice.wav import to_wav


class MusicTests(unittest.TestCase):

    def test_frames_are_20ms_and_loop(self):
        source = MusicSource(g711.PCMA)
        self.assertEqual(source.payload_type, g711.PCMA)
        total = len(source.codes) // 160
        frames = [source.frame() for _ in range(total + 1)]
        self.assertTrue(all(len(f) == 160 for f in frames))
        self.assertEqual(frames[0], frames[total])

    def test_the_melody_is_audible_and_not_clipped(self):
        pcm = melody_pcm()
        import array
        samples = array.array("h", pcm)
        self.assertGreater(max(samples), 1000)
        self.assertLess(max(abs(s) for s in samples), 32000)

    def test_an_offices_own_music_is_used(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "music.wav"), "wb") as f:
            f.write(to_wav(tone(440, 200)))
        source = MusicSource(g711.PCMU, directory)
        self.assertEqual(len(source.codes), 1600)
        self.assertEqual(source.codes, g711.encode(tone(440, 200), g711.PCMU))

    def test_a_broken_file_falls_back_to_the_melody(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "music.wav"), "wb") as f:
            f.write(b"not a wav")
        source = MusicSource(g711.PCMU, directory)
        self.assertGreater(len(source.codes), 1600)
