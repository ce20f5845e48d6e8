"""Training applications: ``sermodels train`` for every Lightning recipe, ``sermodels finetune``, and the one
release export (weights, config.json with output specs, resolved recipe, training log, metrics, card) that the
Lightning and the scikit-learn recipes share."""
