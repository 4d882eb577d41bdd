# -*- test-case-name: allworx.tests.voice.test_voice -*-
"""
The voicemail system's prompts: spoken by espeak-ng when it is installed
(rendered once into `data_dir/voicemail/prompts/`, in a thread), otherwise
tone patterns, so the server works without it. Prompts are 8 kHz 16-bit PCM.
"""

import math
import os
import shutil
import struct
import subprocess

from twisted.logger import Logger

from allworx.atomicfile import ensure_directory, write_atomically
from allworx.protocols.voice.wav import RATE, WavError, from_wav

log = Logger()

PROMPTS = {
    "greeting": "The person you are calling is not available. Please leave a message after the tone.",
    "enter_pin": "Please enter your PIN, then press pound.",
    "enter_extension": "Please enter your extension, then press pound.",
    "bad_pin": "That PIN is not correct.",
    "no_messages": "You have no more messages.",
    "options": "Press 5 to replay, 7 to delete, 9 to save, 6 for the next message, "
               "0 to record your greeting, star for these options.",
    "deleted": "Message deleted.",
    "saved": "Message saved.",
    "record_greeting": "Record your greeting after the tone, then press pound.",
    "greeting_saved": "Your greeting is saved.",
    "goodbye": "Goodbye.",
}

# Tone fallbacks: (frequency Hz, milliseconds) pairs; 0 Hz is silence.
_TONES = {
    "greeting": [(440, 300), (0, 150), (440, 300), (0, 300)],
    "enter_pin": [(660, 150), (0, 100), (660, 150), (0, 200)],
    "enter_extension": [(550, 150), (0, 100), (550, 150), (0, 200)],
    "bad_pin": [(300, 400), (0, 200)],
    "no_messages": [(400, 200), (0, 100), (300, 300), (0, 200)],
    "options": [(500, 100), (0, 100)] * 3,
    "deleted": [(350, 250), (0, 150)],
    "saved": [(700, 250), (0, 150)],
    "record_greeting": [(600, 200), (0, 200)],
    "greeting_saved": [(700, 150), (0, 50), (900, 150), (0, 150)],
    "goodbye": [(500, 150), (400, 150), (0, 100)],
}


def tone(frequency, milliseconds, amplitude=8000):
    """A sine tone (or silence for 0 Hz) as 8 kHz 16-bit PCM."""
    n = RATE * milliseconds // 1000
    if frequency == 0:
        return b"\0\0" * n
    step = 2 * math.pi * frequency / RATE
    return struct.pack("<%dh" % n, *(int(amplitude * math.sin(step * i)) for i in range(n)))


BEEP = None


def beep():
    """The 'record after the tone' beep: 1 kHz for 400 ms."""
    global BEEP
    if BEEP is None:
        BEEP = tone(1000, 400) + tone(0, 100)
    return BEEP


def tone_prompt(name, tones=None):
    pattern = (_TONES if tones is None else tones).get(name, [(480, 200)])
    return b"".join(tone(f, ms) for f, ms in pattern)


def find_espeak():
    """The espeak-ng (or espeak) program, or None."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def speak(text, path, espeak=None):
    """
    Speak `text` with espeak-ng into the WAV file `path`, written atomically
    (blocking: run it in a thread). False when espeak-ng is not installed;
    raises OSError or SubprocessError when it fails.
    """
    espeak = espeak or find_espeak()
    if espeak is None:
        return False
    spoken = path + ".espeak"
    try:
        subprocess.run([espeak, "-s", "150", "-w", spoken, text], check=True,
                       timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(spoken, "rb") as f:
            write_atomically(path, f.read(), mode=0o600)
    finally:
        _remove(spoken)
    return True


class PromptLibrary:
    """
    Prompt audio by name. Starts with tones; `render()` (blocking: call it in
    a thread) speaks the texts with espeak-ng into files and switches to them.
    `texts` and `tones` are the voicemail prompts unless given (the
    attendant has its own); `speak(text, path)` is how a text becomes a file.
    """

    def __init__(self, directory, texts=None, tones=None, speak=None):
        self.directory = directory
        self.texts = PROMPTS if texts is None else texts
        self.speak = speak
        self.audio = {name: tone_prompt(name, tones) for name in self.texts}
        self.spoken = False
        self._load()

    def get(self, name):
        return self.audio[name]

    def _path(self, name):
        return os.path.join(self.directory, name + ".wav")

    def _load(self):
        found = 0
        for name in self.texts:
            try:
                with open(self._path(name), "rb") as f:
                    self.audio[name] = from_wav(f.read())
                found += 1
            except (OSError, WavError):
                pass
        self.spoken = found == len(self.texts)

    def render(self):
        """Speak every missing prompt with espeak-ng; returns how many were made."""
        if self.spoken:
            return 0
        espeak = None
        if self.speak is None:
            espeak = find_espeak()
            if espeak is None:
                return 0
        ensure_directory(self.directory)
        made = 0
        for name, text in self.texts.items():
            path = self._path(name)
            if os.path.exists(path):
                continue
            try:
                if self.speak is not None:
                    if not self.speak(text, path):
                        break
                else:
                    speak(text, path, espeak)
                made += 1
            except (OSError, subprocess.SubprocessError) as e:
                log.warn("espeak-ng could not render prompt {name}: {error}", name=name, error=str(e))
                return made
        self._load()
        return made


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
