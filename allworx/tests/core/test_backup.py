"""The whole-office archive: written in bounded pieces, checked whole, refused with a reason."""

import gzip
import io
import os
import tarfile
import tracemalloc

from twisted.trial import unittest

from allworx import backup
from allworx.backup import BackupError, archive_chunks, check_archive, extract_data, swap_data

CONF = "[system]\ndomain = example.com\n"


def make_data(base):
    """A small data_dir: a mailbox message, a lease journal, a key, and what stays out."""
    files = {
        "mail/alice/new/1.M1": b"Subject: hi\n\nhello\n",
        "dhcp/leases.journal": b"lease line\n",
        "tls/server.key": b"-----KEY-----\n",
        "voicemail/greetings/alice.wav": b"RIFF" + bytes(3000),
        "backups/allworx-20240101-000000.tar.gz": b"old backup",
        "config-history/000001.conf": b"old",
        "network-applied.json": b"{}",
    }
    for name, data in files.items():
        path = os.path.join(base, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    os.chmod(os.path.join(base, "tls/server.key"), 0o600)
    os.symlink("/etc/passwd", os.path.join(base, "mail", "link"))
    return files


def archive_bytes(config, data_dir):
    return b"".join(archive_chunks(config, data_dir))


def tar_gz(members):
    """A .tar.gz of (TarInfo, data or None) built by tarfile itself."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return out.getvalue()


def reg(name, data=b"x"):
    return tarfile.TarInfo(name), data


class ArchiveTests(unittest.TestCase):
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.data = os.path.join(self.base, "data")
        os.makedirs(self.data)
        self.files = make_data(self.data)

    def write(self, blob, name="a.tar.gz"):
        path = os.path.join(self.base, name)
        with open(path, "wb") as f:
            f.write(blob)
        return path

    def test_round_trip(self):
        """tap.conf and data/ go in; what belongs to this run and links stay out."""
        path = self.write(archive_bytes(CONF, self.data))
        with tarfile.open(path) as t:
            names = set(t.getnames())
            self.assertEqual(t.extractfile("tap.conf").read().decode(), CONF)
        self.assertIn("data/mail/alice/new/1.M1", names)
        self.assertIn("data/tls/server.key", names)
        self.assertNotIn("data/mail/link", names)
        for left_out in ("data/backups", "data/config-history", "data/network-applied.json"):
            self.assertFalse([n for n in names if n.startswith(left_out)], left_out)
        manifest = check_archive(path)
        self.assertEqual(manifest.config_text, CONF)
        self.assertEqual(manifest.files, 4)
        target = os.path.join(self.base, "new")
        extract_data(path, target)
        for name in ("mail/alice/new/1.M1", "dhcp/leases.journal", "tls/server.key",
                     "voicemail/greetings/alice.wav"):
            with open(os.path.join(target, name), "rb") as f:
                self.assertEqual(f.read(), self.files[name])
        self.assertEqual(os.stat(os.path.join(target, "tls/server.key")).st_mode & 0o777, 0o600)
        self.assertFalse(os.path.exists(os.path.join(target, "backups")))

    def test_a_file_object_is_read_from_its_start(self):
        f = io.BytesIO(archive_bytes(CONF, self.data))
        f.seek(0, 2)
        self.assertEqual(check_archive(f).config_text, CONF)

    def test_memory_stays_bounded(self):
        """A 40 MB file is read and packed in pieces: the peak does not grow with it."""
        big = os.path.join(self.data, "voicemail", "big.wav")
        with open(big, "wb") as f:
            for _ in range(40):
                f.write(os.urandom(1024 * 1024))
        tracemalloc.start()
        try:
            total = 0
            for piece in archive_chunks(CONF, self.data):
                total += len(piece)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertGreater(total, 40 * 1024 * 1024)
        self.assertLess(peak, 8 * 1024 * 1024)

    def refused(self, blob, why):
        path = self.write(blob)
        e = self.assertRaises(BackupError, check_archive, path)
        self.assertIn(why, str(e))
        return e

    def test_truncated(self):
        blob = archive_bytes(CONF, self.data)
        for cut in (10, len(blob) // 2, len(blob) - 5):
            e = self.refused(blob[:cut], "")
            self.assertIn("cut short", str(e))

    def test_damaged(self):
        blob = bytearray(archive_bytes(CONF, self.data))
        blob[len(blob) // 2] ^= 0xFF
        self.refused(bytes(blob), "")
        self.refused(b"not an archive at all", "not a gzip'd tar")
        self.refused(gzip.compress(b"plain text, not a tar" * 100), "")

    def test_no_config(self):
        self.refused(tar_gz([reg("data/x")]), "no tap.conf")

    def test_config_not_utf8(self):
        self.refused(tar_gz([reg("tap.conf", b"\xff\xfe")]), "not UTF-8")

    def test_path_traversal(self):
        self.refused(tar_gz([reg("tap.conf"), reg("data/../../etc/passwd")]), "'..'")
        self.refused(tar_gz([reg("tap.conf"), reg("/etc/passwd")]), "absolute")
        self.refused(tar_gz([reg("tap.conf"), reg("etc/passwd")]), "outside tap.conf and data/")
        self.refused(tar_gz([reg("tap.conf"), reg("data//x")]), "empty")

    def test_links_and_devices(self):
        link = tarfile.TarInfo("data/mail/x")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        self.refused(tar_gz([reg("tap.conf"), (link, None)]), "a link")
        hard = tarfile.TarInfo("data/mail/y")
        hard.type, hard.linkname = tarfile.LNKTYPE, "tap.conf"
        self.refused(tar_gz([reg("tap.conf"), (hard, None)]), "a link")
        fifo = tarfile.TarInfo("data/fifo")
        fifo.type = tarfile.FIFOTYPE
        self.refused(tar_gz([reg("tap.conf"), (fifo, None)]), "not a regular file")

    def test_huge_member(self):
        self.patch(backup, "MAX_MEMBER", 100)
        self.refused(tar_gz([reg("tap.conf"), reg("data/big", b"x" * 101)]), "larger than 100")
        self.patch(backup, "MAX_TOTAL", 150)
        self.refused(tar_gz([reg("tap.conf"), reg("data/a", b"x" * 80), reg("data/b", b"x" * 80)]),
                     "in all")

    def test_duplicates_and_file_dir_clash(self):
        self.refused(tar_gz([reg("tap.conf"), reg("data/a"), reg("data/a")]), "twice")
        self.refused(tar_gz([reg("tap.conf"), reg("data/a"), reg("data/a/b")]), "inside a file")
        self.refused(tar_gz([reg("tap.conf"), reg("data/a/b"), reg("data/a")]),
                     "a file and a directory")

    def test_excluded_names_are_refused(self):
        self.refused(tar_gz([reg("tap.conf"), reg("data/backups/x")]), "not restored")

    def test_swap(self):
        path = self.write(archive_bytes(CONF, self.data))
        staged = os.path.join(self.data, ".restore-new-1")
        extract_data(path, staged)
        os.remove(os.path.join(self.data, "mail/alice/new/1.M1"))
        os.makedirs(os.path.join(self.data, "extra"))
        placed = swap_data(self.data, staged, os.path.join(self.data, ".restore-old-1"))
        self.assertEqual(placed, ["dhcp", "mail", "tls", "voicemail"])
        self.assertTrue(os.path.exists(os.path.join(self.data, "mail/alice/new/1.M1")))
        self.assertFalse(os.path.exists(os.path.join(self.data, "extra")))
        # What belongs to this run stays where it was.
        self.assertTrue(os.path.exists(os.path.join(self.data, "network-applied.json")))
        self.assertTrue(os.path.exists(os.path.join(self.data, "backups")))
