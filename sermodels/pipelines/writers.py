"""Output formats of the pipelines: tables of named columns (predictions) and feature matrices, as CSV, JSON, NPY
or Parquet. Every file is written atomically (:mod:`sermodels._io`): a reader never sees half of one.

Tables (``predict``): a list of records with the same columns, written as CSV (``csv.DictWriter``, numbers as
Python writes them, so they read back exactly), or Parquet (one typed column each: strings, float64 numbers, nulls
for missing values). JSON payloads are built by each pipeline (they carry more than the table).

Feature matrices (``features``): streamed in chunks of rows into a temporary file, so an output larger than memory
can be assembled from its shards:

- ``.csv``: the Deep Spectrum toolkit's columns ``name, timeStamp?, neuron_0 .. neuron_{D-1}, class?``, values
  with 9 significant digits (which round-trip float32);
- ``.npy``: the ``(rows, D)`` float32 matrix alone (its header written first, with the row count known);
- ``.parquet``: ``name``, ``timeStamp?``, ``class?`` and ``features``, one ``fixed_size_list<float32>[D]`` per row.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from sermodels._io import atomic_write_bytes

NAME_COLUMN, TIME_COLUMN, CLASS_COLUMN, FEATURE_PREFIX = "name", "timeStamp", "class", "neuron_"  # toolkit's names
FEATURE_FORMAT = "{:.9g}"  # 9 significant digits round-trip float32


def pyarrow():
    """``(pyarrow, pyarrow.parquet)``, or an ImportError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise ImportError(
            "writing .parquet needs the package pyarrow (pip install pyarrow, or the dev extra: "
            "pip install -e '.[dev]'); or write another format"
        ) from err
    return pyarrow, pyarrow.parquet


# ---------------------------------------------------------------------------------------------------- tables


def table_csv(columns: Sequence[str], records: Sequence[dict[str, Any]]) -> str:
    """CSV text of ``records`` under a header of ``columns`` (a record's missing columns are empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def write_table_parquet(
    path: str | os.PathLike, columns: Sequence[str], records: Sequence[dict[str, Any]], text: Sequence[str]
) -> None:
    """``records`` as a Parquet file: the ``text`` columns as strings, the others as float64 (missing: null)."""
    pa, pq = pyarrow()
    fields = [pa.field(name, pa.string() if name in text else pa.float64()) for name in columns]
    schema = pa.schema(fields)
    arrays = [pa.array([record.get(name) for record in records], type=f.type) for name, f in zip(columns, fields)]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def rows_csv(rows: list[list[str]]) -> str:
    """CSV text of plain rows (sidecar files: index, errors)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------- feature matrices


class FeatureWriter:
    """Streams ``(names, starts, classes, features)`` chunks into an open file; :meth:`close` flushes to disk."""

    binary = True

    def __init__(self, file: IO, dim: int, rows: int, windowed: bool, labelled: bool):
        self.file, self.dim, self.rows, self.windowed, self.labelled = file, dim, rows, windowed, labelled

    def write(self, names: list[str], starts: list[float], classes: list[str] | None, features: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        _synced(self.file)


class CsvFeatureWriter(FeatureWriter):
    binary = False

    def __init__(self, file: IO, dim: int, rows: int, windowed: bool, labelled: bool):
        super().__init__(file, dim, rows, windowed, labelled)
        self.writer = csv.writer(self.file, lineterminator="\n")
        features = [f"{FEATURE_PREFIX}{i}" for i in range(dim)]  # neuron_0 .. neuron_{D-1}, as the toolkit
        header = [NAME_COLUMN, *([TIME_COLUMN] if windowed else []), *features, *([CLASS_COLUMN] if labelled else [])]
        self.writer.writerow(header)

    def write(self, names, starts, classes, features):
        for i, values in enumerate(features.tolist()):
            row = [names[i], *([repr(starts[i])] if self.windowed else []), *map(FEATURE_FORMAT.format, values)]
            self.writer.writerow(row + ([classes[i]] if classes is not None else []))


class NpyFeatureWriter(FeatureWriter):
    def __init__(self, file: IO, dim: int, rows: int, windowed: bool, labelled: bool):
        super().__init__(file, dim, rows, windowed, labelled)
        self.written = 0
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (rows, dim)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, names, starts, classes, features):
        self.file.write(np.ascontiguousarray(features, dtype="<f4").tobytes())
        self.written += features.shape[0]

    def close(self) -> None:
        super().close()
        if self.written != self.rows:
            raise RuntimeError(f"wrote {self.written} rows, the header announces {self.rows}")


class ParquetFeatureWriter(FeatureWriter):
    def __init__(self, file: IO, dim: int, rows: int, windowed: bool, labelled: bool):
        super().__init__(file, dim, rows, windowed, labelled)
        pa, pq = pyarrow()
        self.pa = pa
        fields = [pa.field(NAME_COLUMN, pa.string())]
        fields += [pa.field(TIME_COLUMN, pa.float64())] if windowed else []
        fields += [pa.field(CLASS_COLUMN, pa.string())] if labelled else []
        fields += [pa.field("features", pa.list_(pa.float32(), dim))]
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(file, self.schema)

    def write(self, names, starts, classes, features):
        pa = self.pa
        flat = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1), type=pa.float32())
        columns = [pa.array(names, pa.string())]
        columns += [pa.array(starts, pa.float64())] if self.windowed else []
        columns += [pa.array(classes, pa.string())] if classes is not None else []
        columns += [pa.FixedSizeListArray.from_arrays(flat, self.dim)]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
        super().close()


FEATURE_WRITERS: dict[str, type[FeatureWriter]] = {
    ".csv": CsvFeatureWriter,
    ".npy": NpyFeatureWriter,
    ".parquet": ParquetFeatureWriter,
}


def _synced(file: IO) -> None:
    file.flush()
    os.fsync(file.fileno())
