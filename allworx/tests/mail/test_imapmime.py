"""
Tests for allworx.protocols.mail.imapmime and mimetext: a message's MIME tree, BODY,
BODYSTRUCTURE, ENVELOPE and sections, read as Dovecot 2.3 reads them. Each expected answer
below is what Dovecot's imap answered for the same message (allworx.tests.lab.test_imapdovecot
compares the two on many more).
"""

from twisted.trial import unittest

from allworx.protocols.mail import imapmime, mimetext
from allworx.tests.mail.test_imap import ImapCase

ENCLOSED = (b'From: a@b\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\npre\r\n'
            b"--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: message/rfc822\r\n"
            b"\r\nFrom: c@d\r\nSubject: in\r\n\r\ninner body\r\n--XX--\r\nepi\r\n")


def structure(data, extended=True):
    return imapmime.structure(data, imapmime.parse(data), extended)


def envelope(data):
    return b"(" + imapmime.envelope(imapmime.parse(data)) + b")"


class StructureTests(unittest.TestCase):

    def test_a_multipart_with_an_enclosed_message(self):
        self.assertEqual(structure(ENCLOSED), (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)'
            b'("message" "rfc822" NIL NIL NIL "7bit" 36 (NIL "in" ((NIL NIL "c" "d")) '
            b'((NIL NIL "c" "d")) ((NIL NIL "c" "d")) NIL NIL NIL NIL NIL) ("text" "plain" '
            b'("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL) "mixed" '
            b'("boundary" "XX") NIL NIL NIL)'))
        self.assertEqual(structure(ENCLOSED, extended=False), (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)("message" "rfc822" NIL '
            b'NIL NIL "7bit" 36 (NIL "in" ((NIL NIL "c" "d")) ((NIL NIL "c" "d")) ((NIL NIL "c" "d")) '
            b'NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0) 3) '
            b'"mixed")'))

    def test_every_content_field_folded_and_in_its_own_case(self):
        data = (b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: Text/PLAIN; Charset=UTF-8; "
                b'Format="flowed"\r\nContent-Description: folded\r\n\tover two  lines\r\n'
                b"Content-ID: <id@x>\r\nContent-Transfer-Encoding: BASE64 \r\n"
                b"Content-Language: en, de-CH\r\nContent-Location: http://x/y\r\n"
                b'Content-MD5: abc==\r\nContent-Disposition: Inline; Filename="x y.txt"; size=10\r\n'
                b"\r\naGVsbG8=\r\n")
        self.assertEqual(structure(data), (
            b'("Text" "PLAIN" ("Charset" "UTF-8" "Format" "flowed") "<id@x>" "folded\tover two  '
            b'lines" "BASE64" 10 1 "abc==" ("Inline" ("Filename" "x y.txt" "size" "10")) '
            b'("en" "de-CH") "http://x/y")'))

    def test_rfc2231_parameters_and_strings_that_need_a_literal(self):
        data = (b'From: a@b\r\nContent-Type: application/pdf; name*0="a b"; name*1="c.pdf"\r\n'
                b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.pdf\r\n"
                b'Content-Description: say "hi" \\ there\r\n\r\nxx\r\n')
        self.assertEqual(structure(data), (
            b'("application" "pdf" ("name" "a bc.pdf") NIL "say \\"hi\\" \\\\ there" "7bit" 4 NIL '
            b"(\"attachment\" (\"filename*\" \"utf-8''%E2%82%AC.pdf\")) NIL NIL)"))
        eight_bit = (b"From: a@b\r\nContent-Description: d\xc3\xa9j\xc3\xa0\r\n"
                     b'Content-Type: text/plain; charset="iso-8859-1"\r\n\r\nx\r\n')
        self.assertEqual(structure(eight_bit), (
            b'("text" "plain" ("charset" "iso-8859-1") NIL {6}\r\nd\xc3\xa9j\xc3\xa0 "7bit" 3 1 '
            b"NIL NIL NIL NIL)"))

    def test_a_part_that_is_not_mime_keeps_no_content_field(self):
        data = b"From: a@b\r\nContent-Description: no mime version, no type\r\nContent-ID: <q>\r\n\r\nx\r\n"
        self.assertEqual(structure(data), b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" '
                                          b"3 1 NIL NIL NIL NIL)")

    def test_multiparts_without_a_boundary_or_without_parts(self):
        empty = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
        self.assertEqual(structure(b"From: a@b\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n"),
                         b"(" + empty + b' "mixed" NIL NIL NIL NIL)')
        self.assertEqual(structure(b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                                   b"--b--\r\nafter\r\n"),
                         b"(" + empty + b' "mixed" ("boundary" "b") NIL NIL NIL)')

    def test_boundaries_that_begin_with_the_enclosing_one_and_a_header_cut_short(self):
        nested = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                  b"Content-Type: multipart/alternative; boundary=bb\r\n\r\n--bb\r\n\r\nin1\r\n--b\r\n"
                  b"\r\nouter2\r\n--b--\r\n")
        self.assertEqual(structure(nested), (
            b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL) '
            b'"alternative" ("boundary" "bb") NIL NIL NIL)("text" "plain" ("charset" "us-ascii") '
            b'NIL NIL "7bit" 6 0 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)'))
        cut = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
               b"Content-Type: text/plain\r\nX-A: 1\r\n--b\r\nContent-Type: text/html\r\n\r\nh\r\n--b--\r\n")
        self.assertEqual(structure(cut), (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
            b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NIL NIL NIL) "mixed" '
            b'("boundary" "b") NIL NIL NIL)'))
        root = imapmime.parse(cut)
        self.assertEqual(imapmime.section(cut, root, [1], "MIME"), b"Content-Type: text/plain\r\nX-A: 1")

    def test_a_blank_line_right_before_a_boundary_is_the_boundary_s(self):
        data = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n"
                b"Content-Type: message/rfc822\r\n\r\nFrom: x@y\r\n\r\n--z--\r\n")
        self.assertEqual(structure(data), (
            b'(("message" "rfc822" NIL NIL NIL "7bit" 13 (NIL NIL ((NIL NIL "x" "y")) ((NIL NIL "x" '
            b'"y")) ((NIL NIL "x" "y")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") '
            b'NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL) "mixed" ("boundary" "z") NIL NIL '
            b"NIL)"))
        root = imapmime.parse(data)
        self.assertEqual(imapmime.section(data, root, [1], "HEADER"), b"From: x@y\r\n")
        self.assertEqual(imapmime.section(data, root, [1], None), b"From: x@y\r\n\r\n")

    def test_parameters_comments_and_repeated_fields(self):
        data = (b'From: a@b\r\nContent-Type: multipart/mixed; boundary="b"; charset=x\r\n'
                b"Content-Disposition: inline\r\n\r\n--b\r\nContent-Disposition: attachment\r\n\r\nx\r\n"
                b'--b\r\nContent-Type: TEXT/Plain; a=1; b="2 3"; c=\r\n\r\ny\r\n--b--\r\n')
        self.assertEqual(structure(data), (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL ("attachment" NIL) NIL '
            b'NIL)("TEXT" "Plain" ("a" "1" "b" "2 3" "c" "" "charset" "us-ascii") NIL NIL "7bit" 1 0 '
            b'NIL NIL NIL NIL) "mixed" ("boundary" "b" "charset" "x") ("inline" NIL) NIL NIL)'))
        repeated = (b"From: a@b\r\nContent-Disposition: inline\r\n"
                    b"Content-Disposition: attachment; filename=x\r\nContent-Type: text/plain\r\n"
                    b"Content-Description: d1\r\nContent-Description: d2\r\n\r\nx\r\n")
        self.assertEqual(structure(repeated), (
            b'("text" "plain" ("charset" "us-ascii") NIL "d1" "7bit" 3 1 NIL ("attachment" '
            b'("filename" "x")) NIL NIL)'))
        commented = (b'From: a@b\r\nContent-Type: (c) text/plain; charset=us-ascii (comment); x = "y"\r\n'
                     b"Content-Transfer-Encoding: 7bit (c)\r\nContent-Language: (x)\r\n\r\nx\r\n")
        self.assertEqual(structure(commented), b'("text" "plain" ("charset" "us-ascii" "x" "y") NIL '
                                               b'NIL "7bit" 3 1 NIL NIL NIL NIL)')

    def test_a_type_without_subtype(self):
        self.assertEqual(structure(b"From: a@b\r\nContent-Type: text\r\n\r\nx\r\n"),
                         b'("text" "" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)')
        self.assertEqual(structure(b"From: a@b\r\nContent-Type: text; charset=x\r\n\r\nx\r\n"),
                         b'("" "" NIL NIL NIL "7bit" 3 NIL NIL NIL NIL)')
        self.assertEqual(structure(b"From: a@b\r\nContent-Type: multipart\r\n\r\nx\r\n"),
                         b'("application" "octet-stream" NIL NIL NIL "7bit" 3 NIL NIL NIL NIL)')

    def test_body_of_a_plain_message_is_in_lower_case(self):
        data = b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: TEXT/Plain\r\n\r\nx\r\ny\r\n"
        self.assertEqual(structure(data, extended=False),
                         b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 2)')
        self.assertEqual(structure(data), b'("TEXT" "Plain" ("charset" "us-ascii") NIL NIL "7bit" 6 2 '
                                          b"NIL NIL NIL NIL)")

    def test_nesting_deeper_than_a_hundred_is_read_as_a_leaf(self):
        data = b"Content-Type: multipart/mixed; boundary=x000\r\n\r\n" + b"".join(
            b"--x%03d\r\nContent-Type: multipart/mixed; boundary=x%03d\r\n\r\n" % (i - 1, i)
            for i in range(1, 300)) + b"--x299\r\n\r\ndeep\r\n"
        out = structure(data)
        self.assertEqual(out.count(b'"application" "octet-stream" ("boundary" "x099")'), 1)
        self.assertEqual(out.count(b'"mixed"'), 99)


class SectionTests(unittest.TestCase):

    def test_parts_by_number(self):
        root = imapmime.parse(ENCLOSED)
        enclosed = b"From: c@d\r\nSubject: in\r\n\r\ninner body"
        expect = {(1,): b"hello", (1, 1): b"hello", (1, 1, 1): None, (2,): enclosed,
                  (2, 1): b"inner body", (2, 1, 1): None, (2, 2): None, (3,): None, (0,): None}
        for numbers, octets in expect.items():
            self.assertEqual(imapmime.section(ENCLOSED, root, list(numbers), None), octets, numbers)

    def test_headers_and_texts_only_of_messages(self):
        root = imapmime.parse(ENCLOSED)
        self.assertEqual(imapmime.section(ENCLOSED, root, [2], "HEADER"),
                         b"From: c@d\r\nSubject: in\r\n\r\n")
        self.assertEqual(imapmime.section(ENCLOSED, root, [2], "TEXT"), b"inner body")
        self.assertEqual(imapmime.section(ENCLOSED, root, [2, 1], "MIME"),
                         b"From: c@d\r\nSubject: in\r\n\r\n")
        self.assertIsNone(imapmime.section(ENCLOSED, root, [1], "HEADER"))
        self.assertIsNone(imapmime.section(ENCLOSED, root, [1], "TEXT"))
        self.assertEqual(imapmime.section(ENCLOSED, root, [], "TEXT"),
                         ENCLOSED[ENCLOSED.index(b"pre\r\n"):])
        self.assertEqual(imapmime.section(ENCLOSED, root, [1], "MIME"), b"Content-Type: text/plain\r\n\r\n")

    def test_one_part_message(self):
        data = b"From: a@b\r\n\r\nline one\r\n"
        root = imapmime.parse(data)
        self.assertEqual(imapmime.section(data, root, [1], None), b"line one\r\n")
        self.assertEqual(imapmime.section(data, root, [1], "MIME"), b"From: a@b\r\n\r\n")
        self.assertIsNone(imapmime.section(data, root, [1, 1], None))
        self.assertIsNone(imapmime.section(data, root, [2], None))


class EnvelopeTests(unittest.TestCase):

    def test_addresses_of_every_shape(self):
        data = (b'From: "J\xc3\xb6rg" <j@x.example>\r\nSubject: caf\xc3\xa9 =?utf-8?q?x?=\r\n'
                b'To: a@b, "Q, R" <q@r>, undisclosed-recipients:;\r\n'
                b"Cc: Group: m@n, o@p;, (comment) plain@x (c2)\r\n"
                b"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@x>\r\nIn-Reply-To: <p@x>\r\n"
                b"Reply-To: <r@s>\r\nBcc: broken, @nodomain, user@, <>\r\n\r\nx\r\n")
        self.assertEqual(envelope(data), (
            b'("Mon, 7 Dec 2026 10:00:00 +0000" {19}\r\ncaf\xc3\xa9 =?utf-8?q?x?= (({5}\r\nJ\xc3\xb6rg '
            b'NIL "j" "x.example")) (({5}\r\nJ\xc3\xb6rg NIL "j" "x.example")) ((NIL NIL "r" "s")) '
            b'((NIL NIL "a" "b")("Q, R" NIL "q" "r")(NIL NIL "undisclosed-recipients" NIL)'
            b'(NIL NIL NIL NIL)) ((NIL NIL "Group" NIL)(NIL NIL "m" "n")(NIL NIL "o" "p")'
            b'(NIL NIL NIL NIL)("c2" NIL "plain" "x")) ((NIL NIL "broken" "MISSING_DOMAIN")'
            b'(NIL NIL "MISSING_MAILBOX" "nodomain")(NIL NIL "user" "MISSING_DOMAIN")'
            b'(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) "<p@x>" "<m1@x>")'))

    def test_routes_quotes_and_missing_fields(self):
        self.assertEqual(envelope(b"Subject: only\r\n\r\nx\r\n"),
                         b'(NIL "only" NIL NIL NIL NIL NIL NIL NIL NIL)')
        data = (b'From: a@b\r\nSender: s@t\r\nSubject: with "quotes" and \\ backslash\r\n'
                b'To: "A \\"B\\"" <ab@c>, <@route,@r2:x@y>, x@[1.2.3.4]\r\n\r\nx\r\n')
        self.assertEqual(envelope(data), (
            b'(NIL {29}\r\nwith "quotes" and \\ backslash ((NIL NIL "a" "b")) ((NIL NIL "s" "t")) '
            b'((NIL NIL "a" "b")) (({5}\r\nA "B" NIL "ab" "c")(NIL "@route,@r2" "x" "y")'
            b'(NIL NIL "x" "[1.2.3.4]")) NIL NIL NIL NIL)'))
        data = (b"From: a@b (Name In Comment)\r\nTo: Name With Spaces <n@w>\r\nSubject: \r\n"
                b"Message-ID: \r\n  <folded@x>\r\n\r\nx\r\n")
        self.assertEqual(envelope(data), (
            b'(NIL "" (("Name In Comment" NIL "a" "b")) (("Name In Comment" NIL "a" "b")) '
            b'(("Name In Comment" NIL "a" "b")) (("Name With Spaces" NIL "n" "w")) NIL NIL NIL '
            b'"  <folded@x>")'))

    def test_repeated_fields_the_last_string_and_every_address(self):
        data = (b"From: a@b\r\nSubject: first\r\nSubject: second\r\nTo: x@y\r\nTo: z@w\r\n"
                b"Message-ID: <1@x>\r\nMessage-ID: <2@x>\r\n\r\nx\r\n")
        self.assertEqual(envelope(data), (
            b'(NIL "second" ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) '
            b'((NIL NIL "x" "y")(NIL NIL "z" "w")) NIL NIL NIL "<2@x>")'))
        self.assertEqual(envelope(b"From: a@b\r\nSubject:   spaced\t\tout  \r\n\r\nx\r\n"),
                         b'(NIL {10}\r\nspaced out ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) '
                         b'((NIL NIL "a" "b")) NIL NIL NIL NIL NIL)')


class StringTests(unittest.TestCase):

    def test_quoted_or_literal(self):
        self.assertEqual(imapmime.string(None), b"NIL")
        self.assertEqual(imapmime.string(b"plain"), b'"plain"')
        self.assertEqual(imapmime.string(b'a"b\\c"d\\'), b'"a\\"b\\\\c\\"d\\\\"')    # four: quoted
        self.assertEqual(imapmime.string(b'a"b"c"d"e"'), b'{10}\r\na"b"c"d"e"')    # five: a literal
        self.assertEqual(imapmime.string(b"a\r\nb"), b"{4}\r\na\r\nb")
        self.assertEqual(imapmime.string(b"caf\xc3\xa9"), b"{5}\r\ncaf\xc3\xa9")
        self.assertEqual(imapmime.string_nolf(b"one\r\n two"), b'"one two"')

    def test_for_humans(self):
        self.assertEqual(imapmime.for_humans(b"as is"), b'"as is"')
        self.assertEqual(imapmime.for_humans(b"  two\t\tspaces "), b"{10}\r\ntwo spaces")
        self.assertEqual(imapmime.for_humans(b"   "), b'""')
        self.assertEqual(imapmime.for_humans(b'say "x"'), b'{7}\r\nsay "x"')


class MimeTextTests(unittest.TestCase):

    def test_content_types(self):
        self.assertEqual(mimetext.content_type(b"text/plain; charset=us-ascii"),
                         (b"text", b"plain", [(b"charset", b"us-ascii")]))
        self.assertEqual(mimetext.content_type(b" (c) Text / HTML ;name=\"a b\" (d)"),
                         (b"Text", b"HTML", [(b"name", b"a b")]))
        self.assertEqual(mimetext.content_type(b"text"), (b"text", None, None))
        self.assertEqual(mimetext.content_type(b"text; x=y"), (b"", None, None))
        # a parameter that does not read is passed over up to the next ; but one
        self.assertEqual(mimetext.content_type(b"a/b; broken; lost=1; name==?utf-8?b?w6k=?="),
                         (b"a", b"b", [(b"name", b"=?utf-8?b?w6k=?=")]))

    def test_rfc2231_continuations(self):
        _, _, params = mimetext.content_type(b'a/b; n*1="2"; n*0="1"; f*=utf-8\'\'%41')
        self.assertEqual(params, [(b"f*", b"utf-8''%41"), (b"n", b"12")])
        _, _, params = mimetext.content_type(b'a/b; n*0="1"; n*2="3"')      # one missing: as they are
        self.assertEqual(params, [(b"n*0", b"1"), (b"n*2", b"3")])
        _, _, params = mimetext.content_type(b"a/b; n*0*=utf-8''%41; n*1=5%")
        self.assertEqual(params, [(b"n*", b"utf-8''%415%25")])

    def test_tokens_and_languages(self):
        self.assertEqual(mimetext.mime_token(b" BASE64 (c)"), b"BASE64")
        self.assertIsNone(mimetext.mime_token(b"x y"))
        self.assertEqual(mimetext.languages(b"en, de-CH"), [b"en", b"de-CH"])
        self.assertIsNone(mimetext.languages(b"(only a comment)"))
        self.assertEqual(mimetext.disposition(b"attachment; filename=x"),
                         (b"attachment", [(b"filename", b"x")]))

    def test_addresses(self):
        self.assertEqual(mimetext.addresses(b"two words@x"),
                         [(b"two words", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")])
        self.assertEqual(mimetext.addresses(b"<@a,@b:m@d>"), [(None, b"@a,@b", b"m", b"d")])
        self.assertEqual(mimetext.addresses(b"Name <m@d"), [(b"Name", None, b"m", b"SYNTAX_ERROR")])
        self.assertEqual(mimetext.addresses(b"  "), [])


class FetchTests(ImapCase):
    """The items through an IMAP session."""

    def test_envelope_of_a_message_with_8_bit_fields_and_no_from(self):
        # twisted's ENVELOPE failed on 8-bit octets (the whole FETCH ended NO) and wrote a
        # missing From as ((NIL NIL NIL)), three fields where IMAP has four
        self.deliver(b"Subject: caf\xc3\xa9\r\nTo: J\xc3\xb6rg <j@x>\r\n\r\nbody\r\n")
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 4 (ENVELOPE BODYSTRUCTURE BODY)")
        self.assertIn(b'* 4 FETCH (ENVELOPE (NIL {5}\r\ncaf\xc3\xa9 NIL NIL NIL (({5}\r\nJ\xc3\xb6rg '
                      b'NIL "j" "x")) NIL NIL NIL NIL) BODYSTRUCTURE ("text" "plain" ("charset" '
                      b'"us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL) BODY ("text" "plain" '
                      b'("charset" "us-ascii") NIL NIL "7bit" 6 1))\r\nf1 OK', out)

    def test_uid_fetch_of_structures_with_parts(self):
        self.deliver(ENCLOSED)
        p, t = self.select()
        out = self.talk(p, t, b"f1 UID FETCH 4 (BODY.PEEK[2.TEXT] BODY.PEEK[9] BODYSTRUCTURE)")
        self.assertIn(b"* 4 FETCH (BODY[2.TEXT] {10}\r\ninner body BODY[9] {0}\r\n BODYSTRUCTURE "
                      + structure(ENCLOSED) + b" UID 4)\r\nf1 OK", out)
