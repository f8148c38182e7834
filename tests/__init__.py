"""The tests, laid out as the packages they test; tests/support.py holds what several of them share."""

import sys

# Under pytest (not when a benchmark imports the doubles), the asserts of tests/support.py explain themselves like
# the tests' own, as they did when they lived in conftest.
if "pytest" in sys.modules:
    import pytest

    pytest.register_assert_rewrite("tests.support")
