"""
The office's mail: SMTP in and out (with a durable outbound queue), aliases,
Maildir storage, the POP3 server and POP3 fetching (guide 7-9, SPEC 7).

Modules, from the wire inwards:

    service.py    the "mail" child: smtp, submission, pop3, imap, queue, fetch
    smtp.py       the SMTP/submission protocol (thin), smtpwire.py its text rules,
                  transaction.py the MAIL/RCPT/DATA state machine
    policy.py     who may send to whom (relay decisions)
    aliases.py    what an address means: users, aliases, outside addresses
    store.py      Maildir per user; `deliver` is the one way in (IMailStore)
    durable.py    group-commit fsync in worker threads
    queue.py      the outbound queue (IMailQueue), relay.py routing and sending,
                  dsn.py bounces
    pop3.py       the POP3 server over the store
    imap.py       the IMAP server (imapfolders.py its folder commands,
                  imapmessage.py messages for FETCH, imapfetch.py FETCH's
                  responses streamed, imapstore.py folders,
                  UIDs and flags over the store's Maildirs)
    fetch.py      POP3 fetching, multidrop.py routing for the admin's accounts

On disk under `data_dir`: `mail/USER/{tmp,new,cur}` (Maildir; a message's
name is `ID,W=SIZE`, its POP3 UID), `queue/ID.eml` + `queue/ID.json`,
`fetch/*.json` (UIDs fetched per account). TLS (STARTTLS, STLS, 465, 995)
uses the server's certificate (`allworx.certificates`, under `tls/`).

For the rest of the server (the mail service's `store`, handed over by
`allworx.service`):
`deliver([user or address, ...], message_bytes, sender=None)` -> Deferred
firing with `Delivered(id, users, external)` once every copy is fsynced
(aliases apply; outside addresses are queued); `list_messages(user)` ->
[`MessageInfo(uid, size, seen, voicemail, date, sender, subject)`] oldest
first (`sender` is the From header); `read_message`, `delete_message`,
`mark_seen`. A message whose header has `X-Allworx-Voicemail: yes` counts as
voicemail; the store emits `MailboxChanged(user, new, heard)` when those
counts change, whoever changed them (phone, POP3, delivery).
"""
