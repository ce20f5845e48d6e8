"""``predict_distributed`` on real EMO-DB files and a broken one, with the bundled default model: one process, two CPU
processes (gloo, launched in a subprocess as a user would), resuming an interrupted run and refusing other settings.

The single-process reference is :func:`run_predictions` + :func:`write_predictions` on the same list. Batches never
cross groups, so the tables are compared exactly at ``batch_size=1`` and to float32 rounding at the default size.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import spread_files

import sermodels
from sermodels.pipelines import predict_runner
from sermodels.pipelines.predict import run_predictions, write_predictions
from sermodels.pipelines.predict_runner import predict_distributed

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]
MODEL = "default"
GROUP = 3  # 11 inputs -> groups of 3, 3, 3, 2


@pytest.fixture(scope="module")
def model():
    return sermodels.load(MODEL)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Ten EMO-DB files (speakers and emotions spread) with an empty ``.wav`` in the middle of the list."""
    bad = tmp_path_factory.mktemp("bad") / "empty.wav"
    bad.write_bytes(b"")
    files = spread_files("emodb", 10)
    return [*files[:4], bad, *files[4:]]


@pytest.fixture(scope="module")
def reference(model, inputs, tmp_path_factory) -> Path:
    """``predict --out`` of the inputs in one process, batch size 1."""
    out = tmp_path_factory.mktemp("reference") / "single.csv"
    write_predictions(run_predictions(model, inputs, batch_size=1, progress=False), out)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _assert_bad_file_row(table: Path, bad: Path) -> None:
    [row] = [r for r in _rows(table) if r["path"] == str(bad)]
    assert row["error"] and row["label"] == "", row


@pytest.mark.parametrize("suffix", ["csv", "json", "parquet"])
def test_one_process_writes_the_table_of_predict(model, inputs, tmp_path, suffix):
    expected = tmp_path / f"single.{suffix}"
    result = run_predictions(model, inputs, batch_size=1, progress=False)
    write_predictions(result, expected)
    out = tmp_path / f"merged.{suffix}"
    done = predict_distributed(model, inputs, out, model_id=MODEL, batch_size=1, group_size=GROUP, progress=False)
    assert done.out == out and done.rank == 0 and done.world_size == 1
    assert done.computed == [0, 1, 2, 3] and done.skipped == []
    assert done.failures == result.failures and len(done.failures) == 1
    assert done.result.rows == result.rows and done.result.records() == result.records()
    assert done.result.logits.equal(result.logits)
    if suffix == "csv":
        assert out.read_text() == expected.read_text()
    elif suffix == "json":
        assert json.loads(out.read_text()) == json.loads(expected.read_text())
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        assert pq.read_table(out).equals(pq.read_table(expected))
    assert not out.with_name(out.name + ".partial").exists(), "the partial folder is removed after the merge"


def test_default_batches_agree_to_float32_rounding(model, inputs, tmp_path):
    expected = tmp_path / "single.csv"
    write_predictions(run_predictions(model, inputs, progress=False), expected)
    out = tmp_path / "merged.csv"
    predict_distributed(model, inputs, out, group_size=GROUP, progress=False)
    merged, single = _rows(out), _rows(expected)
    assert [r["path"] for r in merged] == [str(p) for p in inputs]
    assert [(r["path"], r["label"], r["error"]) for r in merged] == [
        (r["path"], r["label"], r["error"]) for r in single
    ]
    for a, b in zip(merged, single):
        if a["error"]:
            continue
        scores = [k for k in a if k.startswith("score_") and a[k]]
        assert scores and all(abs(float(a[k]) - float(b[k])) < 1e-5 for k in scores), (a, b)


def test_inputs_are_expanded_once_each(model, tmp_path):
    """A file given before and after its folder: once, at its first place; the folder's other files in order."""
    folder = Path(sermodels.__file__).parent / "assets" / "clips"
    first, last = folder / "08a01Na.flac", folder / "03a01Wa.flac"
    out = tmp_path / "out.csv"
    predict_distributed(model, [first, folder, last], out, batch_size=1, group_size=2, progress=False)
    others = [p for p in sorted(folder.glob("*.flac")) if p != first]
    assert [r["path"] for r in _rows(out)] == [str(p) for p in [first, *others]]


DRIVER = """
import json, sys
import sermodels
from sermodels.pipelines.predict_runner import predict_distributed

out, summaries, *paths = sys.argv[1:]
done = predict_distributed(
    sermodels.load(MODEL), paths, out, model_id=MODEL, batch_size=1, group_size=GROUP, devices=2, accelerator="cpu",
    progress=False,
)
summary = {"rank": done.rank, "world": done.world_size, "computed": done.computed, "skipped": done.skipped,
           "failures": done.failures, "merged": done.result is not None}
with open(f"{summaries}/rank{done.rank}.json", "w") as f:
    json.dump(summary, f)
"""


def _two_processes(paths: list[Path], out: Path, folder: Path) -> list[dict]:
    """``predict_distributed(devices=2)`` in a script of its own (Lightning starts the second process by running
    the script again); each rank's summary."""
    done = _run_driver(paths, out, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


def _run_driver(paths: list[Path], out: Path, folder: Path) -> subprocess.CompletedProcess:
    driver = folder / "driver.py"
    driver.write_text(f"MODEL, GROUP = {MODEL!r}, {GROUP}\n" + DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, str(driver), str(out), str(folder), *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


def test_two_processes_share_the_groups(inputs, reference, tmp_path):
    """Lightning's multi-process predict loop (2 CPU processes, gloo): each group computed by one rank, one table."""
    out = tmp_path / "merged.csv"
    ranks = _two_processes(inputs, out, tmp_path)
    assert [r["world"] for r in ranks] == [2, 2] and [r["merged"] for r in ranks] == [True, False]
    assert ranks[0]["computed"] and ranks[1]["computed"], "both ranks predicted groups"
    assert sorted(ranks[0]["computed"] + ranks[1]["computed"]) == [0, 1, 2, 3]
    assert [f[0] for r in ranks for f in r["failures"]] == [str(inputs[4])]
    assert out.read_text() == reference.read_text()
    _assert_bad_file_row(out, inputs[4])
    assert not out.with_name(out.name + ".partial").exists()


class Crash(RuntimeError):
    pass


@pytest.fixture
def groups_run(monkeypatch):
    """Records the file names of every group ``run_predictions`` is called on; ``crash_at`` (a count of groups, set
    by the test) makes the next call after that many raise, as a killed process would stop a run."""
    calls: list[list[str]] = []
    real = predict_runner.run_predictions
    state = {"crash_at": None}

    def spy(model, paths, **options):
        if paths:
            if state["crash_at"] is not None and len(calls) >= state["crash_at"]:
                raise Crash("simulated crash")
            calls.append([Path(p).name for p in paths])
        return real(model, paths, **options)

    monkeypatch.setattr(predict_runner, "run_predictions", spy)
    return calls, state


def _crash_after_two_groups(model, paths, out, groups_run) -> Path:
    calls, state = groups_run
    state["crash_at"] = 2
    with pytest.raises(Crash):
        predict_distributed(model, paths, out, model_id=MODEL, batch_size=1, group_size=GROUP, progress=False)
    state["crash_at"] = None
    partial = out.with_name(out.name + ".partial")
    assert sorted(p.name for p in partial.glob("group-*.json")) == ["group-000000.json", "group-000001.json"]
    assert not out.exists()
    calls.clear()
    return partial


def test_rerun_after_a_crash_computes_only_the_missing_groups(model, inputs, tmp_path, groups_run):
    """Groups 0 and 1 are done when the run stops; a file of group 0 is touched meanwhile (its key changes)."""
    copy = tmp_path / "copy" / inputs[0].name
    copy.parent.mkdir()
    shutil.copyfile(inputs[0], copy)
    paths = [copy, *inputs[1:]]
    expected = tmp_path / "single.csv"
    write_predictions(run_predictions(model, paths, batch_size=1, progress=False), expected)
    out = tmp_path / "merged.csv"
    partial = _crash_after_two_groups(model, paths, out, groups_run)
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    done = predict_distributed(model, paths, out, model_id=MODEL, batch_size=1, group_size=GROUP, progress=False)
    calls, _ = groups_run
    names = [p.name for p in paths]
    assert calls == [names[0:3], names[6:9], names[9:11]], "group 1 is reused, group 0 (touched) is not"
    assert done.computed == [0, 2, 3] and done.skipped == [1]
    assert out.read_text() == expected.read_text()
    _assert_bad_file_row(out, inputs[4])
    assert not partial.exists()


def test_other_settings_are_refused_unless_restart(model, inputs, tmp_path, groups_run):
    out = tmp_path / "merged.csv"
    partial = _crash_after_two_groups(model, inputs, out, groups_run)
    for other in ({"head": "ravdess"}, {"group_size": 4}, {"max_chunk_seconds": 2.0}):
        options = {"model_id": MODEL, "batch_size": 1, "group_size": GROUP, "progress": False, **other}
        with pytest.raises(ValueError, match="other settings") as refused:
            predict_distributed(model, inputs, out, **options)
        assert "--restart" in str(refused.value)
    with pytest.raises(ValueError, match="inputs.count"):
        predict_distributed(model, inputs[:-1], out, model_id=MODEL, group_size=GROUP, progress=False)
    calls, _ = groups_run
    assert calls == [] and not out.exists() and len(list(partial.glob("group-*.json"))) == 2
    done = predict_distributed(
        model, inputs, out, model_id=MODEL, head="ravdess", group_size=GROUP, restart=True, progress=False
    )
    assert done.computed == [0, 1, 2, 3] and len(calls) == 4
    rows = _rows(out)
    assert "score_calm" in rows[0] and {r["label"] for r in rows} <= {*done.result.spec.names, ""}
    assert not partial.exists()


def test_a_partial_folder_in_use_is_refused(model, inputs, tmp_path):
    from sermodels.pipelines.resume import OutputInUse, locked

    out = tmp_path / "merged.csv"
    with locked(out.with_name(out.name + ".partial")), pytest.raises(OutputInUse, match="in use by another run"):
        predict_distributed(model, inputs[:2], out, progress=False)


def test_bad_arguments_are_refused_before_any_work(model, inputs, tmp_path):
    with pytest.raises(ValueError, match="unsupported output format"):
        predict_distributed(model, inputs, tmp_path / "out.txt", progress=False)
    with pytest.raises(ValueError, match="utterance-level"):
        predict_distributed(model, inputs, tmp_path / "out.csv", timeline_seconds=1.0, progress=False)
    with pytest.raises(ValueError, match="group_size"):
        predict_distributed(model, inputs, tmp_path / "out.csv", group_size=0, progress=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_frame_level_timelines_are_merged(tmp_path):
    """A frame-level head (conv_blstm's arousal/valence traces) with timeline windows: the timeline rows of each
    file, in input order, exactly as predict writes them."""
    model = sermodels.load("conv_blstm.sessions")
    paths = sorted(Path(sermodels.__file__).parent.joinpath("assets", "clips").glob("*.flac"))
    for suffix in ("csv", "json"):
        expected = tmp_path / f"single.{suffix}"
        write_predictions(run_predictions(model, paths, batch_size=1, timeline_seconds=0.5, progress=False), expected)
        out = tmp_path / f"merged.{suffix}"
        done = predict_distributed(model, paths, out, batch_size=1, timeline_seconds=0.5, group_size=2, progress=False)
        assert done.computed == [0, 1, 2]
        if suffix == "csv":
            assert out.read_text() == expected.read_text() and len(_rows(out)) > len(paths)
        else:
            assert json.loads(out.read_text()) == json.loads(expected.read_text())


@pytest.mark.slow
def test_a_run_stopped_in_one_process_resumes_on_two(model, inputs, reference, tmp_path, groups_run):
    """Groups do not depend on the number of processes: two ranks finish what one left."""
    out = tmp_path / "merged.csv"
    _crash_after_two_groups(model, inputs, out, groups_run)
    ranks = _two_processes(inputs, out, tmp_path)
    assert sorted(ranks[0]["computed"] + ranks[1]["computed"]) == [2, 3]
    assert sorted(ranks[0]["skipped"] + ranks[1]["skipped"]) == [0, 1]
    assert out.read_text() == reference.read_text()


@pytest.mark.slow
def test_two_processes_stop_together_when_the_output_is_in_use(inputs, tmp_path):
    """Rank 0 cannot take the lock: both ranks raise (none waits at a barrier for the other)."""
    from sermodels.pipelines.resume import locked

    out = tmp_path / "merged.csv"
    with locked(out.with_name(out.name + ".partial")):
        done = _run_driver(inputs[:4], out, tmp_path)
    assert done.returncode != 0 and "in use by another run" in done.stderr
    assert not out.exists() and not list(tmp_path.glob("rank*.json"))
