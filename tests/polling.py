"""Test support: wait on a condition with a deadline instead of sleeping a fixed time."""

import time

import pytest


def wait_for(condition, what: str, timeout: float = 60.0, every: float = 0.05):
    """Poll ``condition()`` until it returns something truthy (returned); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g} s")
        time.sleep(every)
    return value
