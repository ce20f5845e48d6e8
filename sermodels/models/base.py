"""The contract every sermodels architecture follows.

A model is a plain ``nn.Module`` that takes raw mono waveforms at ``sample_rate`` and returns the output of one of its
heads. The front-end lives inside the model, so a checkpoint carries its own feature configuration. What is needed to
rebuild it is ``config()``: the JSON-able keyword arguments of its constructor, stored in ``config.json`` next to the
weights, with the output spec of every head (:mod:`sermodels.outputs`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sermodels.outputs import OutputSpec, categories


class SERModel(nn.Module):
    """Base class: waveforms ``(batch, samples)`` + lengths ``(batch,)`` -> one head's output.

    A head's output is ``(batch, size)`` at utterance level or ``(batch, frames, size)`` at frame level, as its
    :class:`~sermodels.outputs.OutputSpec` says. Subclasses set ``self.sample_rate``, ``self.heads`` (head name ->
    class or dimension names, in output order) and ``self.default_head`` in ``__init__``, and implement
    :meth:`config`, :meth:`forward` and :meth:`embed`. Heads are categories heads unless ``self.head_specs`` gives a
    head another spec. ``arch`` is filled in by :func:`sermodels.register_model`.

    Multi-domain models (one set of domain-specific parameters per corpus or label space, trained round-robin) also
    implement ``add_domain(name, names, ...)``, ``domain_parameters(name)`` and ``shared_parameters()``; tasks talk
    to them through those methods only. Transfer regimes freeze and re-initialise the groups of
    :meth:`layer_groups`.
    """

    arch: ClassVar[str] = ""
    # What a categories head's score column means: "probability" (softmax of logits) or "decision" (an SVM's margin).
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

    @classmethod
    def from_specs(cls, heads: dict[str, OutputSpec], sample_rate: int = 16000, **kwargs: Any) -> SERModel:
        """A fresh model with these heads (head name -> output spec), built by a training task from the heads its
        data needs; ``kwargs`` are the other constructor arguments of the recipe."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from output specs (it is not trained by a task)")

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        raise NotImplementedError

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The shared utterance representation ``(batch, dim)`` that the heads read."""
        raise NotImplementedError

    # ---- heads and their outputs -----------------------------------------------------------------------------------
    def label_names(self, head: str | None = None) -> list[str]:
        """Class names (categories) or dimension names of a head, in output order."""
        return list(self.heads[self.resolve_head(head)])

    def resolve_head(self, head: str | None) -> str:
        name = self.default_head if head is None else head
        if name not in self.heads:
            raise KeyError(f"{type(self).__name__} has no head {name!r}; its heads are {sorted(self.heads)}")
        return name

    def output_spec(self, head: str | None = None) -> OutputSpec:
        """What ``head`` outputs (a categories head over its label names unless ``head_specs`` says otherwise)."""
        name = self.resolve_head(head)
        spec = getattr(self, "head_specs", {}).get(name)
        return spec if spec is not None else categories(self.heads[name], score=self.score_kind)

    def output_specs(self) -> dict[str, OutputSpec]:
        return {head: self.output_spec(head) for head in self.heads}

    def output_lengths(self, lengths: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """Valid output frames per clip of a frame-level head, for clips of ``lengths`` samples."""
        return self.output_spec(head).frames_for(lengths, self.sample_rate)

    def scores(self, logits: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """What ``predict`` writes: probabilities (or raw decision values) for categories, values otherwise."""
        spec = self.output_spec(head)
        if spec.kind == "categories" and spec.score == "probability":
            return logits.softmax(dim=-1)
        return logits

    # ---- parameter groups (transfer regimes) -----------------------------------------------------------------------
    def layer_groups(self) -> dict[str, list[str]]:
        """Named groups of parameter-name prefixes, from input to output, that transfer regimes freeze or
        re-initialise (default: one group per top-level child module)."""
        return {name: [name] for name, module in self.named_children() if any(True for _ in module.parameters())}


def valid_lengths(waveforms: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``lengths`` as a long tensor on the waveforms' device; the full width when not given."""
    if lengths is None:
        return torch.full((waveforms.shape[0],), waveforms.shape[-1], dtype=torch.long, device=waveforms.device)
    return lengths.to(device=waveforms.device, dtype=torch.long)
