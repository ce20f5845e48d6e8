"""What every evaluation report shares: the item protocol, label maps, model and software facts, and the one-line
summary of a report of either kind."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sermodels._io import software_versions
from sermodels.models.base import SERModel

# Packages whose versions go into every report, so a number can be traced to the software that produced it.
REPORTED_PACKAGES = (
    "sermodels", "torch", "torchmetrics", "lightning", "numpy", "scikit-learn", "soundfile", "soxr", "libsndfile",
)  # fmt: skip

LabelMap = Callable[[str], Any] | Mapping[str, Any]


class LabelledItem(Protocol):
    """What evaluation needs from a corpus item (``sermodels.data`` items satisfy it).

    Categories heads read ``label``; dimensions heads read ``values`` or ``trace`` where the item has them
    (``getattr``: they may be absent), or ``label`` through a label map.
    """

    path: Any
    label: Any
    speaker: Any


def report_kind(report: Mapping[str, Any]) -> str:
    """``"categories"`` or ``"dimensions"``: what a report (or LOSO summary) scores."""
    output = report.get("output")
    return output["kind"] if isinstance(output, Mapping) else "categories"


#: The numbers of a report that metrics.json keeps (whichever the report has): categories, LOSO, dimensions.
METRICS_KEYS = (
    "uar", "war", "macro_f1", "n", "fold_uar_mean", "fold_uar_std", "folds_n",
    "ccc", "ccc_sequence", "ccc_mean", "n_frames", "metrics",
)  # fmt: skip


def metrics_entry(report: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of a report, as ``metrics.json`` stores them per ``<corpus>/<split>`` (for dimensions
    also ``metrics``: CCC, Pearson r and RMSE per dimension)."""
    return {key: report[key] for key in METRICS_KEYS if key in report}


def headline(report: Mapping[str, Any]) -> str:
    """The one-line summary of a report: UAR/WAR for categories, CCC per dimension for dimensions."""
    if report_kind(report) == "categories":
        of = f" of {report['n_items']}" if report.get("n_items", report["n"]) != report["n"] else ""
        return f"UAR {report['uar']:.4f}, WAR {report['war']:.4f} (n = {report['n']}{of})"
    what = "CCC (frames concatenated)" if report["level"] == "frame" else "CCC"
    text = f"{what} " + ", ".join(f"{name} {value:.4f}" for name, value in report["ccc"].items())
    if report["level"] == "frame":
        text += "; per sequence " + ", ".join(f"{n} {v:.4f}" for n, v in report["ccc_sequence"].items())
    return f"{text} (n = {report['n']})"


def require_predictions(predictions: list, result, items: list, where: Mapping[str, Any]) -> None:
    """Raise, naming the first failures, when no item could be predicted."""
    if not predictions:
        shown = "; ".join(f"{path}: {reason}" for path, reason in result.failures[:5])
        raise ValueError(
            f"no item of {where['corpus'] or 'the corpus'} {where['split']} could be predicted ({len(items)} items). "
            f"{shown}"
        )


def failures_of(result) -> list[dict[str, str]]:
    """The engine's failed files as report entries."""
    return [{"path": path, "reason": reason} for path, reason in result.failures]


def as_mapper(label_map: LabelMap | None, items: list[LabelledItem]) -> Callable[[Any], Any]:
    """``label_map`` as a function; a dict must have an entry for every corpus label (``None`` to leave one out)."""
    if label_map is None:
        return lambda label: label
    if isinstance(label_map, Mapping):
        missing = Counter(str(item.label) for item in items if item.label not in label_map)
        if missing:
            listed = ", ".join(f"{label!r} ({count_items(count)})" for label, count in sorted(missing.items()))
            raise ValueError(f"label_map has no entry for these labels: {listed}")
        return label_map.__getitem__
    return label_map


def count_items(count: int) -> str:
    """``"1 item"`` or ``"<n> items"``."""
    return f"{count} item" if count == 1 else f"{count} items"


def describe_label_map(label_map: LabelMap | None) -> Any:
    """A label map as the report records it: the dict itself, or the function's qualified name."""
    if label_map is None:
        return None
    if isinstance(label_map, Mapping):
        return dict(label_map)
    return f"{getattr(label_map, '__module__', '?')}.{getattr(label_map, '__qualname__', repr(label_map))}"


def model_info(model: SERModel, model_id: str | None) -> dict[str, Any]:
    """The report's ``model`` entry: id, architecture and constructor arguments."""
    try:
        config = model.config()
    except NotImplementedError:
        config = None
    arch = model.arch or type(model).__name__
    return {"id": model_id or getattr(model, "model_id", None) or arch, "arch": arch, "config": config}


def json_scalar(value: Any) -> Any:
    """``value`` if JSON has it as a scalar, else its text."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def report_versions() -> dict[str, str | None]:
    """Python, libsndfile and the :data:`REPORTED_PACKAGES` versions (``None`` for one that is not installed)."""
    return software_versions(*REPORTED_PACKAGES)
