"""
Small programs `allworx lab` runs inside its network namespaces.

`internet` is the internet host's services (web, echo, SMTP sink, POP3
mailboxes); `maildir` is the mail storage it shares with `allworx.lab`, which
reads what the sink received and drops messages into the POP3 mailboxes.
"""
