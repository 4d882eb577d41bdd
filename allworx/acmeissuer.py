# -*- test-case-name: allworx.tests.core.test_acmeissuer -*-
"""
A certificate from an ACME CA (RFC 8555, SPEC 17's `[tls] acme_directory`),
for `allworx.certificates`' keeper.

`AcmeIssuer.issue()` makes a key and a CSR for the names, orders them with
the account of `data_dir/tls/acme-account.key` (made once, 0600, registered
with `acme_email`), answers every HTTP-01 challenge by putting the key
authorization in `responses` (token -> key authorization, which the web
service's port-80 sites answer at `/.well-known/acme-challenge/TOKEN`),
polls the authorizations and then the order with back-off on the reactor,
and gives the key and the issued chain (PEM). The `acme` library is
blocking: each of its network calls runs in a thread (`in_thread`).

The ACME CA's own HTTPS is verified against the system's store, or against
the bundle named by the environment variable REQUESTS_CA_BUNDLE (honoured by
the `requests` library that `acme` uses): the lab's pebble sets it so.
"""

import os

from twisted.internet import defer, task, threads

from allworx.atomicfile import write_atomically

# SPEC 17: the names an ACME certificate carries, each under DOMAIN, after hostname.DOMAIN.
ACME_LABELS = ("www", "smtp", "pop", "imap", "mail", "autoconfig", "autodiscover")
ACCOUNT_KEY = "acme-account.key"
POLL_FIRST = 1          # seconds before the first look at a pending authorization or order
POLL_MAX = 16           # the longest wait between looks
POLL_DEADLINE = 300     # an order not done by then has failed
USER_AGENT = "allworx"


class AcmeError(Exception):
    """The ACME CA refused or failed the order; the message says why."""


def acme_names(config):
    """hostname.DOMAIN first, then SPEC 17's names under DOMAIN."""
    domain = config.system.domain
    out = []
    for label in (config.system.hostname,) + ACME_LABELS:
        name = "%s.%s" % (label, domain)
        if name not in out:
            out.append(name)
    return out


def account_key(path):
    """The ACME account's key (PEM), made once (RSA 2048, 0600) at `path`."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomically(path, pem, mode=0o600)
    return pem


def key_and_csr(names):
    """(key PEM, CSR PEM) of a new EC P-256 key for `names`."""
    from acme import crypto_util
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, crypto_util.make_csr(key_pem, list(names))


class LibraryClient:
    """
    One order's blocking conversation with an ACME CA, by the `acme`
    library; every method may block on the network (run it in a thread).
    """

    def __init__(self, directory_url, account_key_pem, email):
        self.directory_url = directory_url
        self.account_key_pem = account_key_pem
        self.email = email
        self.client = None
        self.order = None
        self.challenges = {}       # token -> challenge body

    def connect(self):
        """Read the directory and register the account (or find it registered)."""
        import josepy
        from acme import client, errors, messages
        from cryptography.hazmat.primitives import serialization
        key = josepy.JWKRSA(key=serialization.load_pem_private_key(self.account_key_pem, None))
        net = client.ClientNetwork(key, user_agent=USER_AGENT)
        directory = client.ClientV2.get_directory(self.directory_url, net)
        self.client = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True)
        try:
            self.client.new_account(registration)
        except errors.ConflictError as e:   # this key's account exists: use it
            net.account = messages.RegistrationResource(uri=e.location,
                                                        body=messages.Registration())

    def new_order(self, csr_pem):
        """Order the CSR's names; [(token, key authorization)] of its HTTP-01 challenges."""
        from acme import challenges
        self.order = self.client.new_order(csr_pem)
        out = []
        for authz in self.order.authorizations:
            http = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
            if not http:
                raise AcmeError("no HTTP-01 challenge offered for %s"
                                % authz.body.identifier.value)
            token = http[0].chall.encode("token")
            _, validation = http[0].chall.response_and_validation(self.client.net.key)
            self.challenges[token] = http[0]
            out.append((token, validation))
        return out

    def answer(self, token):
        """Tell the CA the challenge of `token` is ready."""
        challb = self.challenges[token]
        self.client.answer_challenge(challb, challb.chall.response(self.client.net.key))

    def authorizations(self):
        """[(name, status, error or None)] of the order's authorizations now."""
        out = []
        for authz in self.order.authorizations:
            authz, _ = self.client.poll(authz)
            errors = [str(c.error) for c in authz.body.challenges if c.error is not None]
            out.append((authz.body.identifier.value, authz.body.status.name,
                        "; ".join(errors) or None))
        return out

    def finalize(self):
        """Send the CSR to finalize the (ready) order."""
        self.order = self.client.begin_finalization(self.order)

    def order_state(self):
        """(status, fullchain PEM or None, error or None) of the order now."""
        from acme import messages
        response = self.client.net.post(self.order.uri, None,
                                        new_nonce_url=self.client.directory["newNonce"])
        body = messages.Order.from_json(response.json())
        chain = None
        if body.status == messages.STATUS_VALID and body.certificate is not None:
            chain = self.client.net.post(
                body.certificate, None,
                new_nonce_url=self.client.directory["newNonce"]).text.encode("ascii")
        return body.status.name, chain, str(body.error) if body.error is not None else None


class AcmeIssuer:
    """
    Gets certificates from ACME CAs; `responses` is the token -> key
    authorization map the port-80 sites answer from. `client_factory(url,
    account key PEM, email)` makes one order's client (LibraryClient);
    `in_thread` runs its blocking calls (deferToThread).
    """

    def __init__(self, reactor, responses=None, client_factory=LibraryClient,
                 in_thread=threads.deferToThread):
        self.reactor = reactor
        self.responses = {} if responses is None else responses
        self.client_factory = client_factory
        self.in_thread = in_thread

    def answer(self, token):
        """The key authorization for `token`, or None."""
        return self.responses.get(token)

    @defer.inlineCallbacks
    def issue(self, directory_url, email, account_key_path, names):
        """A Deferred: key PEM + chain PEM for `names`; fails with the reason."""
        account = yield self.in_thread(account_key, account_key_path)
        key_pem, csr_pem = yield self.in_thread(key_and_csr, names)
        client = self.client_factory(directory_url, account, email)
        yield self.in_thread(client.connect)
        challenges = yield self.in_thread(client.new_order, csr_pem)
        try:
            for token, validation in challenges:
                self.responses[token] = validation
            for token, _ in challenges:
                yield self.in_thread(client.answer, token)
            yield self._poll(client.authorizations, self._authorized, "the authorizations")
            yield self.in_thread(client.finalize)
            chain = yield self._poll(client.order_state, self._issued, "the order")
        finally:
            for token, _ in challenges:
                self.responses.pop(token, None)
        return key_pem + chain

    @staticmethod
    def _authorized(states):
        failed = ["%s: %s" % (name, error or status) for name, status, error in states
                  if status not in ("pending", "valid", "processing")]
        if failed:
            raise AcmeError("validation failed: " + "; ".join(failed))
        return all(status == "valid" for _, status, _ in states) or None

    @staticmethod
    def _issued(state):
        status, chain, error = state
        if status == "invalid":
            raise AcmeError("order refused: %s" % (error or "no reason given"))
        return chain if status == "valid" and chain else None

    @defer.inlineCallbacks
    def _poll(self, look, done, what):
        """Call `look` (in a thread) until `done(result)` is not None; back-off doubling."""
        deadline = self.reactor.seconds() + POLL_DEADLINE
        delay = POLL_FIRST
        while True:
            result = done((yield self.in_thread(look)))
            if result is not None:
                return result
            if self.reactor.seconds() + delay > deadline:
                raise AcmeError("%s not done after %d s" % (what, POLL_DEADLINE))
            yield task.deferLater(self.reactor, delay, lambda: None)
            delay = min(delay * 2, POLL_MAX)


def account_key_path(tls_directory):
    return os.path.join(tls_directory, ACCOUNT_KEY)
