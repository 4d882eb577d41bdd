# -*- test-case-name: allworx.tests.core.test_backup -*-
"""
The whole office as one archive (SPEC 20): a `.tar.gz` holding `tap.conf`
and `data/...`, everything under data_dir (mailboxes, voicemail, greetings,
leases, certificates and keys) except what belongs to this machine's run
rather than to the office (`EXCLUDED`: old backups, the config history, the
network's ledger of what it applied, the WAN's lease, lock-outs, staging
directories of a restore).

- `archive_chunks(config_text, data_dir)` yields the archive as gzip bytes,
  a bounded piece at a time (the tar stream is written here, member by
  member, so a large file is read and compressed in chunks, never whole);
- `check_archive(path)` reads a whole archive once and refuses it, with a
  `BackupError` saying why, unless it is a complete gzip'd tar of only
  regular files and directories with safe names under `tap.conf` and
  `data/`, within the size caps, with one tap.conf that is UTF-8; it
  returns a `Manifest`;
- `extract_data(path, target)` writes the archive's `data/` into a new
  directory (after `check_archive` passed);
- `swap_data(data_dir, staged, graveyard)` moves each top-level entry of
  data_dir aside and the staged ones in, by rename (same file system).

All of it blocks: the callers run it in a thread.
"""

import gzip
import os
import shutil
import stat
import tarfile
import time
import zlib

CONFIG_NAME = "tap.conf"
DATA_PREFIX = "data/"
# Top-level names under data_dir that are not the office's data.
EXCLUDED = frozenset({
    "backups", "config-history", "network-applied.json", "wan-dhcp-lease.json",
    "lockouts.json", "unlock-requests",
})
# Names of a restore's own working directories and uploads under data_dir.
STAGING_PREFIXES = (".restore-", ".upload-")

CHUNK = 256 * 1024                  # bytes read from a file at a time
MAX_CONFIG = 2 * 1024 * 1024        # tap.conf in an archive
MAX_MEMBER = 4 * 1024 ** 3          # one file
MAX_TOTAL = 16 * 1024 ** 3          # all files, uncompressed
MAX_MEMBERS = 1000000
MAX_NAME = 1024                     # bytes of a member's name


class BackupError(Exception):
    """An archive that cannot be restored, or a backup that could not be made; says why."""


class Manifest:
    """What a checked archive holds: tap.conf's text, the number of files, their bytes."""

    def __init__(self, config_text, files, dirs, size):
        self.config_text = config_text
        self.files = files
        self.dirs = dirs
        self.size = size


def is_excluded(name):
    """Whether a top-level name under data_dir stays out of backups (and restores)."""
    return name in EXCLUDED or name.startswith(STAGING_PREFIXES)


# ---------------------------------------------------------------- writing

def _header(info):
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _walk(data_dir):
    """(archive name, path, os.stat_result) of each directory and regular file, in order."""
    top = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []
    for first in top:
        if is_excluded(first):
            continue
        path = os.path.join(data_dir, first)
        yield from _entries(path, DATA_PREFIX + first)


def _entries(path, name):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return                       # gone since it was listed (a message deleted)
    if stat.S_ISREG(st.st_mode):
        yield name, path, st
    elif stat.S_ISDIR(st.st_mode):
        yield name, path, st
        try:
            children = sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return
        for child in children:
            yield from _entries(os.path.join(path, child), name + "/" + child)
    # Links, sockets, devices and FIFOs are not the office's data: left out.


def _tar_blocks(config_text, data_dir, chunk):
    """The uncompressed tar stream, in pieces."""
    now = int(time.time())
    data = config_text.encode("utf-8")
    info = tarfile.TarInfo(CONFIG_NAME)
    info.size, info.mode, info.mtime = len(data), 0o600, now
    yield _header(info)
    yield data + _padding(len(data))
    dirinfo = tarfile.TarInfo("data")
    dirinfo.type, dirinfo.mode, dirinfo.mtime = tarfile.DIRTYPE, 0o711, now
    yield _header(dirinfo)
    for name, path, st in _walk(data_dir):
        info = tarfile.TarInfo(name)
        info.mtime = int(st.st_mtime)
        info.mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            yield _header(info)
            continue
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue
        with f:
            size = os.fstat(f.fileno()).st_size
            info.size = size
            yield _header(info)
            left = size
            while left:
                piece = f.read(min(chunk, left))
                if not piece:
                    # It shrank while read: the header's size stands, filled with zeros.
                    piece = bytes(min(chunk, left))
                left -= len(piece)
                yield piece
            yield _padding(size)
    yield bytes(tarfile.BLOCKSIZE * 2)


def _padding(size):
    return bytes(-size % tarfile.BLOCKSIZE)


def archive_chunks(config_text, data_dir, chunk=CHUNK, level=6):
    """The archive of `config_text` and `data_dir`, as gzip bytes in bounded pieces."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pending = []
    held = 0
    for block in _tar_blocks(config_text, data_dir, chunk):
        out = packer.compress(block)
        if out:
            pending.append(out)
            held += len(out)
        if held >= chunk:
            yield b"".join(pending)
            pending, held = [], 0
    pending.append(packer.flush())
    yield b"".join(pending)


def write_archive(path, config_text, data_dir):
    """Write the archive to `path` (a new file, 0600, fsynced); returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as f:
        for piece in archive_chunks(config_text, data_dir):
            f.write(piece)
            size += len(piece)
        f.flush()
        os.fsync(f.fileno())
    return size


# ---------------------------------------------------------------- checking

def member_problem(member):
    """Why a tar member may not be restored, or None."""
    name = member.name
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        return "a name longer than %d bytes" % MAX_NAME
    if "\0" in name or "\\" in name:
        return "%r: a name with a NUL or a backslash" % name
    if name.startswith("/"):
        return "%r: an absolute path" % name
    parts = name.rstrip("/").split("/") if member.isdir() else name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "%r: an empty, '.' or '..' path component" % name
    if member.issym() or member.islnk():
        return "%r: a link (only files and directories are restored)" % name
    if not (member.isreg() or member.isdir()):
        return "%r: not a regular file or directory" % name
    if name == CONFIG_NAME:
        if not member.isreg():
            return "tap.conf is not a file"
        if member.size > MAX_CONFIG:
            return "tap.conf is larger than %d bytes" % MAX_CONFIG
        return None
    if parts[0] != "data":
        return "%r: outside tap.conf and data/" % name
    if len(parts) > 1 and is_excluded(parts[1]):
        return "%r: %s is not restored" % (name, parts[1])
    if member.size > MAX_MEMBER:
        return "%r: larger than %d bytes" % (name, MAX_MEMBER)
    return None


def _members(path):
    """
    Each member of a gzip'd tar (a path, or a file read from its start) read
    as a stream, with the archive to read its data from; then the gzip
    stream is read to its end, so its checksum and length are checked too.
    BackupError for anything wrong.
    """
    own = isinstance(path, str)
    raw = open(path, "rb") if own else path
    try:
        raw.seek(0)
        unpacked = gzip.GzipFile(fileobj=raw, mode="rb")
        try:
            archive = tarfile.open(fileobj=unpacked, mode="r|")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise BackupError("not a gzip'd tar archive, or one damaged or cut short: %s"
                              % (e or type(e).__name__))
        while True:
            try:
                member = archive.next()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                raise BackupError("the archive is damaged or cut short: %s"
                                  % (e or type(e).__name__))
            if member is None:
                break
            yield member, archive
        try:
            while unpacked.read(CHUNK):
                pass
        except (OSError, EOFError, zlib.error) as e:
            raise BackupError("the archive is damaged or cut short: %s" % (e or type(e).__name__))
    finally:
        if own:
            raw.close()


def _read_all(archive, member, sink=None):
    """Read (and check) a member's data to the end, giving it to `sink` piece by piece."""
    f = archive.extractfile(member)
    left = member.size
    while left:
        try:
            piece = f.read(min(CHUNK, left))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise BackupError("the archive is damaged or cut short inside %r: %s"
                              % (member.name, e or type(e).__name__))
        if not piece:
            raise BackupError("the archive is cut short inside %r" % member.name)
        left -= len(piece)
        if sink is not None:
            sink(piece)


def check_archive(path):
    """The `Manifest` of a restorable archive at `path`; BackupError saying why not."""
    config = None
    seen = set()
    file_names = set()
    parents = set()
    files = dirs = total = 0
    for member, archive in _members(path):
        problem = member_problem(member)
        if problem:
            raise BackupError("refused: " + problem)
        name = member.name.rstrip("/")
        if name in seen:
            raise BackupError("refused: %r is in the archive twice" % name)
        seen.add(name)
        parts = name.split("/")
        above = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if any(p in file_names for p in above):
            raise BackupError("refused: %r is inside a file of the archive" % name)
        parents.update(above)
        if len(seen) > MAX_MEMBERS:
            raise BackupError("refused: more than %d entries" % MAX_MEMBERS)
        if member.isdir():
            dirs += 1
            continue
        if name in parents:
            raise BackupError("refused: %r is a file and a directory" % name)
        file_names.add(name)
        total += member.size
        if total > MAX_TOTAL:
            raise BackupError("refused: more than %d bytes in all" % MAX_TOTAL)
        if name == CONFIG_NAME:
            pieces = []
            _read_all(archive, member, pieces.append)
            try:
                config = b"".join(pieces).decode("utf-8")
            except UnicodeDecodeError as e:
                raise BackupError("tap.conf in the archive is not UTF-8: %s" % e)
        else:
            files += 1
            _read_all(archive, member)
    if config is None:
        raise BackupError("refused: the archive has no tap.conf")
    return Manifest(config, files, dirs, total)


# ---------------------------------------------------------------- restoring

def extract_data(path, target):
    """
    Write the archive's `data/` under the new directory `target` (0711);
    only after `check_archive` passed for the same file. Files keep at most
    their archived mode's 0644 bits, directories 0755; nothing is followed.
    """
    os.mkdir(target, 0o711)
    for member, archive in _members(path):
        if member_problem(member):          # checked before; never trusted twice
            raise BackupError("refused: " + member_problem(member))
        parts = member.name.rstrip("/").split("/")
        if parts[0] != "data" or len(parts) == 1:
            continue
        dest = os.path.join(target, *parts[1:])
        if member.isdir():
            if not os.path.isdir(dest):
                _make_parents(target, parts[1:-1])
                os.mkdir(dest, (member.mode & 0o755) | 0o700)
            continue
        _make_parents(target, parts[1:-1])
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     (member.mode & 0o644) | 0o600)
        with os.fdopen(fd, "wb") as out:
            _read_all(archive, member, out.write)
        os.utime(dest, (member.mtime, member.mtime))
    os.sync()


def _make_parents(target, parts):
    path = target
    for part in parts:
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)


def swap_data(data_dir, staged, graveyard):
    """
    Make data_dir's office data the staged directory's: each top-level entry
    of data_dir (not excluded) is renamed into `graveyard`, each one of
    `staged` renamed into data_dir. Returns the names now in place.
    """
    os.mkdir(graveyard, 0o700)
    for name in sorted(os.listdir(data_dir)):
        if not is_excluded(name):
            os.rename(os.path.join(data_dir, name), os.path.join(graveyard, name))
    placed = []
    for name in sorted(os.listdir(staged)):
        if is_excluded(name):
            continue
        os.rename(os.path.join(staged, name), os.path.join(data_dir, name))
        placed.append(name)
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return placed


def remove_tree(path):
    """Remove a directory tree, if there (links inside are removed, not followed)."""
    shutil.rmtree(path, ignore_errors=True)
