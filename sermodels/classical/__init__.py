"""Classical (scikit-learn) fitting: fixed features of whole files, a z-score and a linear SVM, copied into torch.

Nothing here is a LightningModule (models trained by gradient descent go through :mod:`sermodels.tasks` and
``sermodels train``); the fitted hyperplanes become the linear layer of a plain registered model, released through
the same export (:func:`sermodels.training.export.write_release`).

- :mod:`~sermodels.classical.svm`: the SVM protocols (fixed split, leave-one-speaker-out) and the utterance
  functionals (log-mel 600, eGeMAPS, GeMAPS) of file lists, with their feature cache;
- :mod:`~sermodels.classical.release`: the log-mel SVM baseline recipe to a release folder (``sermodels fit-svm``)
  and the per-fold refit of ``sermodels evaluate --split loso``;
- :mod:`~sermodels.classical.deep_spectrum`: the Deep Spectrum paper's SVM head on frozen CNN features
  (``sermodels fit-deep-spectrum`` on a ``classifier: svm`` recipe);
- :mod:`~sermodels.classical.recipe`: the flat recipe format they share and the release folder they write.
"""
