"""Frame-level traces: CSV timelines and their checks, resampling to a head's frame rate, coverage and alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sermodels.data.targets import Trace, TraceError, aligned_length, coverage_problem, read_timeline


def _timeline(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_timeline_is_read_in_header_order(tmp_path):
    path = _timeline(tmp_path / "t.csv", "valence,time,arousal\n0.5,0.0,-1\n0.25,0.04,0\n0,0.08,1\n")
    names, times, values = read_timeline(path)
    assert names == ["valence", "arousal"]
    assert times.tolist() == [0.0, 0.04, 0.08]
    assert values.tolist() == [[0.5, -1.0], [0.25, 0.0], [0.0, 1.0]]
    trace = Trace.from_csv(path)
    assert trace.names == ("valence", "arousal") and trace.path == str(path)
    assert trace.end() == pytest.approx(0.12)  # the last row holds for one step
    assert "t.csv" in repr(trace)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file"),
        ("when,arousal\n0,1\n0.1,1\n", "no 'time' column"),
        ("time\n0\n0.1\n", "must name 'time' and distinct dimensions"),
        ("time,arousal,arousal\n0,1,1\n0.1,1,1\n", "distinct dimensions"),
        ("time,arousal\n0,1\n0.1,high\n", "line 3: arousal 'high' is not a number"),
        ("time,arousal\n0,1\n0.1,nan\n", "line 3: arousal is nan"),
        ("time,arousal\n0,1\n0.1,\n", "line 3: empty arousal"),
        ("time,arousal\n0,1\n0.1\n", "line 3: 1 cells, the header has 2"),
        ("time,arousal\n0,1\n0.2,1\n0.1,1\n", "line 4: time 0.1 does not come after 0.2"),
        ("time,arousal\n0,1\n0,1\n", "line 3: time 0 does not come after 0"),
        ("time,arousal\n-0.5,1\n0,1\n", "line 2: time -0.5 is before the start"),
        ("time,arousal\n0,1\n", "1 row(s); a trace needs at least two"),
    ],
)
def test_bad_timelines_name_file_line_and_problem(tmp_path, text, problem):
    path = _timeline(tmp_path / "bad.csv", text)
    with pytest.raises(TraceError) as err:
        read_timeline(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_missing_file_and_changed_columns(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        read_timeline(tmp_path / "absent.csv")
    path = _timeline(tmp_path / "t.csv", "time,arousal\n0,1\n0.1,1\n")
    trace = Trace.from_csv(path)
    _timeline(path, "time,valence\n0,1\n0.1,1\n")  # edited after the corpus was loaded
    with pytest.raises(TraceError, match=r"columns \['valence'\] are not the expected \['arousal'\]"):
        trace.frames(100.0)


def test_same_rate_is_the_identity_and_a_coarse_trace_is_interpolated():
    values = np.stack([np.arange(10.0), -np.arange(10.0)], axis=1)
    trace = Trace.from_array(values, 100.0, ["arousal", "valence"])
    assert np.array_equal(trace.frames(100.0), values.astype(np.float32))
    # 25 rows/s -> 100 frames/s: four head frames per row, linear between rows, the last row held for its step.
    coarse = Trace.from_array(np.array([0.0, 4.0, 8.0]), 25.0, ["arousal"])
    frames = coarse.frames(100.0)
    assert frames.shape == (12, 1)  # ceil((0.08 + 0.04) * 100)
    assert frames[:, 0].tolist() == pytest.approx([0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8])
    assert coarse.tolerance(100.0) == 4 and trace.tolerance(100.0) == 1 and coarse.tolerance(10.0) == 1
    # A window of the clip: frames start at the window's start and stop at its end.
    window = trace.frames(100.0, start=0.03, stop=0.07)
    assert window[:, 0].tolist() == pytest.approx([3, 4, 5, 6])
    # A coarser head samples the trace at its frame starts.
    assert trace.frames(50.0)[:, 0].tolist() == pytest.approx([0, 2, 4, 6, 8])


def test_in_memory_traces_are_checked():
    with pytest.raises(TraceError, match="must increase"):
        Trace(["a"], times=np.array([0.0, 0.2, 0.1]), values=np.zeros((3, 1)))
    with pytest.raises(TraceError, match="shape"):
        Trace(["a", "b"], times=np.array([0.0, 0.1]), values=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="either times and values, or the path"):
        Trace(["a"])
    with pytest.raises(ValueError, match="frame_rate"):
        Trace.from_array(np.zeros(3), 0.0, ["a"])


def test_coverage_and_alignment_tolerate_one_frame_of_the_coarser_grid():
    trace = Trace.from_array(np.zeros((100, 1)), 100.0, ["arousal"])  # covers exactly 1.0 s
    assert coverage_problem(trace, 1.0, 100.0) is None
    assert coverage_problem(trace, 1.009, 100.0) is None  # 101 head frames: one more
    assert "more than 1 frame(s) apart" in coverage_problem(trace, 1.02, 100.0)
    coarse = Trace.from_array(np.zeros((25, 1)), 25.0, ["arousal"])  # also 1.0 s, 4 head frames per row
    assert coverage_problem(coarse, 1.035, 100.0) is None
    assert coverage_problem(coarse, 1.06, 100.0) is not None
    assert aligned_length(101, 100, 1) == 100 and aligned_length(99, 100, 1) == 99
    with pytest.raises(ValueError, match="differ by more than 1"):
        aligned_length(102, 100, 1)
