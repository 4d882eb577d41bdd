"""
Tests for the attachments refused on mail from the internet
(allworx.protocols.mail.attachments): by name, type and first bytes,
anywhere in the MIME tree and inside zips (nested too); hypothesis builds
random MIME structures.
"""

import io
import zipfile
from email import encoders
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial import unittest

from allworx.protocols.mail import attachments
from allworx.protocols.mail.attachments import EXTENSIONS, extension, find_refused, is_executable_bytes
from allworx.protocols.mail.contentrules import parse_message

PE = b"MZ" + b"\x90" * 58 + (0x80).to_bytes(4, "little") + b"\0" * 64 + b"PE\0\0" + b"\0" * 200
HARMLESS_EXT = ["pdf", "txt", "jpg", "png", "docx", "csv", "ics", "html", "xlsx", ""]
HARMLESS_TYPES = ["application/pdf", "image/png", "text/plain", "text/csv",
                  "application/octet-stream", "image/jpeg", "text/calendar"]


def zipped(members):
    """A zip of (name, bytes) members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def attachment(name, data, ctype="application/octet-stream"):
    main, sub = ctype.split("/")
    part = MIMEApplication(data, sub) if main == "application" else MIMEBase(main, sub)
    if main != "application":
        part.set_payload(data)
        encoders.encode_base64(part)
    if name:
        part.add_header("Content-Disposition", "attachment", filename=name)
    return part


def message(*parts):
    m = MIMEMultipart()
    m["From"] = "x@y.example"
    m["Subject"] = "files"
    m.attach(MIMEText("see attached"))
    for p in parts:
        m.attach(p)
    return parse_message(m.as_bytes())


class DirectTests(unittest.TestCase):

    def test_by_name_last_extension(self):
        r = find_refused(message(attachment("invoice.pdf.exe", b"hello")))
        self.assertEqual(r.filename, "invoice.pdf.exe")
        self.assertIn(".exe", r.why)
        self.assertIsNone(find_refused(message(attachment("invoice.exe.pdf", b"hello"))))

    def test_by_type_and_by_magic(self):
        r = find_refused(message(attachment("", b"data", "application/x-msdownload")))
        self.assertEqual(r.filename, "application/x-msdownload")
        r = find_refused(message(attachment("holiday.jpg", PE)))
        self.assertEqual(r, r.__class__("holiday.jpg", "an executable"))
        self.assertTrue(is_executable_bytes(b"\x7fELF\x02\x01"))
        self.assertFalse(is_executable_bytes(b"MZ" + b"x" * 100))

    def test_inside_zip_nested_and_by_magic(self):
        z = zipped([("readme.txt", b"hi"), ("docs/setup.SCR", b"x")])
        self.assertEqual(find_refused(message(attachment("a.zip", z))).filename,
                         "a.zip/docs/setup.SCR")
        inner = zipped([("tool.bin", PE)])
        outer = zipped([("photos.zip", inner)])
        self.assertEqual(find_refused(message(attachment("p.dat", outer, "application/zip"))).filename,
                         "p.dat/photos.zip/tool.bin")
        self.assertIsNone(find_refused(message(attachment("ok.zip", zipped([("a.pdf", b"%PDF")])))))

    def test_nested_zip_bomb_is_bounded(self):
        # Each level multiplies the work: a 5 MB zip of zeros packs to a few
        # KB, twenty of them to a zip of ~100 KB, and three of those give
        # 300 MB to unpack from a ~300 KB attachment (200 x 200 x 5 MB with
        # bigger counts). The archives of one message share one budget.
        stored = io.BytesIO()
        with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as z:
            z.writestr("zeros.bin", b"\0" * (attachments.MAX_NESTED - 200))
        level2 = stored.getvalue()
        level1 = zipped([("z%d.zip" % i, level2) for i in range(20)])
        bomb = zipped([("y%d.zip" % i, level1) for i in range(3)])
        read = []
        original = attachments._read_member

        def counting(*args):
            data = original(*args)
            read.append(len(data or b""))
            return data
        self.patch(attachments, "_read_member", counting)
        self.assertIsNone(find_refused(message(*[attachment("b%d.zip" % i, bomb) for i in range(3)])))
        self.assertLessEqual(sum(read), 32 * 1024 * 1024)
        self.assertGreater(sum(read), 0)

    def test_attached_message_and_encoded_filename(self):
        inner = MIMEMultipart()
        inner.attach(attachment("=?utf-8?q?r=C3=A9sum=C3=A9.js?=", b"alert(1)"))
        r = find_refused(message(MIMEMessage(inner)))
        self.assertEqual(r.filename, "résumé.js")

    def test_garbage_never_raises(self):
        for raw in (b"", b"\xff\xfe\x00garbage", b"Content-Type: multipart/mixed; boundary=x\n\n--x\n"
                    b"Content-Type: application/zip\nContent-Transfer-Encoding: base64\n\nUEsDBA==\n"):
            self.assertIsNone(find_refused(parse_message(raw)))

    def test_extension(self):
        self.assertEqual(extension("C:\\dir\\x.EXE "), "exe")
        self.assertEqual(extension("x.exe."), "exe")
        self.assertEqual(extension("noext"), "")


# ------------------------------------------------------------ hypothesis

names = st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7a), min_size=1, max_size=8)
harmless_leaf = st.builds(lambda n, e, t, d: ("leaf", n + ("." + e if e else ""), t, d),
                          names, st.sampled_from(HARMLESS_EXT), st.sampled_from(HARMLESS_TYPES),
                          st.binary(max_size=64).filter(lambda b: not b.startswith((b"MZ", b"\x7fELF", b"PK"))))
harmless_zip = st.builds(lambda n, members: ("zip", n + ".zip", members),
                         names, st.lists(st.tuples(names, st.sampled_from(HARMLESS_EXT[:-1])),
                                         max_size=4, unique=True))


def trees(leaf):
    return st.recursive(leaf, lambda children: st.builds(
        lambda kids, sub: ("multi", sub, kids), st.lists(children, min_size=1, max_size=4),
        st.sampled_from(["mixed", "alternative", "related", "rfc822"])), max_leaves=8)


def build(node):
    kind = node[0]
    if kind == "leaf":
        _, name, ctype, data = node
        return attachment(name, data, ctype)
    if kind == "zip":
        _, name, members = node
        return attachment(name, zipped([("%s.%s" % m, b"data") for m in members]))
    if kind == "bad":
        return node[1]
    _, sub, kids = node
    if sub == "rfc822":
        inner = MIMEMultipart()
        for k in kids:
            inner.attach(build(k))
        return MIMEMessage(inner)
    m = MIMEMultipart(sub)
    for k in kids:
        m.attach(build(k))
    return m


def bad_part(draw_ext, how, name):
    if how == "name":
        return ("bad", attachment("%s.%s" % (name, draw_ext), b"x"), "%s.%s" % (name, draw_ext))
    if how == "zip":
        z = zipped([("readme.txt", b"x"), ("%s.%s" % (name, draw_ext), b"x")])
        return ("bad", attachment(name + ".zip", z), "%s.zip/%s.%s" % (name, name, draw_ext))
    if how == "nested":
        z = zipped([("in.zip", zipped([("%s.%s" % (name, draw_ext), b"x")]))])
        return ("bad", attachment(name + ".zip", z), "%s.zip/in.zip/%s.%s" % (name, name, draw_ext))
    return ("bad", attachment(name + ".png", PE), name + ".png")


bad_leaf = st.builds(bad_part, st.sampled_from(sorted(EXTENSIONS)),
                     st.sampled_from(["name", "zip", "nested", "magic"]), names)


class StructureTests(unittest.TestCase):

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(trees(st.one_of(harmless_leaf, harmless_zip)))
    def test_harmless_structures_pass(self, tree):
        m = MIMEMultipart()
        m.attach(build(tree))
        self.assertIsNone(find_refused(parse_message(m.as_bytes())))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(trees(st.one_of(harmless_leaf, harmless_zip)), bad_leaf, st.data())
    def test_an_executable_anywhere_is_found(self, tree, bad, data):
        # Put the bad part at a random place of the tree.
        def insert(node):
            if node[0] == "multi" and data.draw(st.booleans()):
                kids = list(node[2])
                i = data.draw(st.integers(0, len(kids) - 1))
                kids[i] = insert(kids[i])
                return node[:2] + (kids,)
            if node[0] == "multi":
                return node[:2] + (list(node[2]) + [bad],)
            return ("multi", "mixed", [node, bad])
        m = MIMEMultipart()
        m.attach(build(insert(tree)))
        found = find_refused(parse_message(m.as_bytes()))
        self.assertIsNotNone(found)
        self.assertEqual(found.filename, bad[2])
