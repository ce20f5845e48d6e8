"""The masked (B)LSTM: a sequence gives the same output in a padded batch as alone, zeros beyond its length,
projection and residual, gradients, and length errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sermodels.layers.recurrent import MaskedLSTM

LENGTHS = (7, 3, 1, 5)


def _batch(features: int, seed: int = 0, padding: float = 0.0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, features, generator=gen) for n in LENGTHS]
    batch = torch.full((len(seqs), max(LENGTHS), features), padding)
    for row, seq in enumerate(seqs):
        batch[row, : len(seq)] = seq
    return seqs, batch, torch.tensor(LENGTHS)


@pytest.mark.parametrize(
    "options",
    [
        {"bidirectional": True},
        {"bidirectional": False},
        {"bidirectional": True, "num_layers": 2, "projection": 6},
        {"bidirectional": True, "projection": 5, "residual": True},
    ],
)
def test_padded_batch_gives_each_sequence_its_output_alone(options):
    """The padding holds large values: a direction that read it would change the valid steps."""
    torch.manual_seed(0)
    block = MaskedLSTM(5, 4, **options).eval()
    seqs, batch, lengths = _batch(5, padding=50.0)
    out = block(batch, lengths)
    assert out.shape == (len(LENGTHS), max(LENGTHS), block.output_size)
    for row, seq in enumerate(seqs):
        alone = block(seq[None], torch.tensor([len(seq)]))[0]
        torch.testing.assert_close(out[row, : len(seq)], alone, rtol=1e-5, atol=1e-6)
        assert (out[row, len(seq) :] == 0).all()


def test_bidirectional_output_is_the_lstm_run_each_way():
    """Against ``nn.LSTM`` on the valid steps: the forward half is the LSTM's forward direction, the backward half
    its reverse direction started at the sequence's own last step (not in the padding)."""
    torch.manual_seed(0)
    block = MaskedLSTM(3, 4).eval()
    seqs, batch, lengths = _batch(3)
    out = block(batch, lengths)
    for row, seq in enumerate(seqs):
        want, _ = block.lstm(seq[None])
        torch.testing.assert_close(out[row, : len(seq)], want[0], rtol=1e-5, atol=1e-6)


def test_sizes_projection_and_residual():
    assert MaskedLSTM(8, 16).output_size == 32
    assert MaskedLSTM(8, 16, bidirectional=False).output_size == 16
    enhancer = MaskedLSTM(13, 30, num_layers=2, projection=13, residual=True)  # D4.2 §3.4.2 sizes
    assert enhancer.output_size == 13 and isinstance(enhancer.projection, nn.Linear)
    with pytest.raises(ValueError, match="output_size == input_size"):
        MaskedLSTM(8, 16, residual=True)
    torch.manual_seed(0)
    block = MaskedLSTM(4, 3, projection=4, residual=True).eval()
    plain = MaskedLSTM(4, 3, projection=4).eval()
    plain.load_state_dict(block.state_dict())
    x, lengths = torch.randn(2, 6, 4), torch.tensor([6, 4])
    mask = (torch.arange(6)[None] < lengths[:, None]).unsqueeze(-1)
    torch.testing.assert_close(block(x, lengths), (plain(x, lengths) + x) * mask)


def test_gradients_are_finite_and_skip_the_padding():
    torch.manual_seed(0)
    block = MaskedLSTM(5, 4, num_layers=2, projection=3)
    _, batch, lengths = _batch(5)
    batch.requires_grad_(True)
    block(batch, lengths).square().sum().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    for row, n in enumerate(LENGTHS):
        assert (batch.grad[row, n:] == 0).all() and batch.grad[row, :n].abs().sum() > 0


def test_lengths_are_checked():
    block = MaskedLSTM(2, 3)
    x = torch.zeros(2, 4, 2)
    for bad in ([4, 0], [5, 2], [4]):
        with pytest.raises(ValueError, match="each in 1 .. 4"):
            block(x, torch.tensor(bad))
    with pytest.raises(ValueError, match="batch, steps, features"):
        block(torch.zeros(4, 2), torch.tensor([4]))
