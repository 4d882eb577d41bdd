# -*- test-case-name: allworx.tests.voice.test_voice, allworx.tests.voice.test_relay -*-
"""
Just enough SDP (RFC 4566, offer/answer RFC 3264) for the server's own end of
a call: read the caller's audio address, codecs and telephone-event type,
and write an answer with one G.711 codec; for the media relay of outside
calls, rewrite a body's addresses to the relay's and read its direction.
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


# ---------------------------------------------------------------- a relay's rewriting

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
HOLD_ADDRESS = "0.0.0.0"


def _lines(body):
    """(content, line ending) of each line of an SDP body, bytes kept as they were."""
    text = body.decode("utf-8", "surrogateescape")
    for line in text.splitlines(True):
        content = line.rstrip("\r\n")
        yield content, line[len(content):]


def _audio_stream(parts):
    """True for the fields of an `m=audio` line with a port that is not 0."""
    return len(parts) >= 3 and parts[0] == "audio" and parts[1].split("/")[0] not in ("0", "")


def rewrite_sdp(body, host, port):
    """
    The SDP `body` with the relay's address in it: the origin (o=) and every
    connection line (c=, session and media level) name `host`, the first
    audio stream's m= port is `port`; the rest stays as it was (codecs,
    rtpmap and fmtp, telephone-event, direction, ptime). A c= of 0.0.0.0
    (RFC 2543 hold) is kept: it means "send nothing here". The relay carries
    one stream, so any other stream (video, a second audio m= line) is
    declined with port 0, and an a=rtcp line (the other side's own RTCP
    address) is dropped.
    """
    family = "IP6" if ":" in host else "IP4"
    out, audio_done = [], False
    for content, ending in _lines(body):
        kind = content[:2]
        if kind == "o=":
            parts = content[2:].split(" ")
            if len(parts) >= 6:
                parts[4:6] = [family, host]
                content = "o=" + " ".join(parts)
        elif kind == "c=":
            parts = content[2:].split(" ")
            if len(parts) >= 3 and parts[2] != HOLD_ADDRESS:
                content = "c=%s %s %s" % (parts[0], family, host)
        elif kind == "m=":
            parts = content[2:].split(" ")
            if not audio_done and _audio_stream(parts):
                parts[1] = str(port)
                audio_done = True
            elif len(parts) >= 2 and parts[1].split("/")[0] != "0":
                parts[1] = "0"
            content = "m=" + " ".join(parts)
        elif content.startswith("a=rtcp:"):
            continue
        out.append(content + ending)
    return "".join(out).encode("utf-8", "surrogateescape")


def sdp_direction(body):
    """
    sendrecv, sendonly, recvonly or inactive: the direction of the first
    audio stream (its own attribute, else the session's, else sendrecv). A
    connection address of 0.0.0.0 (the old way to hold) takes away receiving:
    sendrecv becomes sendonly, recvonly inactive. No audio stream with a port
    is inactive.
    """
    session_dir = media_dir = session_c = media_c = None
    section = "session"          # "session", "audio" (the stream that counts), "other"
    found = False
    for content, _ in _lines(body):
        kind = content[:2]
        if kind == "m=":
            if found:
                break
            found = _audio_stream(content[2:].split(" "))
            section = "audio" if found else "other"
        elif kind == "c=":
            parts = content[2:].split(" ")
            address = parts[2].split("/")[0] if len(parts) >= 3 else None
            if section == "session":
                session_c = address
            elif section == "audio":
                media_c = address
        elif kind == "a=" and content[2:] in DIRECTIONS:
            if section == "session":
                session_dir = content[2:]
            elif section == "audio":
                media_dir = content[2:]
    if not found:
        return "inactive"
    direction = media_dir or session_dir or "sendrecv"
    if (media_c or session_c) == HOLD_ADDRESS:
        direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
    return direction
