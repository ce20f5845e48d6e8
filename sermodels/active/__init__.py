"""Active learning: which utterances of an unlabelled pool to annotate first.

Medoid-based active learning (MAL) of the NICU SER paper (§2.1, §4.2.1): an autoencoder compresses the 600-d log-mel
functionals to 32-d codes (:mod:`.autoencoder`), and k-medoids on their Pearson distances picks the medoids to
annotate, largest cluster first (:mod:`.medoids`). :func:`random_selection` is the baseline at the same budget.
"""

from .autoencoder import FeatureAutoencoder, TrainingHistory, encode, fit_autoencoder
from .medoids import (
    MAX_SAMPLES,
    MedoidSelection,
    farthest_first,
    k_medoids,
    pearson_distances,
    random_selection,
    select_from_codes,
    select_medoids,
)

__all__ = [
    "MAX_SAMPLES",
    "FeatureAutoencoder",
    "MedoidSelection",
    "TrainingHistory",
    "encode",
    "farthest_first",
    "fit_autoencoder",
    "k_medoids",
    "pearson_distances",
    "random_selection",
    "select_from_codes",
    "select_medoids",
]
