# -*- test-case-name: allworx.tests.web.test_webauth -*-
"""Admin rights, HTTP Basic and /metrics' login or bearer token (SPEC 10, 11)."""
