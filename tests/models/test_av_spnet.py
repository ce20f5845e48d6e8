"""AV-SpNET (Lu, Li, Lee, AVEC 2018): the paper's sizes, segmenting, the vote, reconstruction, heads and round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import corpus_root

from sermodels import create_model, load
from sermodels.audio import load_audio
from sermodels.checkpoint import save_pretrained
from sermodels.models.av_spnet import (
    FRONTEND,
    AVSpNet,
    encoder_shapes,
    per_clip_mean,
    segment_count,
    vote_shares,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def model(**kwargs) -> AVSpNet:
    torch.manual_seed(0)
    args = {"domains": {"proxy": ["high", "low"], "emo": ["a", "b", "c"]}, "proxy_heads": ["proxy"]} | kwargs
    return create_model("av_spnet", **args)


def test_literal_sizes():
    net = model()
    assert net.shapes == [(200, 80), (198, 78), (66, 26), (64, 24), (21, 8)]  # §3.1.1, 3×3 pooling
    assert net.flat_dim == 32 * 21 * 8
    assert net.shared_fc[0].out_features == 1024 and net.decoder_fc[0].out_features == 256
    proxy = [m.out_features for m in net.classifiers["proxy"] if isinstance(m, torch.nn.Linear)]
    emo = [m.out_features for m in net.classifiers["emo"] if isinstance(m, torch.nn.Linear)]
    assert proxy == [512, 128, 2] and emo == [1024, 512, 128, 3]  # §3.1.1 and §2.3
    assert encoder_shapes(200, 80, 2)[-1] == (48, 18)
    with pytest.raises(ValueError, match="pool"):
        model(pool=4)


def test_frontend_is_the_reference_config(reference_dir):
    meta = json.loads((reference_dir / "torchaudio_frontend.json").read_text())["configs"]["avspnet_spec"]
    spec = model().spectrogram.config()
    for key in ("n_fft", "win_length", "hop_length", "power", "center", "pad_mode", "window"):
        assert spec[key] == meta[key] == FRONTEND[key], key


def test_segments_are_non_overlapping_80_frame_pieces():
    net = model().eval()
    samples = [12960, 16000 * 2, 16000 * 3 + 5]
    wave = torch.randn(3, max(samples))
    lengths = torch.tensor(samples)
    segments, owner = net.segments(wave, lengths)
    counts = [segment_count(n) for n in samples]
    assert counts == [1, 2, 3]  # 1 + n // 160 frames, 80 each
    assert owner.tolist() == [0, 1, 1, 2, 2, 2]
    assert segments.shape == (6, 1, 200, 80)
    spec, _ = net.log_spectrogram(wave[2:3, : samples[2]])
    expected = (spec[0, :, 80:160] - net.input_mean[:, None]) / net.input_std[:, None]
    torch.testing.assert_close(segments[4, 0], expected)


def test_short_clip_is_one_segment_padded_with_the_mean():
    net = model().eval()
    segments, owner = net.segments(torch.randn(1, 8000))
    assert segments.shape == (1, 1, 200, 80) and owner.tolist() == [0]
    assert torch.all(segments[0, 0, :, 51:] == 0)  # 1 + 8000 // 160 = 51 valid frames


def test_padded_batch_equals_each_clip_alone():
    net = model().eval()
    files = sorted(corpus_root("emodb").rglob("*.flac"))[:3]
    waves = [load_audio(path) for path in files]
    lengths = torch.tensor([w.shape[0] for w in waves])
    batch = torch.zeros(3, int(lengths.max()))
    for row, wave in enumerate(waves):
        batch[row, : wave.shape[0]] = wave
    with torch.no_grad():
        together = net(batch, lengths, head="emo")
        alone = torch.cat([net(w[None], head="emo") for w in waves])
        embedded = net.embed(batch, lengths)
        embedded_alone = torch.cat([net.embed(w[None]) for w in waves])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert embedded.shape == (3, net.flat_dim)
    # the conv maps too: the last frames of a shorter clip see its reflection, not the batch's zero padding
    torch.testing.assert_close(embedded, embedded_alone, atol=1e-5, rtol=1e-5)


def test_a_clip_scores_the_same_alone_padded_and_beside_short_clips():
    net = model().eval()
    files = sorted(corpus_root("emodb").rglob("*.flac"))[:3]
    # 25 440 samples: 160 frames, two whole segments, the last frame's window reaching 160 samples past the end
    wave = load_audio(files[0])[: 160 * 159]
    short = load_audio(files[1])[:6000]  # one segment of 38 frames and padding
    longer = torch.cat([load_audio(path) for path in files])[:40000]
    with torch.no_grad():
        alone = net.embed(wave[None])
        padded = net.embed(torch.nn.functional.pad(wave, (0, 3000))[None], torch.tensor([wave.shape[0]]))
        batch = torch.zeros(3, 40000)
        batch[0, : wave.shape[0]], batch[1, :6000], batch[2] = wave, short, longer
        together = net.embed(batch, torch.tensor([wave.shape[0], 6000, 40000]))
        short_alone = net.embed(short[None])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[1:2], short_alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="longer than 400 samples"):
        net(torch.zeros(2, 16000), torch.tensor([16000, 0]))


def test_vote_tie_break_is_the_arithmetic_mean_probability():
    net = model().eval()
    probs = torch.tensor([[0.98, 0.01, 0.01], [0.001, 0.5, 0.499]])  # one vote each: a tie
    pooled = net.pool_segments(probs.log(), torch.tensor([0, 0]), 1, "emo")
    assert pooled.argmax(-1).item() == 0  # arithmetic mean: 0.49 vs 0.26 (the geometric mean would pick class 1)
    assert vote_shares(probs, torch.tensor([0, 0]), 1).argmax(-1).item() == 0


def test_vote_is_the_majority_of_segments():
    net = model().eval()
    logits = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.2, 0.0]])
    owner = torch.tensor([0, 0, 0, 1, 1])
    pooled = net.pool_segments(logits, owner, 2, "emo")
    # clip 0: two votes for class 0 beat one confident vote for class 1 (the mean probability favours class 1)
    assert pooled.argmax(-1).tolist()[0] == 0
    assert per_clip_mean(logits.softmax(-1), owner, 2)[0].argmax() == 1
    # clip 1: a tie (one vote each) goes to the higher mean probability
    assert pooled.argmax(-1).tolist()[1] == 1
    torch.testing.assert_close(pooled.exp().sum(-1), torch.ones(2))
    mean = model(pooling="mean").eval().pool_segments(logits, owner, 2, "emo")
    assert mean.argmax(-1).tolist()[0] == 1
    net.train()
    torch.testing.assert_close(
        net.pool_segments(logits, owner, 2, "emo"), per_clip_mean(logits.log_softmax(-1), owner, 2)
    )


def test_reconstruction_and_backward():
    net = model().train()
    wave = torch.randn(4, 12960)
    recon, target, mask = net.reconstruct(wave)
    assert recon.shape == target.shape == (4, 1, 200, 80) and mask is None
    loss = ((recon - target) ** 2).mean() + net(wave, head="proxy").logsumexp(-1).mean() + net(wave, head="emo").sum()
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_fit_input_statistics_standardises_the_bins():
    net = model()
    files = sorted(corpus_root("emodb").rglob("*.flac"))[:4]
    waves = [load_audio(path) for path in files]
    net.fit_input_statistics((w[None], torch.tensor([w.shape[0]])) for w in waves)
    assert bool(net.statistics_fitted)
    frames = torch.cat([net.log_spectrogram(w[None])[0][0].T for w in waves])
    z = (frames - net.input_mean) / net.input_std
    torch.testing.assert_close(z.mean(0), torch.zeros(200), atol=1e-3, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(200), atol=1e-3, rtol=0)


def test_new_head_on_the_frozen_encoder_and_removal():
    net = model()
    net.add_domain("mine", ["x", "y"])
    assert net.heads["mine"] == ["x", "y"] and "mine" not in net.proxy_heads
    own = {id(p) for p in net.domain_parameters("mine")}
    assert own == {id(p) for p in net.classifiers["mine"].parameters()}
    assert not own & {id(p) for p in net.shared_parameters()}
    assert net.classifiers["mine"][0].in_features == net.flat_dim  # reads the conv encoder (§2.3)
    with pytest.raises(ValueError, match="exists"):
        net.add_domain("mine", ["x", "y"])
    net.add_domain("proxy", ["p", "q", "r"], replace=True)  # a replaced proxy head becomes a recognition head
    assert "proxy" not in net.proxy_heads and net.classifiers["proxy"][0].in_features == net.flat_dim
    net.remove_domain("emo")
    assert sorted(net.heads) == ["mine", "proxy"]
    assert list(net.layer_groups()) == ["stage1", "stage2", "shared_fc", "decoder", "heads"]


def test_round_trip_gives_equal_outputs(tmp_path):
    net = model()
    net.fit_input_statistics([(torch.randn(2, 16000), torch.tensor([16000, 12000]))])
    net.eval()
    save_pretrained(net, tmp_path / "m")
    loaded = load(tmp_path / "m")
    wave = torch.randn(2, 20000)
    with torch.no_grad():
        for head in ("proxy", "emo"):
            torch.testing.assert_close(loaded(wave, head=head), net(wave, head=head))
    assert loaded.proxy_heads == ["proxy"] and bool(loaded.statistics_fitted)
    np.testing.assert_array_equal(loaded.input_mean.numpy(), net.input_mean.numpy())
