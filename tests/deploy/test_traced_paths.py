"""The paths a traced graph takes (sermodels/_tracing.py) compute what eager mode computes.

ONNX export traces each model on whole rows (``lengths=None``) with its value checks off; the BLSTMs run without
packing and the long FFT convolution in real arithmetic. Each of those is compared here with the eager path it
replaces, on real speech where a model is involved.
"""

from __future__ import annotations

import pytest
import torch
from conftest import spread_files

import sermodels
from sermodels._tracing import checking, tracing
from sermodels.audio import load_audio
from sermodels.layers.fftconv import FFTConv1d, traced_correlate
from sermodels.layers.recurrent import MaskedLSTM

pytestmark = pytest.mark.usefixtures("one_thread")


def test_eager_mode_is_not_tracing():
    assert not tracing() and checking()


@pytest.mark.parametrize("bidirectional", [True, False])
def test_unpacked_lstm_equals_packed(bidirectional):
    torch.manual_seed(0)
    block = MaskedLSTM(12, 16, num_layers=2, bidirectional=bidirectional).eval()
    x, lengths = torch.randn(4, 9, 12), torch.tensor([9, 3, 7, 1])
    with torch.no_grad():
        packed = block(x, lengths)
        unpacked = block.unpacked(x, lengths) * (torch.arange(9)[None] < lengths[:, None])[..., None]
    assert torch.allclose(packed, unpacked, atol=1e-6)


def test_traced_fft_correlation_equals_eager():
    torch.manual_seed(0)
    conv = FFTConv1d(6, 8, 401)
    x = torch.randn(2, 6, 1000)
    with torch.no_grad():
        assert torch.allclose(traced_correlate(x, conv.weight) + conv.bias[:, None], conv(x), atol=1e-5)


@pytest.mark.parametrize("model_id", ["mobilenetv2_adapters.multi4", "av_spnet.proxy4", "conv_blstm.sessions"])
def test_whole_rows_equal_full_lengths(model_id):
    """``lengths=None`` (the traced path: shapes from the input's shape) gives what explicit full lengths give."""
    model = sermodels.load(model_id).eval()
    files = spread_files("emodb", 2)
    samples = min(len(load_audio(f)) for f in files)
    clips = torch.stack([load_audio(f)[:samples] for f in files])
    with torch.no_grad():
        whole = model(clips, None)
        explicit = model(clips, torch.tensor([samples, samples]))
    assert whole.shape == explicit.shape and torch.allclose(whole, explicit, atol=1e-5)
