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

from sermodels.layers.domains import check_domain_name, domain_key
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
    # The optimiser that transfer (sermodels finetune, TransferTask) uses by default for this family; None: the
    # transfer regime's own (EmoNet §6.1: SGD at 0.1 for adapters, 0.01 otherwise).
    transfer_optimizer: ClassVar[dict[str, Any] | None] = None
    # The length (seconds) of the example that ONNX export traces (sermodels.deploy.onnx; None: its default). The
    # graph's time axis is dynamic whatever it is; a model whose time axis runs through an LSTM sets it short, as
    # the exporter's shape analysis steps through the LSTM once per time step of the example.
    onnx_trace_seconds: ClassVar[float | None] = None

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

    def finish_frames(self, frames: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """A whole file's frame-level output ``(frames, size)`` once its chunks are joined, as ``predict`` and
        ``evaluate`` report it: a model that stores a post-processing chain fitted on dev traces applies it here
        (conv_blstm, D4.2 §5.3). Default: the frames as they are."""
        return frames

    def scores(self, logits: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """What ``predict`` writes: probabilities (or raw decision values) for categories, values otherwise."""
        spec = self.output_spec(head)
        if spec.kind == "categories" and spec.score == "probability":
            return logits.softmax(dim=-1)
        return logits

    # ---- training-time spectrogram augmentation ------------------------------------------------------------------
    #: Models that compute a spectrogram inside and apply :meth:`augment_spectrogram` to it set this to True.
    supports_spectrogram_augment: ClassVar[bool] = False
    _spectrogram_augment = None

    def set_spectrogram_augment(self, augment) -> None:
        """A callable ``(spec (B, C, F, T), valid frames (B,)) -> spec`` (SpecAugment), set by a training task and
        applied in training mode only; not part of the model's configuration or weights."""
        if not self.supports_spectrogram_augment:
            raise TypeError(f"{type(self).__name__} applies no spectrogram augmentation")
        # Kept outside the module tree: an nn.Module value would become a submodule of the model.
        object.__setattr__(self, "_spectrogram_augment", augment)

    def augment_spectrogram(self, spec: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.training and self._spectrogram_augment is not None:
            return self._spectrogram_augment(spec, valid)
        return spec

    # ---- parameter groups (transfer regimes) -----------------------------------------------------------------------
    def layer_groups(self) -> dict[str, list[str]]:
        """Named groups of parameter-name prefixes, from input to output, that transfer regimes freeze or
        re-initialise (default: one group per top-level child module)."""
        return {name: [name] for name, module in self.named_children() if any(True for _ in module.parameters())}


class MultiDomainModel(SERModel):
    """What the multi-domain families (EmoNet, the adapted ImageNet CNNs) share: one utterance-level head per domain,
    a categories head or a dimensions head (its values squashed into a declared range by tanh), the checks of a new
    domain, and :meth:`from_specs`. Subclasses keep ``self.heads``/``self.head_specs`` through :meth:`init_heads`
    and :meth:`register_head`, and implement ``add_domain``/``remove_domain``/``domain_parameters``/
    ``shared_parameters``/``head_parameters``."""

    family: ClassVar[str] = "multi-domain model"

    @classmethod
    def from_specs(cls, heads: dict[str, OutputSpec], sample_rate: int = 16000, **kwargs: Any) -> MultiDomainModel:
        """One domain per head: categories heads classify, dimensions heads regress."""
        for spec in heads.values():
            cls.check_head_spec(spec)
        others = {name: spec.to_json() for name, spec in heads.items() if spec.kind != "categories"}
        domains = {name: list(spec.names) for name, spec in heads.items()}
        return cls(domains, sample_rate=sample_rate, head_specs=others or None, **kwargs)

    @classmethod
    def check_head_spec(cls, spec: OutputSpec) -> None:
        if spec.level != "utterance" or spec.kind == "embedding":
            raise ValueError(f"{cls.family} heads are utterance-level categories or dimensions, not {spec.to_json()}")

    def init_heads(
        self, domains: dict[str, list[str]], default_head: str | None, head_specs: dict[str, dict] | None
    ) -> list[str]:
        """Heads and specs from the constructor's arguments; returns the domain names in order."""
        if not domains:
            raise ValueError(f"{self.family} needs at least one domain (head name -> class names)")
        names = [check_domain_name(name) for name in domains]
        unknown = sorted(set(head_specs or {}) - set(domains))
        if unknown:
            raise ValueError(f"head_specs names heads that are not domains: {unknown}")
        self.heads: dict[str, list[str]] = {}
        self.head_specs: dict[str, OutputSpec] = {}
        for name, labels in domains.items():
            given = (head_specs or {}).get(name)
            self.register_head(
                name, list(labels), None if given is None else OutputSpec.from_json(given, f"head {name!r}")
            )
        self.default_head = names[0] if default_head is None else default_head
        self.resolve_head(self.default_head)
        return names

    def new_domain(
        self, name: str, labels: list[str] | OutputSpec, like: str | None, copy_adapters: bool, replace: bool
    ) -> tuple[list[str], OutputSpec | None]:
        """The checks of ``add_domain`` before anything changes; returns the head's names and its spec."""
        check_domain_name(name)
        if name in self.heads and not replace:
            raise ValueError(f"domain {name!r} exists already (pass replace=True to re-initialise it)")
        spec = labels if isinstance(labels, OutputSpec) else None
        names = list(spec.names) if spec is not None else list(labels)
        if (spec is None or spec.kind == "categories") and len(names) < 2:
            raise ValueError(f"head {name!r} needs at least two classes, got {names}")
        if spec is not None:
            self.check_head_spec(spec)
        if like is not None:
            self.resolve_head(like)
        if copy_adapters and like is None:
            raise ValueError("copy_adapters needs a domain to copy from (like=...)")
        return names, spec

    def register_head(self, name: str, labels: list[str], spec: OutputSpec | None) -> None:
        """Record a head: ``None`` (or a categories spec) for a categories head over ``labels``."""
        if spec is None or spec.kind == "categories":
            if len(labels) < 2:
                raise ValueError(f"head {name!r} needs at least two classes, got {labels}")
            self.head_specs.pop(name, None)
        else:
            self.check_head_spec(spec)
            if list(spec.names) != list(labels):
                raise ValueError(f"head {name!r}: spec names {list(spec.names)} differ from the head's {list(labels)}")
            self.head_specs[name] = spec
        self.heads[name] = list(labels)

    def forget_head(self, name: str) -> None:
        del self.heads[name]
        self.head_specs.pop(name, None)
        if self.default_head == name:
            self.default_head = next(iter(self.heads))

    def bounded(self, output: torch.Tensor, head: str) -> torch.Tensor:
        """A bounded dimension (arousal/valence in [-1, 1]) squashed into its range by tanh, so that predictions honour
        the declared output spec; other outputs as they are."""
        spec = self.head_specs.get(head)
        if spec is None or spec.range is None:
            return output
        low, high = spec.range
        return (low + high) / 2 + (high - low) / 2 * torch.tanh(output)

    @property
    def domains(self) -> list[str]:
        return list(self.heads)

    def parameter_counts(self) -> dict[str, Any]:
        """Exact counts: total, shared, and per domain (adapters + BN + head)."""
        per_domain = {name: sum(p.numel() for p in self.domain_parameters(name)) for name in self.heads}
        shared = sum(p.numel() for p in self.shared_parameters())
        return {"total": sum(p.numel() for p in self.parameters()), "shared": shared, "per_domain": per_domain}


class HeadDomainModel(MultiDomainModel):
    """A multi-domain family whose only per-domain part is its head (AV-SpNET, CNN+LSTM): heads live in
    ``self.classifiers`` (an ``nn.ModuleDict`` by :func:`~sermodels.layers.domains.domain_key`), a new domain is a new
    head from :meth:`_new_head` on the shared network, and everything else is shared. ``like`` / ``copy_adapters``
    have nothing to copy and are accepted for the multi-domain contract."""

    classifiers: nn.ModuleDict

    def _new_head(self, name: str) -> nn.Module:
        """A freshly initialised head for ``name`` (registered in ``self.heads`` already)."""
        raise NotImplementedError

    def _drop_domain(self, name: str) -> None:
        """Family bookkeeping when a head is replaced or removed (default: none)."""

    def add_domain(
        self,
        name: str,
        labels: list[str] | OutputSpec,
        like: str | None = None,
        copy_adapters: bool = False,
        replace: bool = False,
    ) -> None:
        names, spec = self.new_domain(name, labels, like, False, replace)
        self._drop_domain(name)
        self.register_head(name, names, spec)
        reference = next(self.parameters())
        head = self._new_head(name).to(device=reference.device, dtype=reference.dtype).train(self.training)
        self.classifiers[domain_key(name)] = head

    def remove_domain(self, name: str) -> None:
        self.resolve_head(name)
        if len(self.heads) == 1:
            raise ValueError("cannot remove the only head")
        del self.classifiers[domain_key(name)]
        self._drop_domain(name)
        self.forget_head(name)

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        return list(self.classifiers[domain_key(self.resolve_head(name))].parameters())

    def domain_parameters(self, name: str) -> list[nn.Parameter]:
        """A head's own layers (the family has no per-domain adapters or BN)."""
        return self.head_parameters(name)

    def shared_parameters(self) -> list[nn.Parameter]:
        own = {id(p) for name in self.heads for p in self.head_parameters(name)}
        return [p for p in self.parameters() if id(p) not in own]


def valid_lengths(waveforms: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``lengths`` as a long tensor on the waveforms' device; the full width when not given."""
    if lengths is None:
        return torch.full((waveforms.shape[0],), waveforms.shape[-1], dtype=torch.long, device=waveforms.device)
    return lengths.to(device=waveforms.device, dtype=torch.long)
