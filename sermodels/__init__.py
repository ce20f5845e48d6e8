"""sermodels: a PyTorch Lightning model zoo for speech emotion recognition."""

from sermodels import hub
from sermodels._registry import create_model, get_model_class, list_models, register_model
from sermodels._version import __version__
from sermodels.hub import load
from sermodels.pretrained import list_pretrained

__all__ = [
    "__version__",
    "create_model",
    "get_model_class",
    "hub",
    "list_models",
    "list_pretrained",
    "load",
    "register_model",
]
