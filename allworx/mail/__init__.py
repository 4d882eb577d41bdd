"""
The office's mail: SMTP in and out (with a durable outbound queue), aliases,
Maildir storage, the POP3 server and POP3 fetching (guide 7-9, SPEC 7).
"""
