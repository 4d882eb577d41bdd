# -*- test-case-name: allworx.tests.mail.test_attachments -*-
"""
Attachments refused on mail from the internet (SPEC 18): executables and
scripts, found by file name (the last extension: `invoice.pdf.exe` is an
.exe), by content type, or by their first bytes (a Windows PE or an ELF
file whatever it is called), anywhere in the MIME tree (attached messages
included) and inside zip archives, zips in zips too.

All of it bounded: at most MAX_PARTS parts looked at, a part is decoded
only up to MAX_DECODE, an archive's first MAX_MEMBERS names are read, only
the first bytes of its members (and nested archives up to MAX_NESTED, at
most NEST_DEPTH deep), and all the archives of one message together unpack at
most MAX_UNPACKED bytes (a zip of zips of zips, each highly compressed,
would otherwise make gigabytes of work of a few kilobytes; what is left
past the budget is not looked into). `find_refused(message)` takes a parsed
`email.message.Message` and gives a `Refusal(filename, why)` or None.
"""

import email.header
import email.utils
import io
import os
import zipfile

import attr

MAX_PARTS = 500
MAX_DECODE = 12 * 1024 * 1024
MAX_MEMBERS = 1000
MAX_NESTED = 5 * 1024 * 1024
NEST_DEPTH = 3
MAGIC_MEMBERS = 200         # archive members whose first bytes are looked at
MAX_UNPACKED = 32 * 1024 * 1024     # bytes unpacked from the archives of one message

EXTENSIONS = frozenset("""
    exe com scr pif bat cmd vbs vbe js jse wsf wsh wsc msi msp mst hta cpl jar
    ps1 psm1 psd1 lnk reg dll scf inf msc gadget application appref-ms sct
    ws vb hlp chm sh elf apk
""".split())

CONTENT_TYPES = frozenset("""
    application/x-msdownload application/x-msdos-program application/x-dosexec
    application/x-executable application/vnd.microsoft.portable-executable
    application/x-ms-installer application/x-msi application/hta
    application/x-ms-shortcut application/java-archive application/x-java-archive
    application/x-bat application/x-sh application/x-elf application/x-sharedlib
    application/vnd.android.package-archive application/x-ms-application
    text/vbscript application/x-vbscript
""".split())

ARCHIVE_EXTENSIONS = frozenset(("zip",))
ARCHIVE_TYPES = frozenset(("application/zip", "application/x-zip-compressed",
                           "application/x-zip"))


@attr.s(frozen=True, slots=True)
class Refusal:
    filename = attr.ib()        # e.g. "setup.exe", "invoice.zip/setup.exe", or the part's type
    why = attr.ib()


def extension(name):
    """The last extension of a file name, lower case, without the dot ("" if none)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().strip(".").rstrip(" \t")
    _, ext = os.path.splitext(base)
    return ext[1:].lower()


def is_executable_bytes(head):
    """A Windows PE (MZ header pointing at "PE\\0\\0") or an ELF file, from its first bytes."""
    if head[:4] == b"\x7fELF":
        return True
    if head[:2] != b"MZ" or len(head) < 0x40:
        return False
    offset = int.from_bytes(head[0x3c:0x40], "little")
    return offset + 4 <= len(head) and head[offset:offset + 4] == b"PE\0\0"


def part_filename(part):
    """The part's file name (Content-Disposition filename or Content-Type name), decoded; or ""."""
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:
        return ""
    if isinstance(name, tuple):      # an RFC 2231 value compat32 left undecoded
        name = email.utils.collapse_rfc2231_value(name)
    try:
        name = str(email.header.make_header(email.header.decode_header(name)))
    except Exception:
        pass
    return name.replace("\x00", "")[:255]


def decoded_payload(part, limit=MAX_DECODE):
    """The part's decoded bytes, or None when it is too big to decode or not a leaf."""
    if part.is_multipart():
        return None
    raw = part.get_payload()
    if not isinstance(raw, (str, bytes)) or len(raw) > limit * 4 // 3 + 4096:
        return None
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return None
    return data if isinstance(data, bytes) else None


def find_refused(message):
    """The first refused attachment of a parsed message, or None."""
    budget = [MAX_UNPACKED]
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            break
        if part.is_multipart():
            continue
        found = _check_part(part, budget)
        if found is not None:
            return found
    return None


def _check_part(part, budget):
    name = part_filename(part)
    ctype = part.get_content_type()
    label = name or ctype
    if name and extension(name) in EXTENSIONS:
        return Refusal(name, "file type ." + extension(name))
    if ctype in CONTENT_TYPES:
        return Refusal(label, "content type " + ctype)
    if part.get_content_maintype() in ("text", "multipart", "message") and \
            not (name and extension(name) in ARCHIVE_EXTENSIONS):
        return None
    data = decoded_payload(part)
    if data is None:
        return None
    if is_executable_bytes(data[:4096]):
        return Refusal(label, "an executable")
    if data[:4] == b"PK\x03\x04" or ctype in ARCHIVE_TYPES or \
            (name and extension(name) in ARCHIVE_EXTENSIONS):
        inner = check_zip(data, label, budget=budget)
        if inner is not None:
            return inner
    return None


def check_zip(data, label, depth=0, budget=None):
    """A Refusal for an executable inside the zip `data` (bounded), or None.
    `budget` ([bytes left]) is shared by the nested archives."""
    budget = [MAX_UNPACKED] if budget is None else budget
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()[:MAX_MEMBERS]
    except Exception:       # not a zip, or a damaged one: nothing we can say of it
        return None
    for info in infos:
        inner = "%s/%s" % (label, info.filename)
        if info.is_dir():
            continue
        if extension(info.filename) in EXTENSIONS:
            return Refusal(inner, "file type ." + extension(info.filename) + " in an archive")
    for index, info in enumerate(infos):
        if info.is_dir() or info.flag_bits & 0x1 or index >= MAGIC_MEMBERS:
            continue        # encrypted members cannot be read: their names were looked at
        inner = "%s/%s" % (label, info.filename)
        head = _read_member(archive, info, 4096, budget)
        if head is None:
            continue
        if is_executable_bytes(head):
            return Refusal(inner, "an executable in an archive")
        if head[:4] == b"PK\x03\x04" and depth + 1 < NEST_DEPTH and info.file_size <= MAX_NESTED:
            whole = _read_member(archive, info, MAX_NESTED + 1, budget)
            if whole is not None and len(whole) <= MAX_NESTED:
                found = check_zip(whole, inner, depth + 1, budget)
                if found is not None:
                    return found
    return None


def _read_member(archive, info, limit, budget):
    """Up to `limit` bytes of an archive member (taken from `budget`), or None
    when it cannot be read or the budget is spent."""
    limit = min(limit, budget[0])
    if limit <= 0:
        return None
    try:
        with archive.open(info) as member:
            data = member.read(limit)
    except Exception:
        return None
    budget[0] -= len(data)
    return data
