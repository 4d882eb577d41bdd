"""DHCP server: codec, pool, journal, responder, service."""
