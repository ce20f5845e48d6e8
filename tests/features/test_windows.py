"""Window plans of long clips: crops, full windows only, hops, and clear errors."""

from __future__ import annotations

import pytest

from sermodels.features.windows import Windows, plan_windows

SR = 16000


def test_plan_windows_whole_file_and_crop():
    assert plan_windows(40000, SR) == Windows([0.0], [(0, 40000)])
    assert plan_windows(40000, SR, start=0.5) == Windows([0.5], [(8000, 40000)])
    assert plan_windows(40000, SR, start=0.5, end=1.25) == Windows([0.5], [(8000, 20000)])
    assert plan_windows(40000, SR, end=10.0) == Windows([0.0], [(0, 40000)])  # an end past the clip is its end


def test_plan_windows_windows_and_hop():
    # 2.5 s clip, 1 s windows: full windows only (the last 0.5 s is no window of its own)
    assert plan_windows(40000, SR, window=1.0) == Windows([0.0, 1.0], [(0, 16000), (16000, 32000)])
    plan = plan_windows(40000, SR, window=1.0, hop=0.5)
    assert plan.starts == [0.0, 0.5, 1.0, 1.5]
    assert plan.spans == [(0, 16000), (8000, 24000), (16000, 32000), (24000, 40000)]
    # windows inside a crop, stamped with their time from the start of the file
    plan = plan_windows(40000, SR, window=0.5, hop=0.25, start=1.0, end=2.0)
    assert plan.starts == [1.0, 1.25, 1.5]
    assert plan.spans == [(16000, 24000), (20000, 28000), (24000, 32000)]
    assert all(b - a == 8000 for a, b in plan.spans)
    # a window exactly the crop's length: one window; longer than the clip: the whole clip
    assert plan_windows(32000, SR, window=2.0) == Windows([0.0], [(0, 32000)])
    assert plan_windows(12000, SR, window=2.0, hop=1.0) == Windows([0.0], [(0, 12000)])
    assert plan_windows(40000, SR, window=3.0, start=1.0) == Windows([1.0], [(16000, 40000)])


def test_plan_windows_errors():
    with pytest.raises(ValueError, match="crop from 3.0 s is empty"):
        plan_windows(40000, SR, start=3.0)
    with pytest.raises(ValueError, match="need 0 <= start < end"):
        plan_windows(40000, SR, start=-0.5)
    with pytest.raises(ValueError, match="need 0 <= start < end"):
        plan_windows(40000, SR, start=1.0, end=1.0)
    with pytest.raises(ValueError, match="hop needs a window length"):
        plan_windows(40000, SR, hop=0.5)
    for window, hop in [(0.0, None), (-1.0, None), (1.0, 0.0)]:
        with pytest.raises(ValueError, match="must be positive"):
            plan_windows(40000, SR, window=window, hop=hop)


def test_plan_windows_shorter_than_one_sample_is_a_clear_error():
    """A window or hop that rounds to 0 samples: a clear error (currently ``range() arg 3 must not be zero`` for
    the window, and zero-length spans for a window with a valid hop)."""
    with pytest.raises(ValueError, match="window"):
        plan_windows(40000, SR, window=1e-5)
    with pytest.raises(ValueError, match="window"):
        plan_windows(40000, SR, window=1e-5, hop=0.5)
    with pytest.raises(ValueError, match="hop"):
        plan_windows(40000, SR, window=1.0, hop=1e-5)
