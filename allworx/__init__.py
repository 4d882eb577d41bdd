"""allworx: one Twisted process that is the whole server of a small office."""

__version__ = "0.1.0"
