"""
RTP-like voice streams for the lab and the benchmark, run as a program in a
namespace (`python -m allworx.tests.lab.voicestreams receive|send ...`):

- `receive HOST PORT STREAMS SECONDS`: binds STREAMS consecutive UDP ports,
  prints `ready`, then counts each stream's packets until SECONDS after the
  first packet (or every stream's last packet came), and prints one JSON
  line: per stream `received`, `lost` (from the sequence numbers),
  `jitter_ms` (RFC 3550 interarrival jitter) and `delay_ms` (one-way:
  namespaces share CLOCK_MONOTONIC) p50/p99/max.
- `send HOST PORT STREAMS SECONDS [--pps 50] [--size 172] [--tos 0xb8]`:
  STREAMS sockets, each sending SIZE-byte payloads (an RTP header, its
  sequence number, the send time) at PPS on an absolute schedule; prints
  JSON with the packets sent.
"""

import json
import os
import socket
import struct
import sys
import time

HEAD = struct.Struct("!BBHIIIQd")   # RTP header (12), stream, seq, send time
END_TYPE = 127                      # the last packet of a stream


def _percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def receive(host, port, streams, seconds):
    socks = []
    for i in range(streams):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((host, port + i))
        s.setblocking(False)
        socks.append(s)
    import selectors
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    print("ready", flush=True)
    stats = [{"received": 0, "last_seq": -1, "ended": False, "delays": [], "jitter": 0.0,
              "transit": None} for _ in range(streams)]
    first = None
    while True:
        now = time.monotonic()
        if first is not None and (now - first > seconds + 3 or all(s["ended"] for s in stats)):
            break
        for key, _ in sel.select(timeout=0.5 if first is not None else 30):
            data = key.fileobj.recv(2048)
            arrival = time.monotonic()
            if len(data) < HEAD.size:
                continue
            pt, _, _, _, _, stream, seq, sent = HEAD.unpack_from(data)
            st = stats[key.data]
            if (pt & 0x7F) == END_TYPE:
                st["ended"] = True
                st["last_seq"] = max(st["last_seq"], seq - 1)
                continue
            if first is None:
                first = arrival
            st["received"] += 1
            st["last_seq"] = max(st["last_seq"], seq)
            transit = arrival - sent
            st["delays"].append(transit * 1000.0)
            if st["transit"] is not None:
                st["jitter"] += (abs(transit - st["transit"]) - st["jitter"]) / 16.0
            st["transit"] = transit
        if first is None and time.monotonic() - now > 30:
            break
    out = []
    for st in stats:
        expected = st["last_seq"] + 1
        out.append({"received": st["received"], "lost": max(0, expected - st["received"]),
                    "jitter_ms": round(st["jitter"] * 1000.0, 3),
                    "delay_ms": {"p50": _r(_percentile(st["delays"], 50)),
                                 "p99": _r(_percentile(st["delays"], 99)),
                                 "max": _r(max(st["delays"]) if st["delays"] else None)}})
    print(json.dumps({"streams": out}), flush=True)


def _r(value):
    return None if value is None else round(value, 3)


def send(host, port, streams, seconds, pps=50, size=172, tos=0xB8):
    socks = []
    for _ in range(streams):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        socks.append(s)
    ssrc = struct.unpack("!I", os.urandom(4))[0]
    count = int(seconds * pps)
    pad = b"\x55" * max(0, size - HEAD.size)
    start = time.monotonic() + 0.02
    errors = 0
    for seq in range(count):
        due = start + seq / float(pps)
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for i, s in enumerate(socks):
            packet = HEAD.pack(0x80, 0, seq & 0xFFFF, seq * 160, ssrc + i, i, seq,
                               time.monotonic()) + pad
            try:
                s.sendto(packet, (host, port + i))
            except OSError:
                errors += 1
    for _ in range(3):      # the end, said three times (it may be lost too)
        for i, s in enumerate(socks):
            s.sendto(HEAD.pack(0x80 | END_TYPE, END_TYPE, 0, 0, 0, i, count, 0.0), (host, port + i))
    print(json.dumps({"sent": count, "streams": streams, "send_errors": errors}), flush=True)


def main(argv):
    kind, host, port, streams, seconds = argv[:5]
    opts = dict(zip(argv[5::2], argv[6::2]))
    if kind == "receive":
        receive(host, int(port), int(streams), float(seconds))
    else:
        send(host, int(port), int(streams), float(seconds), pps=int(opts.get("--pps", 50)),
             size=int(opts.get("--size", 172)), tos=int(opts.get("--tos", "0xb8"), 0))


if __name__ == "__main__":
    main(sys.argv[1:])
