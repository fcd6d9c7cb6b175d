"""Hypothesis profiles: one deterministic default, one opt-in exploration (issue #15).

- "default" (what `python -m pytest` and CI run): derandomized, no example database, so every machine
  draws the same examples and gives the same verdict every time.
- "explore" (`HYPOTHESIS_PROFILE=explore python -m pytest ...`): random seeds and EXPLORE_FACTOR × the
  default budget. tests/conftest.py draws one seed per session (or takes `--hypothesis-seed=N`) and prints
  it in the header; a failure also prints its `@reproduce_failure` blob (print_blob), so it replays with
  `HYPOTHESIS_PROFILE=explore python -m pytest --hypothesis-seed=N <test id>`.

A test that needs a smaller budget than the profile's (the interpreter is slow) asks for
`settings(max_examples=budget(n))`: n examples by default, n × EXPLORE_FACTOR when exploring.
"""
import os

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 10
EXPLORE_FACTOR = 10
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
if PROFILE not in ("default", "explore"):
    raise ValueError(f"HYPOTHESIS_PROFILE must be 'default' or 'explore', got {PROFILE!r}")

# No deadline: the interpreter is ~1000x slower than a GPU and its timing varies on a shared machine.
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("default", max_examples=DEFAULT_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("explore", max_examples=DEFAULT_EXAMPLES * EXPLORE_FACTOR, derandomize=False, **_COMMON)
settings.load_profile(PROFILE)


def budget(n: int) -> int:
    """max_examples for a test that runs `n` examples by default: scaled by EXPLORE_FACTOR when exploring."""
    return n * EXPLORE_FACTOR if PROFILE == "explore" else n
