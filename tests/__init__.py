"""The test suite (tests/conftest.py holds the shared fixtures)."""

import pytest

# Before conftest.py imports the support modules (at its top, and as plugins): their asserts are
# rewritten too, so a failing check in a fixture says what it compared.
pytest.register_assert_rewrite("tests.support")
