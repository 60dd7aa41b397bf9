import platform

import pytest
import torch

from lut import measure


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_timing_runs_with_the_steady_allocator(monkeypatch):
    # the settings take (and taking them twice is harmless), and every timing run applies them first
    assert measure.steady_allocator() and measure.steady_allocator()
    calls = []
    monkeypatch.setattr(measure, "steady_allocator", lambda: calls.append(1) or True)
    op = ("relu", torch.nn.ReLU(), torch.zeros(1, 8, 4, 4))
    measure.time_rounds([op], num_threads=1, rounds=1, calls=1)
    assert calls == [1]
