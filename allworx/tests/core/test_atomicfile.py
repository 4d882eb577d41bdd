"""Tests for allworx.atomicfile: write_atomically, fsync_directory (JsonStateFile: tests/network)."""

import os

from twisted.trial import unittest

from allworx import atomicfile
from allworx.atomicfile import fsync_directory, write_atomically, write_synced


class AtomicWriteTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "state")

    def read(self):
        with open(self.path, "rb") as f:
            return f.read()

    def leftovers(self):
        return sorted(n for n in os.listdir(self.dir) if n != "state")

    def test_replaces_with_mode_0600(self):
        # A file others could read does not stay so once the server rewrites
        # it (it kept its old mode: issue 21, item 8).
        with open(self.path, "w") as f:
            f.write("old")
        os.chmod(self.path, 0o644)
        write_atomically(self.path, "new text")
        self.assertEqual(self.read(), b"new text")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        self.assertEqual(self.leftovers(), [])

    def test_new_file_modes(self):
        write_atomically(self.path, b"x")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        other = os.path.join(self.dir, "other")
        write_atomically(other, b"y", mode=0o640)
        self.assertEqual(os.stat(other).st_mode & 0o777, 0o640 & ~_umask())
        # An explicit mode is the mode of every write, as open() would give it.
        os.chmod(other, 0o600)
        write_atomically(other, b"z", mode=0o666)
        self.assertEqual(os.stat(other).st_mode & 0o777, 0o666 & ~_umask())

    def test_ensure_directory_makes_parents_private(self):
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        os.chmod(self.dir, 0o755)
        atomicfile.ensure_directory(os.path.join(self.dir, "a", "b", "c"))
        for path in ("a", "a/b", "a/b/c"):
            self.assertEqual(os.stat(os.path.join(self.dir, path)).st_mode & 0o777, 0o700, path)
        self.assertEqual(os.stat(self.dir).st_mode & 0o777, 0o755)      # existing: left alone
        atomicfile.ensure_directory(os.path.join(self.dir, "a"))          # exists: fine
        write_atomically(self.path, b"a file")
        self.assertRaises(OSError, atomicfile.ensure_directory, os.path.join(self.path, "x"))

    def test_a_failed_write_leaves_the_old_content(self):
        write_atomically(self.path, b"old content")
        real_write = os.write
        calls = []

        def write_half_then_fail(fd, data):
            calls.append(len(data))
            if len(calls) > 1:
                raise OSError(28, "No space left on device")
            return real_write(fd, bytes(data[:len(data) // 2]))
        self.patch(atomicfile.os, "write", write_half_then_fail)
        self.assertRaises(OSError, write_atomically, self.path, b"new content, longer" * 100)
        self.assertEqual(len(calls), 2)         # it did write part of the new file
        self.assertEqual(self.read(), b"old content")
        self.assertEqual(self.leftovers(), [])

    def test_partial_writes_are_continued(self):
        real_write = os.write
        self.patch(atomicfile.os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
        write_atomically(self.path, b"0123456789" * 10)
        self.assertEqual(self.read(), b"0123456789" * 10)

    def test_file_then_directory_fsynced_after_the_rename(self):
        done = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd):
            done.append(("fsync", os.path.realpath("/proc/self/fd/%d" % fd)))
            return real_fsync(fd)

        def rename(src, dst):
            done.append(("rename", dst))
            return real_rename(src, dst)
        self.patch(atomicfile.os, "fsync", fsync)
        self.patch(atomicfile.os, "rename", rename)
        write_atomically(self.path, b"data")
        real_dir = os.path.realpath(self.dir)
        self.assertEqual([step for step, _ in done], ["fsync", "rename", "fsync"])
        self.assertEqual(os.path.dirname(done[0][1]), real_dir)     # the temporary file, beside it
        self.assertEqual(done[1][1], self.path)
        self.assertEqual(done[2][1], real_dir)

    def test_fsync_directory(self):
        synced = []
        real_fsync = os.fsync
        self.patch(atomicfile.os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino),
                                                      real_fsync(fd)))
        fsync_directory(self.dir)
        self.assertEqual(synced, [os.stat(self.dir).st_ino])
        self.assertRaises(NotADirectoryError, fsync_directory, __file__)

    def test_write_synced(self):
        write_synced(self.path, b"abc", 0o640)
        self.assertEqual(self.read(), b"abc")
        write_synced(self.path, b"d", 0o640)
        self.assertEqual(self.read(), b"d")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
