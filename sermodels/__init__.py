"""sermodels: a PyTorch Lightning model zoo for speech emotion recognition."""

__version__ = "0.1.0"

from sermodels import hub
from sermodels._registry import create_model, get_model_class, list_models, list_pretrained, register_model
from sermodels.hub import load

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
