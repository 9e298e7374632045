"""Simulator settings shared by the tests."""

#: How long a day order lives in the tests' simulators (seconds): an hour instead of until
#: midnight UTC, so that a test placing one just before midnight does not see it expire.
DAY = 3600.0
