"""Annotation files for segments: round trips of every format with unicode labels, cross-checks with the other
library (praatio, pympi), every validation error naming its file, and atomic writes that leave nothing behind."""

from __future__ import annotations

import pytest
from praatio import textgrid as praatio_textgrid
from praatio.data_classes.interval_tier import IntervalTier
from pympi import Elan

from sermodels.pipelines.annotations import (
    FORMATS,
    SINGLE_TIER,
    AnnotationError,
    Interval,
    read_annotation_csv,
    read_annotations,
    read_audacity_labels,
    read_eaf,
    read_textgrid,
    write_annotation_csv,
    write_annotations,
    write_audacity_labels,
    write_eaf,
    write_textgrid,
)

URDU, GERMAN = "خوشی سے بھرپور", "Ärger über Straßenlärm"
SPEECH = [
    Interval(3.5, 4.75, "neutral speech"),
    Interval(1.2345, 2.0001, URDU),
    Interval(4.75, 6.123456, GERMAN),  # touches the one before: allowed
]
NOTES = [Interval(0.0, 1.0, "start"), Interval(7.25, 9.999999, "end ✓")]
TIERS = {"speech": SPEECH, "notes": NOTES, "empty": []}
DURATION = 10.0


def by_start(intervals):
    return sorted(intervals, key=lambda interval: interval.start)


def assert_close(read, written, tolerance):
    assert [i.text for i in read] == [i.text for i in by_start(written)]
    for got, want in zip(read, by_start(written)):
        assert got.start == pytest.approx(want.start, abs=tolerance)
        assert got.end == pytest.approx(want.end, abs=tolerance)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------------- round trips


def test_textgrid_round_trip(tmp_path):
    path = write_textgrid(tmp_path / "rec.TextGrid", TIERS, DURATION)
    tiers = read_textgrid(path)
    assert list(tiers) == ["speech", "notes", "empty"]
    assert tiers["empty"] == []
    assert_close(tiers["speech"], SPEECH, 1e-9)
    assert_close(tiers["notes"], NOTES, 1e-9)
    assert tiers["speech"][0] == Interval(1.2345, 2.0001, URDU)  # exact, not merely close


def test_textgrid_opens_in_praatio_with_gaps_filled(tmp_path):
    path = write_textgrid(tmp_path / "rec.TextGrid", {"speech": SPEECH}, DURATION)
    grid = praatio_textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    entries = grid.getTier("speech").entries
    assert (grid.minTimestamp, grid.maxTimestamp) == (0, DURATION)
    assert entries[0].start == 0 and entries[-1].end == DURATION  # Praat's tiers cover the whole recording
    assert [e.label for e in entries if e.label] == [URDU, "neutral speech", GERMAN]


def test_reading_a_praatio_textgrid_drops_the_gaps(tmp_path):
    grid = praatio_textgrid.Textgrid()
    grid.addTier(IntervalTier("words", [(0.5, 1.25, "hallo Welt"), (2.0, 2.5, "tschüss")], 0, 3.0))
    grid.addTier(praatio_textgrid.PointTier("beats", [(1.0, "x")], 0, 3.0))
    path = tmp_path / "praatio.TextGrid"
    grid.save(str(path), "long_textgrid", includeBlankSpaces=True)
    assert path.read_text(encoding="utf-8").count('text = ""') == 3  # the gaps praatio filled in
    assert read_textgrid(path) == {"words": [Interval(0.5, 1.25, "hallo Welt"), Interval(2.0, 2.5, "tschüss")]}


def test_eaf_round_trip_in_milliseconds(tmp_path):
    path = write_eaf(tmp_path / "rec.eaf", TIERS, media=str(tmp_path / "rec.wav"))
    tiers = read_eaf(path)
    assert set(tiers) == {"speech", "notes", "empty"}
    assert tiers["empty"] == []
    assert_close(tiers["speech"], SPEECH, 0.5e-3)
    assert_close(tiers["notes"], NOTES, 0.5e-3)
    assert tiers["speech"][0] == Interval(1.234, 2.0, URDU)  # integer milliseconds


def test_eaf_opens_in_pympi_with_its_media(tmp_path):
    path = write_eaf(tmp_path / "rec.eaf", {"speech": SPEECH}, media=str(tmp_path / "audio" / "rec.wav"))
    eaf = Elan.Eaf(str(path))
    assert list(eaf.get_tier_names()) == ["speech"]
    assert sorted(eaf.get_annotation_data_for_tier("speech")) == [
        (1234, 2000, URDU),
        (3500, 4750, "neutral speech"),
        (4750, 6123, GERMAN),
    ]
    (media,) = eaf.get_linked_files()
    assert media["MEDIA_URL"] == (tmp_path / "audio" / "rec.wav").as_uri()
    assert media["RELATIVE_MEDIA_URL"] == "./audio/rec.wav"
    assert media["MIME_TYPE"] == "audio/x-wav"


def test_audacity_round_trip(tmp_path):
    path = write_audacity_labels(tmp_path / "labels.txt", SPEECH)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"1.234500\t2.000100\t{URDU}"
    assert read_audacity_labels(path) == by_start(SPEECH)


def test_audacity_skips_spectral_lines_and_blank_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("1.5\t2.5\tlaut\n\\\t100.0\t4000.0\n\n3\t4\t\n", encoding="utf-8")
    assert read_audacity_labels(path) == [Interval(1.5, 2.5, "laut"), Interval(3.0, 4.0, "")]


def test_csv_round_trip_with_extra_columns(tmp_path):
    extra = [{"score": 0.25}, {"score": 0.9, "file": "a.wav"}, {"score": 0.5}]
    path = write_annotation_csv(tmp_path / "segments.csv", SPEECH, extra)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "start,end,label,score,file"
    assert lines[1] == f"1.2345,2.0001,{URDU},0.9,a.wav"  # the extra row moved with its interval
    assert lines[2] == "3.5,4.75,neutral speech,0.25,"
    assert read_annotation_csv(path) == by_start(SPEECH)


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [("rec.TextGrid", 1e-6), ("rec.textgrid", 1e-6), ("rec.eaf", 0.5e-3), ("rec.txt", 1e-6), ("rec.csv", 0)],
)
def test_by_suffix(tmp_path, name, tolerance):
    path = write_annotations(tmp_path / name, TIERS, DURATION, media="rec.wav")
    tiers = read_annotations(path)
    first = tiers["speech"] if "speech" in tiers else tiers[SINGLE_TIER]
    assert_close(first, SPEECH, tolerance)
    assert read_annotations(path, tier=next(iter(tiers))).keys() == {next(iter(tiers))}


def test_single_tier_formats_write_the_tier_asked_for(tmp_path):
    for name in ("notes.txt", "notes.csv"):
        path = write_annotations(tmp_path / name, TIERS, DURATION, tier="notes")
        assert read_annotations(path) == {SINGLE_TIER: NOTES}


def test_format_overrides_the_suffix_and_textgrid_duration_defaults_to_the_last_end(tmp_path):
    path = write_annotations(tmp_path / "rec.out", {"speech": SPEECH}, format="textgrid")
    assert read_textgrid(path)["speech"] == by_start(SPEECH)
    assert praatio_textgrid.openTextgrid(str(path), False).maxTimestamp == pytest.approx(6.123456)
    assert set(FORMATS) == {"textgrid", "eaf", "audacity", "csv"}


def test_empty_files(tmp_path):
    assert read_audacity_labels(write_audacity_labels(tmp_path / "a.txt", [])) == []
    assert read_annotation_csv(write_annotation_csv(tmp_path / "a.csv", [])) == []
    assert read_eaf(write_eaf(tmp_path / "a.eaf", {})) == {}
    assert read_textgrid(write_textgrid(tmp_path / "a.TextGrid", {"x": []}, 1.0)) == {"x": []}


def test_rewriting_replaces_the_file(tmp_path):
    path = write_eaf(tmp_path / "rec.eaf", {"speech": SPEECH})
    write_eaf(path, {"notes": NOTES[:1]})
    assert read_eaf(path) == {"notes": NOTES[:1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.eaf"]  # no pympi .bak, no temporary file


# ---------------------------------------------------------------------------------------------------- write errors


BAD_TIERS = {
    "ends before it starts": ({"t": [Interval(2.0, 1.0, "x")]}, "does not end after it starts"),
    "zero length": ({"t": [Interval(2.0, 2.0, "x")]}, "does not end after it starts"),
    "negative start": ({"t": [Interval(-0.5, 1.0, "x")]}, "starts before 0"),
    "overlap": ({"t": [Interval(3.0, 5.0, "b"), Interval(1.0, 3.5, "a")]}, "1.0-3.5 s 'a' and 3.0-5.0 s 'b' overlap"),
    "beyond the duration": ({"t": [Interval(9.0, 10.5, "x")]}, "ends after the duration 10.0 s"),
    "not a number": ({"t": [Interval(float("nan"), 1.0, "x")]}, "not a finite number"),
}


@pytest.mark.parametrize("name", ["rec.TextGrid", "rec.eaf", "rec.txt", "rec.csv"])
@pytest.mark.parametrize("case", list(BAD_TIERS))
def test_invalid_intervals_are_refused_and_leave_nothing(tmp_path, name, case):
    tiers, message = BAD_TIERS[case]
    path = tmp_path / name
    with pytest.raises(AnnotationError, match=message) as raised:
        write_annotations(path, tiers, DURATION)
    assert str(raised.value).startswith(str(path))
    assert list(tmp_path.iterdir()) == []


def test_invalid_intervals_leave_an_existing_file_alone(tmp_path):
    path = write_textgrid(tmp_path / "rec.TextGrid", {"speech": SPEECH}, DURATION)
    before = path.read_bytes()
    with pytest.raises(AnnotationError, match="overlap"):
        write_textgrid(path, {"speech": [*SPEECH, Interval(1.5, 1.9, "inside")]}, DURATION)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_textgrid_write_errors(tmp_path):
    path = tmp_path / "rec.TextGrid"
    with pytest.raises(AnnotationError, match=f"^{path}: .*duration must be a positive"):
        write_textgrid(path, {"t": []}, 0.0)
    with pytest.raises(AnnotationError, match="under 0.0001 s"):
        write_textgrid(path, {"t": [Interval(0.00005, 1.0, "x")]}, DURATION)
    assert list(tmp_path.iterdir()) == []


def test_audacity_labels_may_not_hold_tabs_or_line_breaks(tmp_path):
    for label in ("a\tb", "a\nb"):
        path = tmp_path / "labels.txt"
        with pytest.raises(AnnotationError, match=f"^{path}: .*tab or a line break"):
            write_audacity_labels(path, [Interval(1.0, 2.0, label)])
    assert list(tmp_path.iterdir()) == []


def test_csv_write_errors(tmp_path):
    path = tmp_path / "s.csv"
    with pytest.raises(AnnotationError, match=f"^{path}: 1 rows of extra columns for 2 intervals"):
        write_annotation_csv(path, NOTES, [{"score": 1}])
    with pytest.raises(AnnotationError, match="clash"):
        write_annotation_csv(path, NOTES, [{"label": "x"}, {}])
    assert list(tmp_path.iterdir()) == []


def test_unknown_suffix_and_format_and_tier(tmp_path):
    with pytest.raises(AnnotationError, match=r"rec\.wav: unknown annotation suffix '\.wav'"):
        write_annotations(tmp_path / "rec.wav", TIERS, DURATION)
    with pytest.raises(AnnotationError, match=r"rec\.wav: unknown annotation suffix"):
        read_annotations(tmp_path / "rec.wav")
    with pytest.raises(AnnotationError, match="unknown annotation format 'praat'"):
        write_annotations(tmp_path / "rec.TextGrid", TIERS, DURATION, format="praat")
    with pytest.raises(AnnotationError, match="no tier 'words'; the tiers are 'speech', 'notes', 'empty'"):
        write_annotations(tmp_path / "rec.txt", TIERS, DURATION, tier="words")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------- read errors


@pytest.mark.parametrize("name", ["rec.TextGrid", "rec.eaf", "rec.txt", "rec.csv"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(AnnotationError, match=f"^{path}: no such annotation file"):
        read_annotations(path)


def test_missing_tier_lists_the_tiers(tmp_path):
    path = write_textgrid(tmp_path / "rec.TextGrid", TIERS, DURATION)
    with pytest.raises(AnnotationError, match=f"^{path}: no tier 'words'; the tiers are 'speech', 'notes', 'empty'"):
        read_annotations(path, tier="words")
    csv_path = write_annotation_csv(tmp_path / "rec.csv", NOTES)
    with pytest.raises(AnnotationError, match=f"no tier 'speech'; the tiers are '{SINGLE_TIER}'"):
        read_annotations(csv_path, tier="speech")


MALFORMED = {
    "rec.TextGrid": ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nitem [1]:\n', "not a readable"),
    "rec.eaf": ("<ANNOTATION_DOCUMENT><TIER", "not a readable ELAN file"),
    "other.eaf": ("<?xml version='1.0'?><html/>", "not a readable ELAN file"),
    "two.txt": ("1.0\t2.0\n", "line 1 has 2 tab-separated fields, not 3"),
    "four.txt": ("1.0\t2.0\tx\n1\t2\t3\t4\n", "line 2 has 4 tab-separated fields"),
    "words.txt": ("one\t2.0\tx\n", "line 1: 'one' is not a time in seconds"),
    "point.txt": ("2.0\t2.0\tx\n", "line 1: .* is not an interval"),
    "latin1.txt": (b"1\t2\t\xc4rger\n", "not UTF-8"),
    "columns.csv": ("begin,end,text\n1,2,x\n", "no column\\(s\\) start, label; it needs start, end, label"),
    "times.csv": ("start,end,label\n1,2,x\n1,zwei,y\n", "line 3: 'zwei' is not a time"),
    "empty.csv": ("", "no column"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_files(tmp_path, name):
    content, message = MALFORMED[name]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(AnnotationError, match=message) as raised:
        read_annotations(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_textgrid_quotes_and_utf16_as_praat_saves_non_ascii(tmp_path):
    tiers = {'said "nein"': [Interval(1.0, 2.0, 'er sagte "nein" – عجیب')]}
    path = write_textgrid(tmp_path / "rec.TextGrid", tiers, 3.0)
    assert read_textgrid(path) == tiers
    utf16 = tmp_path / "utf16.TextGrid"
    utf16.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))  # with a BOM, as Praat writes it
    assert read_textgrid(utf16) == tiers


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = write_textgrid(tmp_path / "rec.TextGrid", {"speech": SPEECH}, DURATION)
    before = path.read_bytes()

    def interrupted(self, fn, *args, **kwargs):
        with open(fn, "w", encoding="utf-8") as half:
            half.write('File type = "ooTextFile"\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(praatio_textgrid.Textgrid, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_textgrid(path, {"notes": NOTES}, DURATION)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == [] and len(list(tmp_path.iterdir())) == 1
