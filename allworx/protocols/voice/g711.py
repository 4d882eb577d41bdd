# -*- test-case-name: allworx.tests.voice.test_voice -*-
"""
G.711 (ITU-T) mu-law and A-law: 16-bit linear PCM to 8-bit codes and back.

The tables are computed once from the standard's segment formulas; encoding
and decoding a buffer is one `bytes.translate`-like pass over an index.
"""

import array
import sys

PCMU = 0
PCMA = 8
NAMES = {PCMU: "PCMU", PCMA: "PCMA"}

_BIAS = 0x84
_CLIP = 32635


def _ulaw_encode_one(sample):
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _ulaw_decode_one(code):
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    sample = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -sample if sign else sample


def _alaw_encode_one(sample):
    sign = 0x80 if sample >= 0 else 0
    if sample < 0:
        sample = -sample - 1
    sample = min(sample, 32767) >> 3
    if sample < 32:
        code = sample >> 1
    else:
        exponent = sample.bit_length() - 5
        code = (exponent << 4) | ((sample >> exponent) & 0x0F)
    return (code | sign) ^ 0x55


def _alaw_decode_one(code):
    code ^= 0x55
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        sample = (mantissa << 4) + 8
    else:
        sample = ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if sign else -sample


_DECODE = {PCMU: array.array("h", [_ulaw_decode_one(c) for c in range(256)]),
           PCMA: array.array("h", [_alaw_decode_one(c) for c in range(256)])}
# Encoding tables indexed by the sample's top 14 bits (G.711 keeps at most 13-14).
_ENCODE = {PCMU: bytes(_ulaw_encode_one(((i << 2) - 65536) if i >= 8192 else (i << 2)) for i in range(16384)),
           PCMA: bytes(_alaw_encode_one(((i << 2) - 65536) if i >= 8192 else (i << 2)) for i in range(16384))}


def encode(pcm, payload_type=PCMU):
    """16-bit little-endian signed PCM bytes -> G.711 codes."""
    samples = array.array("h")
    samples.frombytes(pcm[:len(pcm) // 2 * 2])
    if sys.byteorder != "little":
        samples.byteswap()
    table = _ENCODE[payload_type]
    return bytes(table[(s & 0xFFFF) >> 2] for s in samples)


def decode(codes, payload_type=PCMU):
    """G.711 codes -> 16-bit little-endian signed PCM bytes."""
    table = _DECODE[payload_type]
    out = array.array("h", (table[c] for c in codes))
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def silence(payload_type=PCMU):
    """The code for a zero sample."""
    return _ENCODE[payload_type][0]
