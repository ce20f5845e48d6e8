"""Every notebook in notebooks/ executes top to bottom (CI runs them; outputs are not committed)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import DATA
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# What a notebook must print: its headline result, or the line saying that the corpus it needs is absent.
EXPECTED = {"01_quickstart.ipynb": ("test UAR", "skipping the fine-tuning")}
DEFAULT_EXPECTED = ("UAR", "skipping the evaluation")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("SERMODELS_DATA", str(DATA))
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit notebooks cleared"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    result, skipped = EXPECTED.get(path.name, DEFAULT_EXPECTED)
    assert result in printed or skipped in printed
