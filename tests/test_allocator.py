"""zoomin.allocator: fixed glibc heap settings for streamed stage I (opt-out by environment).

What the settings buy is measured, not asserted here (peak RSS depends on the whole process): README,
"Stage I streamed", and benchmarks/slide_memory.py."""
import platform

import pytest

from zoomin import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_steady_takes_and_can_be_turned_off(monkeypatch):
    assert allocator.steady() is True
    monkeypatch.setenv("ZOOMIN_MALLOC", "default")
    assert allocator.steady() is False

