"""Deep Spectrum features: spectrogram images through one layer of an ImageNet CNN (timm), one vector per image.

Provenance
- Amiriparian et al., "Snore sound classification using image-based deep spectrum features", Interspeech 2017, and
  the EmoNet paper's Deep Spectrum baseline (Gerczuk et al., IEEE Trans. Affective Computing, §2.3, §4.2): a
  (mel-)spectrogram is plotted with a colour map, the plot is resized to the CNN's input size (224 x 224), passed
  through an ImageNet CNN, and the activations of one layer (VGG16 ``fc7``, 4096-d) are the features.
- §4.2 settings: 128 mel filters, the magma colour map, whole files (no windowing), VGG16.

The extractor is two parts, each in its own module:

- the picture, :class:`~sermodels.features.spectrogram_image.SpectrogramImage` (how the toolkit's matplotlib plot is
  computed in torch, batched, on any device);
- the CNN, :class:`~sermodels.layers.backbone.BackboneFeatures` (a timm model cut at a named layer, its weights
  from the Hub, a safetensors file or random, its input normalisation).

Long recordings are cut into windows by :func:`sermodels.features.windows.plan_windows` (one image and one feature
row per window).

Departures
- 4-D activations of a named layer are average-pooled over space by default (``pool="flatten"`` keeps the
  original's flattening, which gives very long vectors for convolutional layers).
- In a padded batch each clip's image is rendered as if it were alone, so a clip's features do not depend on its
  batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from sermodels.features.spectrogram_image import SpectrogramImage
from sermodels.layers.backbone import BackboneFeatures

#: EmoNet paper §4.2: VGG16 pre-trained on ImageNet (its fc7 layer, :func:`sermodels.layers.backbone.default_layer`).
DS_BACKBONE = "vgg16"


class DeepSpectrum(BackboneFeatures):
    """Waveforms ``(B, T)`` + lengths ``(B,)`` -> Deep Spectrum features ``(B, D)`` of one layer of a timm backbone.

    ``layer``: ``"pre_logits"`` (the pooled features before the classifier), ``"fc6"``/``"fc7"`` for VGG nets, or
    the name of any module of the timm model (its output, average-pooled over space if 4-D unless
    ``pool="flatten"``). ``image``: :class:`SpectrogramImage` arguments. ``pretrained``, ``mean``, ``std``: see
    :class:`~sermodels.layers.backbone.BackboneFeatures`.

    It *is* a :class:`BackboneFeatures` that renders its own images (``forward`` takes waveforms, and
    :meth:`features_of_images` takes images), rather than holding one, so that the timm weights keep the names
    ``backbone.*`` they have in released checkpoints (``extractor.backbone.*``). The extractor is frozen: the
    backbone stays in eval mode whatever the mode of the model around it.
    """

    def __init__(
        self,
        backbone: str = DS_BACKBONE,
        layer: str | None = None,
        pretrained: bool | str | Path = False,
        image: dict[str, Any] | None = None,
        pool: str = "avg",
        mean: list[float] | tuple[float, ...] | None = None,
        std: list[float] | tuple[float, ...] | None = None,
    ):
        images = SpectrogramImage(**(image or {}))  # image options are checked before a backbone is built
        super().__init__(backbone, layer, pretrained=pretrained, pool=pool, mean=mean, std=std)
        self.images = images
        self.backbone.eval()
        self.dim = self.output_dim(*self.images.size)

    def config(self) -> dict[str, Any]:
        backbone = super().config()
        return {
            "backbone": backbone["backbone"],
            "layer": backbone["layer"],
            "image": self.images.config(),
            "pool": backbone["pool"],
            "mean": backbone["mean"],
            "std": backbone["std"],
        }

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.features_of_images(self.images(waveforms, lengths))

    def train(self, mode: bool = True) -> DeepSpectrum:
        """The extractor is frozen: the backbone stays in eval mode (BN statistics, dropout) whatever ``mode`` is."""
        super().train(mode)
        self.backbone.eval()
        return self
