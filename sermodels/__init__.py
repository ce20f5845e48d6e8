"""sermodels: a PyTorch Lightning model zoo for speech emotion recognition."""

__version__ = "0.1.0"
