"""Whether a model is being traced into a graph (``torch.export``, the ONNX exporters, ``torch.compile``).

A traced graph cannot hold a Python decision on tensor values: ``if (lengths > width).any(): raise`` needs the
data, which a graph does not have. The value checks of the front-ends and models (lengths in range, clips long
enough) therefore run only in eager mode; a graph is traced for inputs that satisfy them by construction (the
ONNX export traces whole rows, ``lengths=None``: :mod:`sermodels.deploy.onnx`), and whoever feeds a graph checks
its inputs first (``sermodels predict`` rejects files shorter than the model's minimum when it decodes them).
Nothing here imports the rest of the package.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True while ``torch.export`` / ``torch.onnx.export`` / ``torch.compile`` trace the calling code."""
    return bool(torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def checking() -> bool:
    """True when value checks on tensors (which need the data) may run: in eager mode only."""
    return not tracing()
