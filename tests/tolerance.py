"""Per-dtype tolerances: one definition, in tritonrnn.testing (also used by `python -m tritonrnn check`)."""
from tritonrnn.testing import EPS32, assert_close, tolerance

__all__ = ["EPS32", "assert_close", "tolerance"]
