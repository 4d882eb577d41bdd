"""
The tests (trial). `make test` and `make unit` run the hypothesis tests with
the "ci" profile: derandomized, so a run of the same code always tries the
same examples and main stays green or red for a reason; run them with
HYPOTHESIS_PROFILE=explore (random examples, kept in .hypothesis/) to look for
new failures, and keep what they find as @example.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))
