"""Arrows point down: what each layer of the package may import (STYLE.md, "The house").

``features/`` and ``models/`` never import the hub, the pipelines, the command line or the package ``__init__``;
no module reads the version through the package (``__version__`` lives in the leaf ``sermodels._version``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sermodels"
ABOVE_FEATURES_AND_MODELS = ("sermodels.hub", "sermodels.pipelines", "sermodels.cli", "sermodels.inference")


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (``from x import y`` counts as ``x`` and ``x.y``)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _files(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _files("features") + _files("models"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_features_and_models_import_nothing_above_them(path):
    imported = _imports(path)
    above = sorted(name for name in imported if name.startswith(ABOVE_FEATURES_AND_MODELS))
    assert not above, f"{path.relative_to(PACKAGE)} imports {above}"
    assert "sermodels" not in imported, f"{path.relative_to(PACKAGE)} imports the package __init__"


def test_no_module_reads_the_version_through_the_package():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        if "sermodels.__version__" in _imports(path) or "sermodels.__version__" in path.read_text():
            offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"read __version__ from sermodels._version instead: {offenders}"


def test_the_import_walker_sees_relative_and_absolute_imports(tmp_path):
    assert {"sermodels.audio", "sermodels.audio.load_audio"} <= _imports(PACKAGE / "features" / "egemaps.py")
    assert "sermodels.pipelines.engine" in _imports(PACKAGE / "pipelines" / "predict.py")
