# -*- test-case-name: allworx.tests.web.test_api -*-
"""
The OpenAPI 3 description of `/api/v1/`, built from the config model so the
fields it lists are exactly the keys of tap.conf.
"""

from allworx import __version__
from allworx.config import RECORD_PLURALS, RECORD_SECTIONS, SETTINGS_SECTIONS, keys_of
from allworx.config.values import JSON_BOOLEAN, JSON_NUMBER, JSON_TEXT, json_type
from allworx.interfaces import CALL_DIRECTIONS, CALL_FIELDS, CALL_OUTCOMES
from allworx.protocols.web.apipages import PAGE_HEADERS, page_parameters
from allworx.protocols.web.changes import SERVER_KEYS
from allworx.protocols.web.logview import logs_paths
from allworx.protocols.web.mailsecurity import VERDICTS

COLLECTIONS = tuple((plural, kind) for kind, plural in RECORD_PLURALS.items())
# SPEC 10: yes/no keys as booleans, ports and counts as numbers, the rest (durations
# and sizes among them) as the text tap.conf holds.
JSON_SCHEMA_TYPES = {JSON_BOOLEAN: "boolean", JSON_NUMBER: "number", JSON_TEXT: "string"}


def _fields_schema(cls, kind, writable=True):
    props = {}
    for f in keys_of(cls):
        if f.name in SERVER_KEYS.get(kind, ()):
            continue
        props[f.name] = {"type": JSON_SCHEMA_TYPES.get(json_type(f.metadata["parse"]), "string"),
                         "description": f.metadata.get("doc") or "tap.conf key %s" % f.name}
    if kind == "user":
        props["password"] = {"type": "string", "writeOnly": True,
                             "description": "plain text; stored as an argon2 hash with the SIP digest"}
        props["voicemail_pin"] = {"type": "string", "description": (
            "4 to 10 digits, stored hashed; read as 'set' or 'not set', and either sent "
            "back keeps the PIN; empty removes it")}
        props["admin"] = {"type": "boolean", "description": "may use the admin pages and the "
                          "API; at least one user stays an admin"}
        if not writable:
            props["mail"] = {"type": "string", "readOnly": True}
    if kind == "trunk":
        props["secret"] = {"type": "string", "writeOnly": True, "description": (
            "the provider's password, verbatim; never shown; left out or empty on a "
            "change keeps it")}
    if kind == "web":
        props["admin_password"] = {"type": "string", "writeOnly": True,
                                   "description": "plain text: the logged-in admin's own new "
                                                  "password, stored hashed; ends every page session"}
        props["metrics_token"] = {"type": "string", "writeOnly": True, "description": (
            "the bearer token /metrics accepts (16 or more characters); never shown")}
    return {"type": "object", "properties": props, "additionalProperties": False}


def _nullable_string():
    return {"type": "string", "nullable": True}


def _json(schema):
    return {"application/json": {"schema": schema}}


ERROR = {"type": "object", "required": ["errors"], "properties": {
    "errors": {"type": "array", "description": "every mistake at once", "items": {
        "type": "object", "required": ["section", "key", "message"], "properties": {
            "section": _nullable_string(), "key": _nullable_string(),
            "message": {"type": "string"}}}},
    "error": {"type": "string"}, "field": {"type": "string"}, "reason": {"type": "string"}}}

RESPONSES = {
    "400": {"description": "Invalid: the body names every mistake; nothing changed",
            "content": _json({"$ref": "#/components/schemas/Error"})},
    "401": {"description": "No or wrong credentials"},
    "404": {"description": "No such resource"},
}


def _nullable(kind):
    return {"type": kind, "nullable": True}


CALL = {"type": "object", "required": list(CALL_FIELDS), "properties": {
    "id": {"type": "string"},
    "start": {"type": "string", "format": "date-time", "description": "when the call was offered"},
    "end": {"type": "string", "format": "date-time"},
    "direction": {"type": "string", "enum": list(CALL_DIRECTIONS)},
    "from": {"type": "string", "description": "the caller: an extension or an E.164 number"},
    "from_name": _nullable("string"),
    "to": {"type": "string", "description": "what was dialled: E.164 for outside numbers, "
                                            "else the extension or group number"},
    "answered_by": dict(_nullable("string"), description="the extension that answered"),
    "trunk": dict(_nullable("string"), description="the trunk of an outside call"),
    "duration_s": {"type": "integer", "description": "seconds talked"},
    "outcome": {"type": "string", "enum": list(CALL_OUTCOMES)}}}


def diagnostics_path():
    """POST /api/v1/diagnostics/{kind}: the body, and the text/plain lines streamed back."""
    errors = {"type": "object", "properties": {"errors": {"type": "array", "items": {
        "type": "object", "properties": {"section": {"type": "string", "enum": ["diagnostics"]},
                                         "key": {"type": "string"}, "message": {"type": "string"}}}}}}
    return {"post": {
        "summary": "Run ping, a DNS lookup, a TCP connect or a traceroute from the server",
        "description": ("The answer streams as text/plain, one line at a time as the run goes, "
                        "and ends with a summary line (`4 sent, 4 received, 0% loss, avg 0.3 ms`, "
                        "`resolved in 2 ms`, `connected in 1.2 ms`, `reached in 5 hops`). dns asks "
                        "the server's own resolver, then each forwarder ([dns] primary, secondary) "
                        "or `server`. At most 2 runs at once, each for at most 60 s."),
        "parameters": [{"name": "kind", "in": "path", "required": True,
                        "schema": {"type": "string", "enum": ["ping", "dns", "tcp", "traceroute"]}}],
        "requestBody": {"required": True, "content": _json({
            "type": "object", "required": ["target"], "properties": {
                "target": {"type": "string", "description": "a host name (RFC 1123) or an IP address"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                         "description": "tcp: the port to connect to"},
                "server": {"type": "string", "description": "dns: a DNS server's address to ask "
                                                            "instead of the forwarders"},
                "type": {"type": "string", "description": "dns: the record type (A and AAAA, "
                                                          "or PTR for an address, if left out)"}}})},
        "responses": {
            "200": {"description": "the run's lines as they come, the last one its summary",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "400": {"description": "a bad target, port or server; nothing run",
                    "content": _json(errors)},
            "401": RESPONSES["401"],
            "404": {"description": "no such diagnostic"},
            "429": {"description": "2 diagnostics are running already"},
            "503": {"description": "the program (ping, traceroute) is not installed"}}}}


def calls_path():
    """GET /api/v1/calls: its query parameters and both answers."""
    def param(name, schema, description):
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": description}
    return {"get": {
        "summary": "Ended calls, newest first (JSON, or CSV with format=csv)",
        "parameters": [
            param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                  "calls per page (no upper bound for CSV, which without it has every call)"),
            param("offset", {"type": "integer", "minimum": 0, "default": 0}, "calls skipped"),
            param("direction", {"type": "string", "enum": list(CALL_DIRECTIONS)}, "only these"),
            param("outcome", {"type": "string", "enum": list(CALL_OUTCOMES)}, "only these"),
            param("q", {"type": "string"}, "text in the caller's or callee's number or name"),
            param("since", {"type": "string", "format": "date-time"}, "started at or after"),
            param("until", {"type": "string", "format": "date-time"}, "started before"),
            param("format", {"type": "string", "enum": ["json", "csv"], "default": "json"},
                  "csv: the columns %s in that order, a header row; a cell starting "
                  "with = + - @ gets a leading '" % ", ".join(CALL_FIELDS))],
        "responses": {
            "200": {"description": "a page of calls and how many match", "content": dict(_json({
                "type": "object", "properties": {
                    "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
                    "total": {"type": "integer"}, "limit": _nullable("integer"),
                    "offset": {"type": "integer"}}}),
                **{"text/csv": {"schema": {"type": "string"}}})},
            "400": RESPONSES["400"], "401": RESPONSES["401"],
            "503": {"description": "the phone system is not running"}}}}


MAIL_RECORD = {"type": "object", "properties": {
    "name": {"type": "string", "description": "fully qualified, e.g. allworx._domainkey.example.com"},
    "type": {"type": "string", "enum": ["TXT"]},
    "value": {"type": "string", "description": "the record's text, to publish as it is"},
    "purpose": {"type": "string", "enum": ["dkim", "spf", "dmarc"]},
    "source": {"type": "string", "enum": ["built-in", "record"],
               "description": "record: a [record] of tap.conf overrides the built-in one"},
    "note": {"type": "string", "description": "advice, such as the smarthost provider's include"}}}

MAIL_DECISION = {"type": "object", "properties": {
    "time": {"type": "string", "format": "date-time"},
    "client": {"type": "string", "description": "the sending server's address"},
    "helo": {"type": "string"}, "sender": {"type": "string", "description": "MAIL FROM"},
    "recipients": {"type": "array", "items": {"type": "string"}},
    "verdict": {"type": "string", "enum": list(VERDICTS)},
    "reason": {"type": "string"}, "score": _nullable("number"),
    "auth": {"type": "string", "description": "the Authentication-Results value, or empty"}}}


def mail_security_paths():
    """GET /api/v1/mail/security and POST /api/v1/mail/dkim/rotate (SPEC 18)."""
    off = {"description": "the mail service is not running", "content": _json(
        {"$ref": "#/components/schemas/Error"})}
    return {
        "/api/v1/mail/security": {"get": {
            "summary": "DNS records to publish, the last decisions on mail from the internet "
                       "(newest first) and each user's Junk count",
            "parameters": [
                {"name": "limit", "in": "query", "required": False, "description": "decisions",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
                {"name": "verdict", "in": "query", "required": False, "description": "only these",
                 "schema": {"type": "string", "enum": list(VERDICTS)}}],
            "responses": {
                "200": {"description": "records, decisions, junk", "content": _json({
                    "type": "object", "properties": {
                        "records": {"type": "array",
                                    "items": {"$ref": "#/components/schemas/MailRecord"}},
                        "decisions": {"type": "array",
                                      "items": {"$ref": "#/components/schemas/MailDecision"}},
                        "junk": {"type": "object", "additionalProperties": {"type": "integer"},
                                 "description": "user -> messages in the Junk folder"}}})},
                "400": RESPONSES["400"], "401": RESPONSES["401"], "503": off}}},
        "/api/v1/mail/dkim/rotate": {"post": {
            "summary": "New DKIM keys under a new selector; the old one stays published while "
                       "queued mail is signed with it",
            "responses": {
                "200": {"description": "the new selector", "content": _json({
                    "type": "object", "properties": {"selector": {"type": "string"}}})},
                "401": RESPONSES["401"], "503": off}}},
    }


SITE = {"type": "object", "required": ["name", "endpoint", "address", "networks", "last_handshake",
                                      "rx_bytes", "tx_bytes", "server_answers", "checked_at"],
        "additionalProperties": False, "properties": {
    "name": {"type": "string"},
    "endpoint": dict(_nullable("string"), description="host:port the peer is reached at "
                                                      "(learnt, else configured); null if neither"),
    "address": {"type": "string", "description": "its server's tunnel address"},
    "networks": {"type": "array", "items": {"type": "string"}, "description": "its LAN CIDRs"},
    "last_handshake": dict(_nullable("string"), format="date-time",
                           description="null before the first"),
    "rx_bytes": {"type": "integer"}, "tx_bytes": {"type": "integer"},
    "server_answers": {"type": "boolean", "description": (
        "whether its server answered the last probe over the tunnel (SIP OPTIONS to port 5060 "
        "or a DNS SOA query for its domain, every 30 s, 2 s to answer); false before the first")},
    "checked_at": dict(_nullable("string"), format="date-time",
                       description="when it was last probed; null before the first probe")}}


def sites_paths():
    """GET /api/v1/sites (its tunnel state) and the devices' client configs (SPEC 16)."""
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    off = {"description": "no config now (the tunnel is off, no server key yet, no endpoint "
                          "known): the reason says which", "content": _json(
        {"$ref": "#/components/schemas/Error"})}
    shown = ("A server-made private key is in the first config (text or QR) after the key was "
             "made, and only there: later ones say PrivateKey = (shown once).")
    return {
        "/api/v1/sites": {"get": {
            "summary": "Each site's tunnel: endpoint, address, networks, last handshake, bytes, "
                       "whether its server answers", "responses": {
                "200": {"description": "one object per [site], in name order", "content": _json(
                    {"type": "array", "items": {"$ref": "#/components/schemas/SiteStatus"}})},
                "401": RESPONSES["401"]}},
            "post": {"summary": "Create a site (name in the body)",
                     "requestBody": {"content": _json({"$ref": "#/components/schemas/Site"})},
                     "responses": dict(RESPONSES, **{"201": {"description": "created"},
                                                     "409": {"description": "exists already"}})}},
        "/api/v1/devices/{name}/wireguard.conf": {"parameters": name, "get": {
            "summary": "The device's WireGuard client config. " + shown, "responses": {
                "200": {"description": "the config", "content": {
                    "text/plain": {"schema": {"type": "string"}}}},
                "401": RESPONSES["401"], "404": RESPONSES["404"], "503": off}}},
        "/api/v1/devices/{name}/wireguard.png": {"parameters": name, "get": {
            "summary": "The same config as a QR code for the WireGuard apps. " + shown,
            "responses": {
                "200": {"description": "a PNG", "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}}}},
                "401": RESPONSES["401"], "404": RESPONSES["404"], "503": off}}},
        "/api/v1/devices/{name}/key": {"parameters": name, "post": {
            "summary": "A new server-made key pair for the device (the old one stops working); "
                       "its private key is shown once, in the next config",
            "responses": {
                "200": {"description": "the new public key", "content": _json(
                    {"type": "object", "properties": {"public_key": {"type": "string"}}})},
                "401": RESPONSES["401"], "404": RESPONSES["404"],
                "409": {"description": "the device brings its own key"}}}},
    }


PHONE = {"type": "object", "required": ["mac", "model", "user", "label", "address", "last_fetch",
                                         "registered", "state"], "properties": {
    "mac": {"type": "string", "pattern": "^[0-9a-f]{12}$", "description": "12 lowercase hex digits"},
    "model": dict(_nullable("string"), description=(
        "yealink, polycom, grandstream, snom, cisco-spa or generic: the section's, else the "
        "one guessed from the file it asked for, its vendor class or User-Agent; null: unknown")),
    "user": dict(_nullable("string"), description="the owner ([user] name); null for a new phone"),
    "label": {"type": "string", "description": "shown on the phone's screen"},
    "address": dict(_nullable("string"), description=(
        "the LAN address holding its DHCP lease, else the one it last asked from")),
    "last_fetch": dict(_nullable("string"), format="date-time",
                       description="when it last fetched its file; null: never seen"),
    "registered": {"type": "boolean", "description": (
        "registered from its address (as its owner's extension, for an assigned phone)")},
    "state": {"type": "string", "enum": ["new", "assigned"], "description": (
        "assigned: it has a [phone MAC] section; new: it asked for its file without one")}}}


def phones_paths():
    """/api/v1/phones and the actions on one phone (SPEC 19)."""
    mac = [{"name": "mac", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "the MAC in any common notation (001565abcdef, 00:15:65:AB:CD:EF, ...)"}]
    ref = {"$ref": "#/components/schemas/PhoneStatus"}
    changed = {"allOf": [ref, {"type": "object", "properties": {"resync": dict(
        _nullable("boolean"), description="true: the phone took the check-sync NOTIFY; false: "
        "not registered or refused (it takes the change when it next asks); null: no answer "
        "within a few seconds")}}]}
    give = {"type": "object", "required": ["user"], "properties": {
        "user": {"type": "string", "description": "the owner: a user's name, extension or address"},
        "model": {"type": "string", "description": "left out: the one the phone was seen as"},
        "label": {"type": "string"}}}
    answer = {"description": "the phone now", "content": _json(changed)}
    return {
        "/api/v1/phones": {"get": {
            "summary": "The phones: assigned ones, then new ones (seen asking for their files), "
                       "a page at a time",
            "parameters": page_parameters("phones"),
            "responses": {"200": {"description": "by state, then MAC", "headers": PAGE_HEADERS,
                                  "content": _json({"type": "array", "items": ref})},
                          "400": RESPONSES["400"], "401": RESPONSES["401"]}}},
        "/api/v1/phones/{mac}": {"parameters": mac, "get": {
            "summary": "One phone", "responses": dict(RESPONSES, **{"200": {
                "description": "the phone", "content": _json(ref)}})},
            "post": {"summary": "Give the phone to a user in one step: writes its [phone MAC] "
                                "section (or changes the keys given) and tells it to re-sync",
                     "requestBody": {"content": _json(give)},
                     "responses": dict(RESPONSES, **{"200": answer, "201": answer})},
            "put": {"summary": "Create or replace the phone's section, then re-sync",
                    "requestBody": {"content": _json(give)},
                    "responses": dict(RESPONSES, **{"200": answer, "201": answer})},
            "patch": {"summary": "Change keys of an assigned phone, then re-sync",
                      "requestBody": {"content": _json(dict(give, required=[]))},
                      "responses": dict(RESPONSES, **{"200": answer})},
            "delete": {"summary": "Remove the phone's section (a new phone again when it next "
                                  "asks)", "responses": dict(RESPONSES, **{"204": {
                                      "description": "gone"}})}},
        "/api/v1/phones/{mac}/secret": {"parameters": mac, "post": {
            "summary": "A new SIP secret for an assigned phone (never shown), then a re-sync",
            "responses": dict(RESPONSES, **{"200": {"description": "rotated", "content": _json(
                {"allOf": [changed, {"type": "object", "properties": {
                    "rotated": {"type": "boolean"}}}]})},
                "503": {"description": "the provisioning service is not running"}})}},
    }


def stats_paths():
    """GET /api/v1/stats and /api/v1/stats/{name} (SPEC 20)."""
    series = {"type": "object", "required": ["name", "unit", "path"], "properties": {
        "name": {"type": "string"}, "unit": {"type": "string"}, "path": {"type": "string"}}}
    points = {"type": "object", "required": ["name", "unit", "step_s", "points"], "properties": {
        "name": {"type": "string"}, "unit": {"type": "string"},
        "step_s": {"type": "integer", "enum": [10, 300, 1800]},
        "points": {"type": "array", "description": "oldest first; a step with no sample "
                   "has no point", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                             "items": {}, "example": ["2026-12-07T10:00:00Z", 1.5]}}}}
    unavailable = {"description": "the statistics are not kept by this server"}
    return {
        "/api/v1/stats": {"get": {
            "summary": "The series kept for the dashboard (throughput, flows, DNS, DHCP, mail, "
                       "calls)", "responses": {
                "200": {"description": "the series", "content": _json({
                    "type": "object", "properties": {"series": {"type": "array", "items": series}}})},
                "401": RESPONSES["401"], "503": unavailable}}},
        "/api/v1/stats/{name}": {
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "range", "in": "query", "required": False, "schema": {
                    "type": "string", "enum": ["hour", "day", "week"], "default": "hour"}}],
            "get": {"summary": "A series' points: 10 s steps over the last hour, 5 min over "
                               "the day, 30 min over the week (averages), kept across restarts",
                    "responses": {
                        "200": {"description": "[RFC 3339 time, value] pairs", "content": _json(points)},
                        "400": RESPONSES["400"], "401": RESPONSES["401"], "404": RESPONSES["404"],
                        "503": unavailable}}},
    }


def backup_paths():
    """The whole office's backup and restore, the kept backups, tap.conf's history (SPEC 20)."""
    gz = {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    number = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    version = {"type": "object", "properties": {
        "id": {"type": "integer"}, "time": {"type": "string", "format": "date-time"},
        "actor": {"type": "string"}, "via": {"type": "string"},
        "sections": {"type": "array", "items": {"type": "string"}}}}
    kept = {"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"},
                                             "time": {"type": "string", "format": "date-time"}}}

    def ok(description, schema=None):
        answer = {"description": description}
        if schema is not None:
            answer["content"] = _json(schema)
        return dict(RESPONSES, **{"200": answer})
    return {
        "/api/v1/backup": {
            "get": {"summary": "The whole office (tap.conf and data/) as a .tar.gz, streamed",
                    "responses": {"200": {"description": "the archive", "content": gz}}},
            "post": {"summary": "Restore the whole office from such an archive: checked whole "
                                "first (400 says why, nothing changed), the state before kept "
                                "as a backup, then the services restart",
                     "requestBody": {"content": gz},
                     "responses": ok("restored", {"type": "object", "properties": {
                         "restored": {"type": "boolean"}, "pre_restore_backup": {"type": "string"},
                         "files": {"type": "integer"}, "bytes": {"type": "integer"},
                         "restarting": {"type": "boolean"}}})},
            "put": {"summary": "Restore a tap.conf alone, validated whole first",
                    "requestBody": {"content": _json({"type": "object", "properties": {
                        "text": {"type": "string"}}})},
                    "responses": ok("restored")}},
        "/api/v1/backup/tap.conf": {
            "get": {"summary": "tap.conf as it stands", "responses": {"200": {
                "description": "the file", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/v1/backups": {
            "get": {"summary": "The kept backups (data_dir/backups), newest first",
                    "responses": ok("the backups", {"type": "object", "properties": {
                        "backups": {"type": "array", "items": kept}}})},
            "post": {"summary": "Write a backup now", "responses": ok("its name", {
                "type": "object", "properties": {"name": {"type": "string"}}})}},
        "/api/v1/backups/{name}": {
            "parameters": name,
            "get": {"summary": "One kept backup", "responses": {
                "200": {"description": "the archive", "content": gz}}},
            "delete": {"summary": "Remove a kept backup",
                       "responses": dict(RESPONSES, **{"204": {"description": "removed"}})}},
        "/api/v1/config/history": {
            "get": {"summary": "tap.conf's kept versions: who, when, which sections; newest first",
                    "responses": ok("the versions", {"type": "object", "properties": {
                        "versions": {"type": "array", "items": version}}})}},
        "/api/v1/config/history/{id}": {
            "parameters": number,
            "get": {"summary": "One version with its diff from the one before and its text",
                    "responses": ok("the version", version)}},
        "/api/v1/config/history/{id}/revert": {
            "parameters": number,
            "post": {"summary": "Make this version the configuration again (validated like "
                                "any change, kept as a new version); send {} as JSON",
                     "responses": ok("reverted", {"type": "object", "properties": {
                         "reverted": {"type": "integer"}, "version": version}})}},
    }


def openapi_document():
    """The OpenAPI document served at /api/v1/openapi.json."""
    paths = {}
    schemas = {"Error": ERROR}
    for section, cls in SETTINGS_SECTIONS.items():
        schemas["Settings_%s" % section] = _fields_schema(cls, section)
    paths["/api/v1/settings"] = {"get": {
        "summary": "Every settings section, by name", "responses": dict(RESPONSES, **{"200": {
            "description": "section -> its keys", "content": _json({"type": "object"})}})}}
    paths["/api/v1/settings/{section}"] = {
        "parameters": [{"name": "section", "in": "path", "required": True,
                        "schema": {"type": "string", "enum": list(SETTINGS_SECTIONS)}}],
        "get": {"summary": "The keys of a settings section (booleans, numbers, the file's own words)", "responses": dict(
            RESPONSES, **{"200": {"description": "the keys", "content": _json({"type": "object"})}})},
        "patch": {"summary": "Change some keys (applied live, validated whole)",
                  "requestBody": {"content": _json({"type": "object"})},
                  "responses": dict(RESPONSES, **{"200": {"description": "the keys now"}})},
        "put": {"summary": "Same as PATCH: change the keys given",
                "requestBody": {"content": _json({"type": "object"})},
                "responses": dict(RESPONSES, **{"200": {"description": "the keys now"}})},
    }
    for plural, kind in COLLECTIONS:
        cls = RECORD_SECTIONS[kind]
        name = kind.capitalize()
        schema = _fields_schema(cls, kind, writable=False)
        schema["properties"]["name"] = {"type": "string"}
        schemas[name] = schema
        ref = {"$ref": "#/components/schemas/%s" % name}
        paths["/api/v1/%s" % plural] = {
            "get": {"summary": "The %ss, by name, a page at a time" % kind,
                    "parameters": page_parameters("%ss" % kind), "responses": dict(
                        RESPONSES, **{"200": {"description": "a page of the list", "headers": PAGE_HEADERS,
                                              "content": _json({"type": "array", "items": ref})}})},
            "post": {"summary": "Create a %s (name in the body)" % kind,
                     "requestBody": {"content": _json(ref)},
                     "responses": dict(RESPONSES, **{"201": {"description": "created", "content": _json(ref)},
                                                     "409": {"description": "exists already"}})},
        }
        paths["/api/v1/%s/{name}" % plural] = {
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": "One %s" % kind, "responses": dict(
                RESPONSES, **{"200": {"description": kind, "content": _json(ref)}})},
            "put": {"summary": "Create or replace", "requestBody": {"content": _json(ref)},
                    "responses": dict(RESPONSES, **{"200": {"description": kind}})},
            "patch": {"summary": "Change some fields", "requestBody": {"content": _json(ref)},
                      "responses": dict(RESPONSES, **{"200": {"description": kind}})},
            "delete": {"summary": "Remove", "responses": dict(RESPONSES, **{"204": {"description": "gone"}})},
        }
    for path, what, summary in (
            ("/api/v1/dhcp/leases", "leases",
             "DHCP leases (mac, address, hostname, expires, state, vendor_class), a page at a time"),
            ("/api/v1/mail/queue", "messages", "Outbound mail queue, a page at a time"),
            ("/api/v1/sip/registrations", "registrations", "Registered phones, a page at a time"),
            ("/api/v1/sip/calls", "calls", "Calls in progress, a page at a time")):
        paths[path] = {"get": {"summary": summary, "parameters": page_parameters(what), "responses": {
            "200": {"description": "a page of the list (a JSON array)", "headers": PAGE_HEADERS,
                    "content": _json({"type": "array", "items": {"type": "object"}})},
            "400": RESPONSES["400"], "401": RESPONSES["401"],
            "503": {"description": "that service is not running"}}}}
    for path, summary in (("/api/v1/connections", "Firewall decisions, newest first, with reasons"),
                          ("/api/v1/status", "WAN address, security mode, services; the dashboard's "
                           "facts (version, uptime, CPU, memory, disk, WAN lease, gateway "
                           "health, clock), the time server's upstream, offset and what it serves "
                           "(`time`, times RFC 3339) and alerts")):
        paths[path] = {"get": {"summary": summary, "responses": {
            "200": {"description": "read-only", "content": _json({})},
            "401": RESPONSES["401"], "503": {"description": "that service is not running"}}}}
    schemas["TrunkStatus"] = {"type": "object", "properties": {
        "name": {"type": "string"},
        "registrar": {"type": "string", "description": "host[:port] of the provider"},
        "state": {"type": "string", "enum": ["registered", "registering", "auth_failed",
                                             "unreachable", "not_registering"]},
        "since": {"type": "string", "format": "date-time", "nullable": True},
        "expires": {"type": "string", "format": "date-time", "nullable": True},
        "last_error": {"type": "string", "nullable": True},
        "channels": {"type": "integer"}, "channels_in_use": {"type": "integer"}}}
    paths["/api/v1/sip/trunks"] = {"get": {"summary": "Trunks to the provider: registration state, "
                                                      "last error, channels", "responses": {
        "200": {"description": "one object per [trunk], in config order", "content": _json(
            {"type": "array", "items": {"$ref": "#/components/schemas/TrunkStatus"}})},
        "401": RESPONSES["401"], "503": {"description": "that service is not running"}}}}
    paths["/api/v1/mail/queue/{id}/retry"] = {"post": {"summary": "Try a queued message again now",
                                                       "responses": {"200": {"description": "queued"}}}}
    paths["/api/v1/mail/queue/{id}"] = {"delete": {"summary": "Drop a queued message",
                                                   "responses": {"204": {"description": "gone"}}}}
    lockout = {"type": "object", "properties": {
        "user": {"type": "string", "nullable": True,
                 "description": "the user locked out at the source; null: the source itself"},
        "source": {"type": "string"}, "failures": {"type": "integer"},
        "until": {"type": "string", "format": "date-time"}}}
    schemas["Lockout"] = lockout
    ref = {"$ref": "#/components/schemas/Lockout"}
    paths["/api/v1/lockouts"] = {"get": {
        "summary": "Login lock-outs in force (every protocol's: web, mail, phones, directory)",
        "responses": {"200": {"description": "the lock-outs", "content": _json({
            "type": "object", "properties": {"lockouts": {"type": "array", "items": ref}}})},
            "401": RESPONSES["401"]}}}
    paths["/api/v1/lockouts/unlock"] = {"post": {
        "summary": "End lock-outs: a user's (at a source, or everywhere), or everything at a source",
        "requestBody": {"content": _json({"type": "object", "properties": {
            "user": {"type": "string"}, "source": {"type": "string"}}})},
        "responses": dict(RESPONSES, **{"200": {"description": "the lock-outs that ended", "content": _json({
            "type": "object", "properties": {"unlocked": {"type": "array", "items": ref}}})}})}}
    schemas["Call"] = CALL
    schemas["MailRecord"] = MAIL_RECORD
    schemas["MailDecision"] = MAIL_DECISION
    paths.update(mail_security_paths())
    schemas["SiteStatus"] = SITE
    paths.update(sites_paths())
    # The phones' own routes answer for any MAC notation (SPEC 19); creating one with its
    # name in the body stays the records' POST.
    schemas["PhoneStatus"] = PHONE
    create = paths["/api/v1/phones"]["post"]
    del paths["/api/v1/phones/{name}"]
    paths.update(phones_paths())
    paths["/api/v1/phones"]["post"] = create
    paths["/api/v1/calls"] = calls_path()
    paths.update(stats_paths())
    paths["/api/v1/diagnostics/{kind}"] = diagnostics_path()
    paths.update(logs_paths())
    paths.update(backup_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "allworx admin API", "version": __version__,
                 "description": "Every setting of the admin pages. Changes apply live and are "
                                "written to tap.conf atomically; a bad value changes nothing "
                                "(400 naming the field). Send changes as application/json."},
        "servers": [{"url": "/"}],
        "security": [{"basic": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic",
                          "description": "a user with admin = yes and his password "
                                         "(an old config's [web] admin_password: user admin)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "allworx_session",
                            "description": "a logged-in page session; changes need X-CSRF-Token"}},
            "schemas": schemas},
        "paths": paths,
    }
