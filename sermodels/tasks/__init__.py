"""LightningModules by training regime (not by model family): every architecture trains through one of these.

- :class:`SERTask` (``base``): model from the registry, optimiser/schedule from config, validation by head kind,
  best state kept across resumes;
- :class:`ClassificationTask`, :class:`MultiDomainTask` (``classification``): cross-entropy, one corpus or round-robin;
- :class:`TransferTask` (``transfer``): from a pretrained checkpoint, adapters/head/full or freeze/re-init by group;
- :class:`MultitaskTask` (``multitask``): a weighted sum of per-head losses, reconstruction included;
- :class:`RegressionTask` (``regression``): dimensional heads with the CCC family of losses;
- :class:`AdaptationTask` (``adaptation``): WDA critic training by manual optimisation.
"""

from sermodels.tasks.adaptation import AdaptationTask
from sermodels.tasks.base import SERTask
from sermodels.tasks.classification import ClassificationTask, MultiDomainTask
from sermodels.tasks.multitask import MultitaskTask
from sermodels.tasks.regression import RegressionTask
from sermodels.tasks.transfer import TransferTask

__all__ = [
    "AdaptationTask",
    "ClassificationTask",
    "MultiDomainTask",
    "MultitaskTask",
    "RegressionTask",
    "SERTask",
    "TransferTask",
]
