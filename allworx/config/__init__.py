"""tap.conf as a validated model (the whole of it in `model` for now)."""

from allworx.config.model import *  # noqa: F401,F403
