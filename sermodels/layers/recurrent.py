"""A (bidirectional) LSTM over zero-padded batches that gives each sequence the output it gets alone.

Provenance: the recurrent parts of the MixedEmotions deliverable D4.2 — §3.4.2, the BLSTM denoising autoencoder
that enhances features (two bidirectional LSTM layers of 30 memory blocks, input and output the size of the feature
vector), and §5.2.1, the end-to-end conv + BLSTM model (two bidirectional LSTM layers of 128 cells on the
convolutional features) — and the LSTM layer of the CNN+LSTM transfer study (Marczewski et al., ACM MM Thematic
Workshops 2017). Their sizes are the models' constants; this block is what they share.

Padding: a bidirectional LSTM run over a zero-padded batch would read the padding (the backward direction starts in
it), so a sequence's output would depend on the longest sequence of its batch. The block packs the batch by its
lengths (``pack_padded_sequence``) so each direction runs over exactly the valid steps, and zeroes the output beyond
each length. The papers train on fixed-length segments and need no masking; it matters for variable-length clips.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sermodels._tracing import tracing
from sermodels.layers.masks import sequence_mask


class MaskedLSTM(nn.Module):
    """``x (B, T, input_size)`` + ``lengths (B,)`` -> ``(B, T, output_size)``, zero beyond each sequence's length.

    Args:
        input_size / hidden_size / num_layers: as :class:`torch.nn.LSTM` (``hidden_size`` per direction).
        bidirectional: both directions, concatenated (``2 * hidden_size`` features per step), as in D4.2.
        dropout: between stacked LSTM layers (as :class:`torch.nn.LSTM`; ignored for one layer).
        projection: a linear layer from the LSTM outputs to this many features per step (e.g. an enhancer's output
            layer, back to the feature size); None keeps the LSTM outputs.
        residual: add the input to the output (``output_size`` must equal ``input_size``).

    ``output_size`` is ``projection`` or ``hidden_size * directions``. Every length must be in 1 .. T.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        projection: int | None = None,
        residual: bool = False,
    ):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.projection = nn.Linear(hidden_size * directions, projection) if projection else None
        self.output_size = projection or hidden_size * directions
        self.residual = residual
        if residual and self.output_size != input_size:
            raise ValueError(
                f"a residual LSTM block needs output_size == input_size, got {self.output_size} and {input_size} "
                "(set projection to the input size)"
            )

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"x must be (batch, steps, features), got shape {tuple(x.shape)}")
        steps = x.shape[1]
        if tracing() and not self.training:
            out = self.unpacked(x, lengths)
        else:
            host_lengths = lengths.detach().to("cpu", torch.long)
            if host_lengths.shape != x.shape[:1] or (host_lengths < 1).any() or (host_lengths > steps).any():
                raise ValueError(
                    f"lengths must give one length per row, each in 1 .. {steps}, got {host_lengths.tolist()}"
                )
            packed = pack_padded_sequence(x, host_lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        if self.projection is not None:
            out = self.projection(out)
        if self.residual:
            out = out + x
        mask = sequence_mask(lengths.to(out.device), steps).unsqueeze(-1)
        return out * mask.to(out.dtype)

    def unpacked(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The packed forward's output (up to each length) without packing, in eval mode: what a traced graph
        (ONNX export, ``torch.compile``) can hold, since packing sorts and splits the batch by its lengths.

        Layer by layer, the forward direction runs over the padded rows (it is causal: the padding after a
        sequence's end cannot reach its valid steps) and the backward direction runs forwards over each row
        reversed within its own length (``t -> length - 1 - t``; the padding stays at the end), then is reversed
        back. Values beyond a length are garbage here and are zeroed by the caller, as after packing.
        """
        lstm = self.lstm
        order = torch.arange(x.shape[1], device=x.device)[None, :]
        valid = lengths.to(x.device, torch.long)[:, None]
        flip = torch.where(order < valid, valid - 1 - order, order)  # (B, T): an involution
        out = x
        for layer in range(lstm.num_layers):
            directions = [self._direction(out, layer, "")]
            if lstm.bidirectional:
                index = flip[..., None].expand(-1, -1, out.shape[-1])
                backward = self._direction(out.gather(1, index), layer, "_reverse")
                directions.append(backward.gather(1, flip[..., None].expand(-1, -1, backward.shape[-1])))
            out = torch.cat(directions, dim=-1)
        return out

    def _direction(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        """One direction of one layer of ``self.lstm``, run forwards over ``x (B, T, features)``."""
        lstm = self.lstm
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if lstm.bias else [])
        weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in names]
        zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
        out, _, _ = torch.lstm(x, (zeros, zeros), weights, lstm.bias, 1, 0.0, False, False, True)
        return out
