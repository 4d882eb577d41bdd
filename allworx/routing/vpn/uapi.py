# -*- test-case-name: allworx.tests.vpn.test_uapi -*-
"""
wireguard-go's configuration protocol (the cross-platform UAPI of
WireGuard): text over its unix socket, /var/run/wireguard/IFNAME.sock.

A request is `set=1` or `get=1` then `key=value` lines and an empty line;
the answer (after `get=1`'s lines) is `errno=N` and an empty line. Keys are
hex, not base64. In a `set=1`, `public_key=` starts a peer and the lines
after it apply to that peer: `remove=true`, `update_only=true`, `endpoint=`,
`persistent_keepalive_interval=`, `replace_allowed_ips=true` then
`allowed_ip=` lines.

`set_text(changes)` renders a `peers.TunnelChanges` (pure, unit-tested);
`parse_get(text)` reads a `get=1` answer into the device's values and one
dict per peer; `UapiClient` sends requests over the socket, one connection
each, asynchronously.
"""

from twisted.internet import defer, protocol
from twisted.internet.endpoints import UNIXClientEndpoint

from allworx.vpnkeys import hex_key, key_hex

SOCKET_DIR = "/var/run/wireguard"


class UapiError(Exception):
    """wireguard-go refused a request (errno != 0) or could not be reached."""


def socket_path(ifname, socket_dir=SOCKET_DIR):
    return "%s/%s.sock" % (socket_dir, ifname)


def _peer_lines(peer, update_only=False, old=None):
    """The lines of one peer: all of it, or (with `old`) what differs from `old`."""
    lines = ["public_key=%s" % key_hex(peer.public_key)]
    if update_only:
        lines.append("update_only=true")
    if peer.endpoint is not None and (old is None or old.endpoint != peer.endpoint):
        lines.append("endpoint=%s:%d" % peer.endpoint)
    if old is None or old.keepalive != peer.keepalive:
        lines.append("persistent_keepalive_interval=%d" % peer.keepalive)
    if old is None or old.allowed_ips != peer.allowed_ips:
        lines.append("replace_allowed_ips=true")
        lines.extend("allowed_ip=%s" % net for net in peer.allowed_ips)
    return lines


def set_text(changes, replace_peers=False):
    """
    The `set=1` request for `changes`, or None when there is nothing to
    say. `replace_peers` first removes every peer the device has (the first
    configuration of an interface that may hold peers from before).
    """
    lines = ["set=1"]
    if changes.private_key is not None:
        lines.append("private_key=%s" % key_hex(changes.private_key))
    if changes.listen_port is not None:
        lines.append("listen_port=%d" % changes.listen_port)
    if replace_peers:
        lines.append("replace_peers=true")
    for change in changes.peers:
        old, new = change.old, change.new
        if new is None:
            lines += ["public_key=%s" % key_hex(old.public_key), "remove=true"]
        elif old is None:
            lines += _peer_lines(new)
        elif old.endpoint is not None and new.endpoint is None:
            # An endpoint cannot be unset: the peer is made anew, without one.
            lines += ["public_key=%s" % key_hex(old.public_key), "remove=true"]
            lines += _peer_lines(new)
        else:
            lines += _peer_lines(new, update_only=True, old=old)
    if len(lines) == 1:
        return None
    return "\n".join(lines) + "\n\n"


GET_TEXT = "get=1\n\n"

_PEER_INTS = ("last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes", "tx_bytes",
              "persistent_keepalive_interval", "protocol_version")


def parse_get(text):
    """
    A `get=1` answer: ({device key: value}, [peer dicts]). A peer dict has
    `public_key` (base64), `endpoint` (text or None), `allowed_ips` (list)
    and the integers last_handshake_time_sec, rx_bytes, tx_bytes, ... Raises
    UapiError when errno is not 0.
    """
    device, peers, current = {}, [], None
    errno = None
    for line in text.splitlines():
        if not line:
            continue
        k, sep, v = line.partition("=")
        if not sep:
            raise UapiError("unexpected line in a get answer: %r" % line)
        if k == "errno":
            errno = int(v)
        elif k == "public_key":
            current = {"public_key": hex_key(v), "endpoint": None, "allowed_ips": []}
            peers.append(current)
        elif current is None:
            device[k] = hex_key(v) if k == "private_key" else v
        elif k == "allowed_ip":
            current["allowed_ips"].append(v)
        elif k in _PEER_INTS:
            current[k] = int(v)
        elif k == "preshared_key":
            continue            # a secret; not shown
        else:
            current[k] = v
    device.pop("private_key", None)
    if errno != 0:
        raise UapiError("get failed: errno=%s" % errno)
    return device, peers


class _Exchange(protocol.Protocol):
    """Sends one request and collects the answer up to its `errno=` line's blank line."""

    def __init__(self, request):
        self.request = request
        self.done = defer.Deferred()
        self.buffer = b""

    def connectionMade(self):
        self.transport.write(self.request.encode("ascii"))

    def dataReceived(self, data):
        self.buffer += data
        text = self.buffer.decode("utf-8", "replace")
        if text.startswith("errno=") or "\nerrno=" in text:
            if text.endswith("\n\n"):
                self.transport.loseConnection()
                self._finish(text)

    def connectionLost(self, reason):
        self._finish(None, reason)

    def _finish(self, text, reason=None):
        if self.done is None:
            return
        d, self.done = self.done, None
        if text is None:
            d.errback(UapiError("wireguard-go closed the socket before answering: %s"
                                % reason.getErrorMessage()))
        else:
            d.callback(text)


class UapiClient:
    """Requests to one interface's UAPI socket."""

    def __init__(self, reactor, path):
        self.reactor = reactor
        self.path = path

    @defer.inlineCallbacks
    def request(self, text):
        exchange = _Exchange(text)
        endpoint = UNIXClientEndpoint(self.reactor, self.path, timeout=5)
        try:
            yield endpoint.connect(protocol.Factory.forProtocol(lambda: exchange))
        except Exception as e:
            raise UapiError("cannot reach %s: %s" % (self.path, e))
        answer = yield exchange.done
        return answer

    @defer.inlineCallbacks
    def set(self, text):
        """Send a `set=1` request; fails with UapiError unless errno=0."""
        answer = yield self.request(text)
        if answer.strip() != "errno=0":
            raise UapiError("set refused: %s" % answer.strip())

    @defer.inlineCallbacks
    def get(self):
        """The device's state: ({key: value}, [peer dicts]) as parse_get reads it."""
        answer = yield self.request(GET_TEXT)
        return parse_get(answer)
