"""Helpers the tests share, grouped like the code they exercise (no tests here).

Test modules import from this package only: never from another `test_*.py` module, nor from
`conftest.py`, which keeps the fixtures. `clock` is imported by `conftest.py` first, so the pinned
clock (SWITCHBOARD_TEST_AT) is set before any server starts.
"""
