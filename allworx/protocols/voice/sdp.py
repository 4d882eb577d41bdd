# -*- test-case-name: allworx.tests.voice.test_voice -*-
"""
Just enough SDP (RFC 4566, offer/answer RFC 3264) for the server's own end of
a call: read the caller's audio address, codecs and telephone-event type,
and write an answer with one G.711 codec.
"""

import attr

from allworx.protocols.voice.g711 import NAMES, PCMA, PCMU


class SdpError(ValueError):
    """An offer the server cannot answer; the text says why."""


@attr.s(frozen=True, slots=True)
class AudioOffer:
    """The audio part of an offer: where to send, which codec, DTMF payload type."""

    host = attr.ib()
    port = attr.ib()
    payload_type = attr.ib()
    event_type = attr.ib(default=None)


def parse_offer(body):
    """The AudioOffer of an SDP body; SdpError without usable G.711 audio."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8")
    session_host, media_host, port, formats, rtpmap = None, None, None, [], {}
    in_audio = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("c="):
            parts = line[2:].split()
            if len(parts) == 3:
                if port is None and not in_audio:
                    session_host = parts[2].split("/")[0]
                elif in_audio:
                    media_host = parts[2].split("/")[0]
        elif line.startswith("m="):
            parts = line[2:].split()
            if parts and parts[0] == "audio" and port is None and len(parts) >= 4:
                if not parts[1].isdigit():
                    raise SdpError("bad audio port %r" % parts[1])
                port = int(parts[1])
                formats = [int(f) for f in parts[3:] if f.isdigit()]
                in_audio = True
            else:
                in_audio = False
        elif line.startswith("a=rtpmap:") and in_audio:
            pt, _, enc = line[9:].partition(" ")
            if pt.isdigit():
                rtpmap[int(pt)] = enc.strip().lower()
    if port is None:
        raise SdpError("no audio stream in the offer")
    host = media_host or session_host
    if host is None:
        raise SdpError("no connection address in the offer")
    codec = next((f for f in formats if f in (PCMU, PCMA)), None)
    if codec is None:
        raise SdpError("the offer has neither PCMU nor PCMA")
    event = next((f for f in formats if rtpmap.get(f, "").startswith("telephone-event/8000")), None)
    return AudioOffer(host, port, codec, event)


def make_answer(address, port, payload_type, event_type=None, session_id=1):
    """An SDP answer sending and receiving `payload_type` (and DTMF events) at address:port."""
    fmts = [str(payload_type)] + ([str(event_type)] if event_type is not None else [])
    lines = ["v=0", "o=allworx %d %d IN IP4 %s" % (session_id, session_id, address),
             "s=allworx", "c=IN IP4 %s" % address, "t=0 0",
             "m=audio %d RTP/AVP %s" % (port, " ".join(fmts)),
             "a=rtpmap:%d %s/8000" % (payload_type, NAMES[payload_type])]
    if event_type is not None:
        lines += ["a=rtpmap:%d telephone-event/8000" % event_type,
                  "a=fmtp:%d 0-15" % event_type]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
