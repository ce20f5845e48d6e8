"""What ``sermodels daylong`` writes for a recording: segment tables, timeline plot, HTML page, annotation files.

Per recording folder:

- ``segments.csv`` (and ``.json`` / ``.parquet`` on request): one row per speech segment: ``segment`` (its number),
  ``start``, ``end``, ``duration`` (seconds), ``start_sample``, ``end_sample`` (at the model's rate), the binary
  ``arousal`` / ``valence`` labels with ``p_high_arousal`` / ``p_positive_valence`` (:mod:`readout`), then every
  scored head's own columns: a categories head's top label as ``<head>.label`` and a score per class as
  ``<head>.<class>``, a dimensions head's values as ``<head>.<dimension>``.
- ``timeline.png``: per time bin of ``bin_minutes``, the minutes of speech (bars) and the share of that speech that
  is high arousal and positive valence (lines). Shares are weighted by segment duration (a segment crossing a bin
  edge counts in both bins by its overlap); a bin without speech has no share.
- ``summary.html``: the recording's figures, the plot, links to the files, and the unreadable regions.
- ``<stem>.TextGrid`` (Praat), ``<stem>.eaf`` (ELAN) with an ``arousal`` and a ``valence`` tier, and
  ``<stem>.audacity.txt`` (Audacity labels, ``arousal/valence``), so a listener can check segments in context.
- ``summary.json``: the figures, the settings and the problems, read by the run's ``index.csv``.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sermodels._io import atomic_write_bytes, atomic_write_text
from sermodels.pipelines import annotations as ann
from sermodels.pipelines.writers import table_csv, write_table_parquet

BIN_MINUTES = 10.0
TABLE_FORMATS = ("csv", "json", "parquet")
ANNOTATION_FORMATS = ("textgrid", "eaf", "audacity")
FIRST_COLUMNS = (
    "segment",
    "start",
    "end",
    "duration",
    "start_sample",
    "end_sample",
    "arousal",
    "p_high_arousal",
    "valence",
    "p_positive_valence",
)
TEXT_COLUMNS = ("arousal", "valence")
FIGSIZE = (12.0, 4.5)
DPI = 100
INDEX_COLUMNS = (
    "recording",
    "folder",
    "status",
    "duration_h",
    "speech_min",
    "segments",
    "share_high_arousal",
    "share_positive_valence",
    "problems",
)


def head_columns(reading, output: torch.Tensor, score: torch.Tensor) -> dict[str, Any]:
    """A head's own columns for one segment (module docstring)."""
    names = reading.spec.names
    if reading.spec.kind == "categories":
        top = names[int(output.argmax())]
        scores = {f"{reading.head}.{n}": float(s) for n, s in zip(names, score.tolist())}
        return {f"{reading.head}.label": top, **scores}
    return {f"{reading.head}.{n}": float(v) for n, v in zip(names, output.tolist())}


def segment_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and records of the final table, segments numbered in time order."""
    ordered = sorted(rows, key=lambda r: (r["start_sample"], r["end_sample"]))
    records, extra = [], []
    for number, row in enumerate(ordered):
        record = {k: v for k, v in row.items() if k != "block"}
        record.pop("segment", None)
        record["segment"] = number
        record["duration"] = round(row["end"] - row["start"], 3)
        records.append(record)
        extra += [k for k in record if k not in FIRST_COLUMNS and k not in extra]
    return list(FIRST_COLUMNS) + extra, records


def summarise(records: Sequence[dict[str, Any]], duration: float, bin_minutes: float) -> dict[str, Any]:
    """Totals and per-bin figures (speech minutes, duration-weighted shares of high arousal and positive valence)."""
    speech = sum(r["duration"] for r in records)
    bins = max(1, math.ceil(duration / (bin_minutes * 60.0))) if duration > 0 else 1
    width = bin_minutes * 60.0
    minutes, high, positive = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for r in records:
        first, last = int(r["start"] // width), min(bins - 1, int(max(r["start"], r["end"] - 1e-9) // width))
        for b in range(first, last + 1):
            overlap = max(0.0, min(r["end"], (b + 1) * width) - max(r["start"], b * width))
            minutes[b] += overlap / 60.0
            high[b] += overlap / 60.0 * (r["arousal"] == "high")
            positive[b] += overlap / 60.0 * (r["valence"] == "positive")
    with np.errstate(invalid="ignore", divide="ignore"):
        share_high = np.where(minutes > 0, high / minutes, np.nan)
        share_positive = np.where(minutes > 0, positive / minutes, np.nan)
    total_high = sum(r["duration"] for r in records if r["arousal"] == "high")
    total_positive = sum(r["duration"] for r in records if r["valence"] == "positive")
    return {
        "duration_s": round(duration, 3),
        "speech_s": round(speech, 3),
        "segments": len(records),
        "share_high_arousal": round(total_high / speech, 4) if speech else None,
        "share_positive_valence": round(total_positive / speech, 4) if speech else None,
        "bin_minutes": bin_minutes,
        "bins": {
            "start_min": [round(b * bin_minutes, 3) for b in range(bins)],
            "speech_min": [round(float(m), 4) for m in minutes],
            "share_high_arousal": [None if math.isnan(s) else round(float(s), 4) for s in share_high],
            "share_positive_valence": [None if math.isnan(s) else round(float(s), 4) for s in share_positive],
        },
    }


def write_outputs(
    folder: Path, path: Path, rows: Sequence[dict[str, Any]], state: dict[str, Any], described: dict[str, Any]
) -> dict[str, Any]:
    """Every output of a finished recording; returns (and writes) its ``summary.json``."""
    settings = described["settings"]
    duration = state["samples"] / described["sample_rate"]
    columns, records = segment_table(rows)
    written = write_tables(folder, columns, records, settings["tables"])
    figures = summarise(records, duration, settings["bin_minutes"])
    atomic_write_bytes(folder / "timeline.png", timeline_png(figures, path.name))
    written.append("timeline.png")
    written += write_annotation_files(folder, path, records, duration, settings["annotations"])
    summary = {
        "recording": str(path.resolve()),
        "complete": True,
        **figures,
        "problems": state["problems"],
        "files": written + ["summary.html", "summary.json"],
        **described,
    }
    atomic_write_text(folder / "summary.html", summary_html(summary, records))
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def write_tables(folder: Path, columns: list[str], records: list[dict[str, Any]], formats: Sequence[str]) -> list[str]:
    written = []
    text = [c for c in columns if c in TEXT_COLUMNS or (records and isinstance(records[0].get(c), str))]
    for kind in formats:
        name = f"segments.{kind}"
        if kind == "csv":
            atomic_write_text(folder / name, table_csv(columns, records))
        elif kind == "json":
            atomic_write_text(folder / name, json.dumps({"columns": columns, "segments": records}, indent=1) + "\n")
        else:
            write_table_parquet(folder / name, columns, records, text)
        written.append(name)
    return written


def write_annotation_files(
    folder: Path, path: Path, records: Sequence[dict[str, Any]], duration: float, formats: Sequence[str]
) -> list[str]:
    """Annotation files of the segments: ``arousal`` and ``valence`` tiers (Audacity: one ``arousal/valence`` track)."""
    tiers = {
        "arousal": [ann.Interval(r["start"], r["end"], r["arousal"]) for r in records],
        "valence": [ann.Interval(r["start"], r["end"], r["valence"]) for r in records],
    }
    end = max([duration] + [r["end"] for r in records])
    stem, written = folder.name, []
    for kind in formats:
        if kind == "textgrid":
            ann.write_textgrid(folder / f"{stem}.TextGrid", tiers, end)
            written.append(f"{stem}.TextGrid")
        elif kind == "eaf":
            ann.write_eaf(folder / f"{stem}.eaf", tiers, media=str(path.resolve()))
            written.append(f"{stem}.eaf")
        else:
            labels = [ann.Interval(r["start"], r["end"], f"{r['arousal']}/{r['valence']}") for r in records]
            ann.write_audacity_labels(folder / f"{stem}.audacity.txt", labels)
            written.append(f"{stem}.audacity.txt")
    return written


def timeline_png(figures: dict[str, Any], title: str) -> bytes:
    """Speech minutes per bin (bars) and the shares of high arousal and positive valence (lines, right axis)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = figures["bins"]
    width = figures["bin_minutes"] / 60.0
    hours = np.array(bins["start_min"]) / 60.0
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.bar(hours, bins["speech_min"], width=width, align="edge", color="0.75", label="speech (min)")
    axes.set_xlabel("time in the recording (h)")
    axes.set_ylabel(f"speech minutes per {figures['bin_minutes']:g} min")
    shares = axes.twinx()
    centres = hours + width / 2
    for key, colour, label in (
        ("share_high_arousal", "tab:red", "high arousal"),
        ("share_positive_valence", "tab:green", "positive valence"),
    ):
        values = np.array([np.nan if v is None else v for v in bins[key]], dtype=float)
        shares.plot(centres, values, marker="o", markersize=3, color=colour, label=f"share {label}")
    shares.set_ylim(0.0, 1.0)
    shares.set_ylabel("share of the speech")
    handles = axes.get_legend_handles_labels()[0] + shares.get_legend_handles_labels()[0]
    axes.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    axes.set_title(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def summary_html(summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """A short, self-contained page: figures, the timeline, links to the outputs, problems."""
    e = html.escape

    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    facts = [
        ("recording", summary["recording"]),
        ("duration", f"{summary['duration_s'] / 3600:.2f} h"),
        ("speech", f"{summary['speech_s'] / 60:.1f} min in {summary['segments']} segments"),
        ("high arousal (share of speech time)", share(summary["share_high_arousal"])),
        ("positive valence (share of speech time)", share(summary["share_positive_valence"])),
        ("model", f"{summary['model']} (heads: {', '.join(h['head'] for h in summary['heads'])})"),
        ("voice activity", json.dumps(summary["vad"])),
        ("segment rules", json.dumps(summary["rules"])),
    ]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts)
    links = "".join(f'<li><a href="{e(name)}">{e(name)}</a></li>' for name in summary["files"])
    if summary["problems"]:
        items = "".join(
            f"<li>block {p['block']} ({p['start']:.1f} s): {e(p['problem'])}</li>" for p in summary["problems"]
        )
        problems = f"<h2>Unreadable or repaired regions</h2><ul>{items}</ul>"
    else:
        problems = "<p>No unreadable regions.</p>"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{e(Path(summary['recording']).name)}: daylong SER summary</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}th{text-align:left;padding-right:1em}"
        "td,th{vertical-align:top}</style></head><body>"
        f"<h1>{e(Path(summary['recording']).name)}</h1><table>{rows}</table>"
        '<h2>Timeline</h2><img src="timeline.png" alt="speech minutes and emotion shares per time bin" width="100%">'
        f"{problems}<h2>Files</h2><ul>{links}</ul>"
        "<p>Arousal and valence are a model's binary predictions per speech segment (sermodels daylong); they are "
        "estimates for a population of segments, not a clinical judgement of any one of them.</p></body></html>\n"
    )


def write_index(out: Path, paths: Sequence[Path], folders: Sequence[Path]) -> None:
    """``index.csv`` and ``index.html`` over every recording of the run (finished, failed or unfinished)."""
    records = []
    for path, folder in zip(paths, folders):
        record: dict[str, Any] = {"recording": str(path), "folder": folder.name, "status": "not finished"}
        summary_file = folder / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            record |= {
                "status": "complete",
                "duration_h": round(summary["duration_s"] / 3600, 4),
                "speech_min": round(summary["speech_s"] / 60, 3),
                "segments": summary["segments"],
                "share_high_arousal": summary["share_high_arousal"],
                "share_positive_valence": summary["share_positive_valence"],
                "problems": len(summary["problems"]),
            }
        elif (folder / "failed.json").is_file():
            record["status"] = "failed: " + json.loads((folder / "failed.json").read_text())["error"]
        records.append(record)
    atomic_write_text(out / "index.csv", table_csv(INDEX_COLUMNS, records))
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in INDEX_COLUMNS)
    body = ""
    for r in records:
        cells = "".join(f"<td>{e(str(r.get(c, '')))}</td>" for c in INDEX_COLUMNS[1:])
        link = f'<a href="{e(r["folder"])}/summary.html">{e(Path(r["recording"]).name)}</a>'
        body += f"<tr><td>{link}</td>{cells}</tr>"
    atomic_write_text(
        out / "index.html",
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>daylong SER</title></head><body>"
        f"<h1>Recordings</h1><table border='1' cellpadding='4'><tr>{head}</tr>{body}</table></body></html>\n",
    )
