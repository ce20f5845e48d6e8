"""Applications over many audio files: the resumable batch engine, ``predict`` and feature extraction.

- :mod:`~sermodels.pipelines.inputs`: files and folders to run over, label tables;
- :mod:`~sermodels.pipelines.engine`: decode, cut, window, batch and run a module over files, bad files reported
  and skipped, memory bounded (:class:`BatchEngine`);
- :mod:`~sermodels.pipelines.resume`: a resumable job's partial folder (settings, lock, shards);
- :mod:`~sermodels.pipelines.writers`: CSV / JSON / NPY / Parquet outputs;
- :mod:`~sermodels.pipelines.predict`: ``sermodels predict`` (:func:`predict_files`, :func:`run_predictions`);
- :mod:`~sermodels.pipelines.terminal`: the table ``sermodels predict`` prints (a row per file);
- :mod:`~sermodels.pipelines.features`: ``sermodels features deepspectrum`` and ``av_spnet``
  (:mod:`~sermodels.pipelines.model_features`); imported on its own: it needs timm;
- daylong recordings (NICU paper), each imported on its own: :mod:`~sermodels.pipelines.vad` (voice activity) and
  :mod:`~sermodels.pipelines.segments` (segment rules), :mod:`~sermodels.pipelines.readout` (arousal/valence from
  any head), :mod:`~sermodels.pipelines.daylong` (one recording, resumable per block),
  :mod:`~sermodels.pipelines.daylong_runner` (many recordings on Lightning's predict loop),
  :mod:`~sermodels.pipelines.daylong_report` (tables, plot, HTML, annotation files),
  :mod:`~sermodels.pipelines.annotations` (TextGrid / ELAN / Audacity / CSV files) and
  :mod:`~sermodels.pipelines.annotate` (``annotate select`` / ``import``: medoid active learning for annotators).

Pipelines sit above the models and features: they may import anything below them, nothing below imports them.
"""

from sermodels.pipelines.engine import BatchEngine, Cut, Finished, Step
from sermodels.pipelines.inputs import expand_inputs
from sermodels.pipelines.predict import PredictionResult, predict_files, run_predictions, write_predictions

__all__ = [
    "BatchEngine",
    "Cut",
    "Finished",
    "PredictionResult",
    "Step",
    "expand_inputs",
    "predict_files",
    "run_predictions",
    "write_predictions",
]
