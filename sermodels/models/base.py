"""The contract every sermodels architecture follows.

A model is a plain ``nn.Module`` that takes raw mono waveforms at ``sample_rate`` and returns class logits for one of
its heads. The front-end lives inside the model, so a checkpoint carries its own feature configuration. What is
needed to rebuild it is ``config()``: the JSON-able keyword arguments of its constructor, stored in ``config.json``
next to the weights.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class SERModel(nn.Module):
    """Base class: waveforms ``(batch, samples)`` + lengths ``(batch,)`` -> logits ``(batch, classes)``.

    Subclasses set ``self.sample_rate``, ``self.heads`` (head name -> class names, in logit order) and
    ``self.default_head`` in ``__init__``, and implement :meth:`config`, :meth:`forward` and :meth:`embed`.
    ``arch`` is filled in by :func:`sermodels._registry.register_model`.
    """

    arch: ClassVar[str] = ""
    # What a score column means: "probability" (softmax of logits) or "decision" (an SVM's margin).
    score_kind: ClassVar[str] = "probability"
    # Inputs shorter than this (seconds) are rejected at load time by callers that decode files.
    min_duration: ClassVar[float] = 0.0
    # Files longer than this are scored in windows of this length by default (None: whole files).
    default_chunk_seconds: ClassVar[float | None] = None

    sample_rate: int
    heads: dict[str, list[str]]
    default_head: str

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments that rebuild this model (JSON types only)."""
        raise NotImplementedError

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        raise NotImplementedError

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The shared utterance representation ``(batch, dim)`` that the heads classify."""
        raise NotImplementedError

    def label_names(self, head: str | None = None) -> list[str]:
        return list(self.heads[self.resolve_head(head)])

    def resolve_head(self, head: str | None) -> str:
        name = self.default_head if head is None else head
        if name not in self.heads:
            raise KeyError(f"{type(self).__name__} has no head {name!r}; its heads are {sorted(self.heads)}")
        return name

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class scores written by ``predict``: probabilities, or raw decision values for SVMs."""
        return logits.softmax(dim=-1) if self.score_kind == "probability" else logits


def valid_lengths(waveforms: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``lengths`` as a long tensor on the waveforms' device; the full width when not given."""
    if lengths is None:
        return torch.full((waveforms.shape[0],), waveforms.shape[-1], dtype=torch.long, device=waveforms.device)
    return lengths.to(device=waveforms.device, dtype=torch.long)
