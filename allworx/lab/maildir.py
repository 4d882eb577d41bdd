# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
Mail storage shared by the lab's internet host and `allworx.lab.namespaces`.

Messages are Maildir files with LF line ends (what the POP3 server expects);
a message the SMTP sink received starts with `Return-Path:` and `Delivered-To:`
headers carrying its envelope. POP3 accounts are a JSON object mapping user to
password, re-read at every login so tests can change it while the host runs.
"""

import itertools
import json
import os
import re
import socket
import time

from allworx import atomicfile

_sequence = itertools.count()


def _unique_name():
    # Maildir names sort by delivery time; pid and a counter keep them unique.
    return "%d.P%dQ%d.%s" % (
        time.time_ns(),
        os.getpid(),
        next(_sequence),
        socket.gethostname().replace("/", "_").replace(":", "_"),
    )


def write_atomically(path, data):
    """Replace `path` with `data` (bytes) durably; the file gets the mode open() would give."""
    atomicfile.write_atomically(path, data, mode=0o666)


class Maildir:
    """A Maildir folder: deliver into new/, list new/ and cur/ oldest first."""

    def __init__(self, path):
        self.path = path

    def ensure(self):
        """Create the folder and its tmp/new/cur subdirectories if missing."""
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)

    def deliver(self, data):
        """Store one message (bytes) and return its path once it is on disk."""
        self.ensure()
        name = _unique_name()
        tmp = os.path.join(self.path, "tmp", name)
        atomicfile.write_synced(tmp, data, 0o666)
        final = os.path.join(self.path, "new", name)
        os.rename(tmp, final)
        atomicfile.fsync_directory(os.path.dirname(final))
        return final

    def messages(self):
        """Paths of the stored messages, oldest first."""
        found = []
        for sub in ("new", "cur"):
            directory = os.path.join(self.path, sub)
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            found.extend((name, os.path.join(directory, name)) for name in names)
        return [path for name, path in sorted(found)]


def folder_name(address):
    """A directory name for a mail address (lower case, no path characters)."""
    name = re.sub(r"[^a-z0-9@._+-]", "_", address.strip().lower()).lstrip(".")
    return name or "_"


def with_lf(data):
    """The message with LF line ends, as the POP3 server stores and sizes it."""
    return data.replace(b"\r\n", b"\n")


def envelope_headers(sender, recipient):
    """The headers the SMTP sink puts before each stored message."""
    return b"Return-Path: <%s>\nDelivered-To: %s\n" % (
        sender.encode("utf-8", "replace"),
        recipient.encode("utf-8", "replace"),
    )


def split_envelope(data):
    """(sender, recipient, message) from a message the SMTP sink stored."""
    sender = recipient = ""
    rest = data
    for _ in range(2):
        line, sep, after = rest.partition(b"\n")
        key, _, value = line.decode("utf-8", "replace").partition(":")
        if key.lower() == "return-path":
            sender = value.strip().strip("<>")
        elif key.lower() == "delivered-to":
            recipient = value.strip()
        else:
            break
        rest = after
    return sender, recipient, rest


def read_accounts(path):
    """The POP3 accounts file as {user: password}; empty if it does not exist."""
    try:
        with open(path, "rb") as f:
            accounts = json.load(f)
    except FileNotFoundError:
        return {}
    if not isinstance(accounts, dict):
        raise ValueError("%s: expected a JSON object of user: password" % path)
    return {str(user): str(password) for user, password in accounts.items()}


def write_accounts(path, accounts):
    """Replace the POP3 accounts file with `accounts` ({user: password})."""
    data = json.dumps(accounts, indent=2, sort_keys=True).encode() + b"\n"
    write_atomically(path, data)


# The internet host's data directory: the sink's Maildirs per recipient, the
# POP3 Maildirs per user, the accounts file, and the sink's refusal switch.
SMTP_FOLDERS = "smtp"
POP3_FOLDERS = "pop3"
ACCOUNTS_FILE = "pop3-accounts.json"
REFUSAL_FILE = "smtp-refuse"


def read_refusal(directory):
    """(code, text) the SMTP sink answers every RCPT with, or None to accept."""
    try:
        with open(os.path.join(directory, REFUSAL_FILE), "rb") as f:
            line = f.read().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    code, _, text = line.partition(" ")
    return int(code), text or "refused by the lab"
