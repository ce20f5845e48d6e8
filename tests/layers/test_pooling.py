"""Pooling of frame sequences over their valid steps: masked mean, last step, statistics pooling."""

from __future__ import annotations

import pytest
import torch

from sermodels.layers.pooling import StatisticsPooling, last_valid, masked_mean

LENGTHS = (6, 2, 4)


def _batch(channels: int = 3, padding: float = float("nan")) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randn(n, channels, generator=gen) for n in LENGTHS]
    batch = torch.full((len(seqs), max(LENGTHS), channels), padding)
    for row, seq in enumerate(seqs):
        batch[row, : len(seq)] = seq
    return seqs, batch, torch.tensor(LENGTHS)


def test_masked_mean_and_last_valid():
    seqs, batch, lengths = _batch(padding=0.0)
    means, lasts = masked_mean(batch, lengths), last_valid(batch, lengths)
    for row, seq in enumerate(seqs):
        torch.testing.assert_close(means[row], seq.mean(0))
        assert torch.equal(lasts[row], seq[-1])
    assert masked_mean(torch.ones(1, 3, 2), torch.tensor([0])).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize(("units", "std"), [(None, False), (None, True), (5, False), (5, True)])
def test_padded_batch_pools_each_sequence_as_alone(units, std):
    """NaN in the padding: a pooled value that read it would be NaN."""
    torch.manual_seed(0)
    pool = StatisticsPooling(3, attention_units=units, std=std)
    seqs, batch, lengths = _batch()
    out = pool(batch, lengths)
    assert out.shape == (len(LENGTHS), pool.output_size) and torch.isfinite(out).all()
    for row, seq in enumerate(seqs):
        torch.testing.assert_close(out[row], pool(seq[None], torch.tensor([len(seq)]))[0])


def test_uniform_statistics_are_the_mean_and_population_std():
    pool = StatisticsPooling(3, std=True)
    seqs, batch, lengths = _batch()
    out = pool(batch, lengths)
    for row, seq in enumerate(seqs):
        want = torch.cat([seq.mean(0), seq.std(0, unbiased=False)])
        torch.testing.assert_close(out[row], want, rtol=1e-5, atol=1e-5)


def test_attention_weights_follow_the_scores_and_gradients_flow():
    torch.manual_seed(0)
    pool = StatisticsPooling(3, attention_units=4, std=True, smoothing=0.5)
    _, batch, lengths = _batch(padding=0.0)
    weights = pool.weights(batch, lengths)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(LENGTHS)))
    energy = pool.context(torch.tanh(pool.project(batch[0]))).squeeze(-1) * 0.5
    torch.testing.assert_close(weights[0], energy.softmax(0))
    assert (weights[1, 2:] == 0).all()
    constant = torch.ones(1, 4, 3, requires_grad=True)  # zero variance: the floor keeps gradients finite
    (pool(batch, lengths).sum() + pool(constant, torch.tensor([4])).sum()).backward()
    for param in pool.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()
    assert torch.isfinite(constant.grad).all()
