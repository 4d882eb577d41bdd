# -*- test-case-name: allworx.tests.voice.test_attendant_menu -*-
"""
The attendants' greetings: the `greeting` text spoken by espeak-ng, rendered
once into `DIRECTORY/NAME.wav` (8 kHz mono) beside `NAME.txt`, the text it
was made from, so a changed text is rendered again; or, when `greeting`
names a `.wav` file under data_dir, that file. Until a text is rendered (or
without espeak-ng) the greeting is a tone pattern.
"""

import os
import subprocess

from twisted.logger import Logger

from allworx.atomicfile import ensure_directory, write_atomically
from allworx.protocols.voice.attendant_menu import greeting_tones
from allworx.protocols.voice.greeting import speak, tone
from allworx.protocols.voice.wav import WavError, from_wav, to_wav

log = Logger()


def is_wav_name(greeting):
    return greeting.strip().lower().endswith(".wav")


class AttendantGreetings:
    """
    Greeting audio by attendant. `get(attendant)` never blocks on espeak:
    it answers the tones and says (`stale`) which texts want rendering;
    `render(attendants)` (blocking: in a thread) speaks them.
    `speak(text, path)` makes a WAV file of a text (False: no espeak-ng).
    """

    def __init__(self, directory, data_dir, speak=speak):
        self.directory = directory
        self.data_dir = data_dir
        self.speak = speak
        self.cache = {}          # name -> (what it was made from, PCM)
        self.tones = b"".join(tone(f, ms) for f, ms in greeting_tones())

    def _paths(self, name):
        return (os.path.join(self.directory, name + ".wav"),
                os.path.join(self.directory, name + ".txt"))

    def get(self, attendant):
        """The greeting's PCM (None: no greeting set: the menu prompt plays)."""
        text = attendant.greeting.strip()
        if not text:
            return None
        hit = self.cache.get(attendant.name)
        if hit is not None and hit[0] == text:
            return hit[1]
        pcm = self._wav_file(text) if is_wav_name(text) else self._spoken(attendant.name, text)
        if pcm is None:
            return self.tones
        self.cache[attendant.name] = (text, pcm)
        return pcm

    def stale(self, attendant):
        """Whether `attendant`'s text has no rendering of that same text."""
        text = attendant.greeting.strip()
        if not text or is_wav_name(text):
            return False
        return self._spoken(attendant.name, text) is None

    def _wav_file(self, name):
        root = os.path.realpath(self.data_dir)
        path = os.path.realpath(os.path.join(root, name))
        if not path.startswith(root + os.sep):
            log.warn("attendant greeting {name}: not under the data directory", name=name)
            return None
        try:
            with open(path, "rb") as f:
                return from_wav(f.read())
        except (OSError, WavError) as e:
            log.warn("attendant greeting {name} cannot be played: {error}", name=name, error=str(e))
            return None

    def _spoken(self, name, text):
        wav, txt = self._paths(name)
        try:
            with open(txt, encoding="utf-8") as f:
                if f.read() != text:
                    return None
            with open(wav, "rb") as f:
                return from_wav(f.read())
        except (OSError, UnicodeDecodeError, WavError):
            return None

    def render(self, attendants):
        """Speak every greeting text that has no rendering yet (blocking); how many were made."""
        made = 0
        for attendant in attendants:
            if not self.stale(attendant):
                continue
            text = attendant.greeting.strip()
            wav, txt = self._paths(attendant.name)
            ensure_directory(self.directory)
            spoken = wav + ".spoken"
            try:
                if not self.speak(text, spoken):
                    return made
                with open(spoken, "rb") as f:
                    pcm = from_wav(f.read())
                write_atomically(wav, to_wav(pcm), mode=0o600)
                write_atomically(txt, text.encode("utf-8"), mode=0o600)
                made += 1
            except (OSError, WavError, subprocess.SubprocessError) as e:
                log.warn("the greeting of attendant {name} could not be rendered: {error}",
                         name=attendant.name, error=str(e))
            finally:
                try:
                    os.unlink(spoken)
                except OSError:
                    pass
        return made
