"""Conv4 shapes, initialisation statistics, TF SAME padding and batch norm formula."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from repscope.training.config import get_preset
from repscope.training.model import ConvBlock, build_model
from repscope.training.norm import BatchNormNoScale



def _block_shapes(model, x):
    shapes = []
    for name in ("conv1", "conv2", "conv3", "conv4"):
        x = getattr(model, name)(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def test_omniglot_shapes():
    model = build_model(get_preset("omniglot-20way-1shot"))
    assert _block_shapes(model, torch.zeros(2, 1, 28, 28)) == [
        (64, 14, 14), (64, 7, 7), (64, 4, 4), (64, 2, 2)]
    assert model.head.in_features == 64
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 20)
    assert [n for n, _ in model.named_children()] == ["conv1", "conv2", "conv3", "conv4", "head"]


def test_miniimagenet_shapes():
    model = build_model(get_preset("miniimagenet-5way-1shot"))
    assert _block_shapes(model, torch.zeros(2, 3, 84, 84)) == [
        (32, 42, 42), (32, 21, 21), (32, 10, 10), (32, 5, 5)]
    assert model.head.in_features == 800
    assert model(torch.zeros(2, 3, 84, 84)).shape == (2, 5)


def test_build_model_accepts_config_json_dict():
    cfg = get_preset("quick")
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(0)
    b = build_model(cfg.to_dict())
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_init_statistics():
    torch.manual_seed(0)
    om = build_model(get_preset("omniglot-20way-1shot"))
    w = om.head.weight.detach()
    assert abs(w.mean().item()) < 0.1 and abs(w.std().item() - 1.0) < 0.06  # N(0, 1)
    for i in range(1, 5):
        conv = getattr(om, f"conv{i}").conv
        fan_in = conv.in_channels * 9
        fan_out = conv.out_channels * 9
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform
        cw = conv.weight.detach()
        assert cw.abs().max() <= bound
        assert abs(cw.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        assert torch.count_nonzero(conv.bias) == 0
        assert torch.count_nonzero(getattr(om, f"conv{i}").norm.beta) == 0
    assert torch.count_nonzero(om.head.bias) == 0
    mi = build_model(get_preset("miniimagenet-5way-1shot"))
    bound = math.sqrt(6.0 / (800 + 5))
    assert mi.head.weight.abs().max() <= bound
    assert mi.head.weight.std().item() > 0.8 * bound / math.sqrt(3)


def test_tf_same_padding_pads_bottom_right():
    # TF SAME with stride 2 on an even size pads only after: output (i, j) sees
    # input rows 2i..2i+2 and columns 2j..2j+2, as a padding-free conv does.
    torch.manual_seed(0)
    block = ConvBlock(1, 4, stride=2, pool=False)
    x = torch.randn(2, 1, 28, 28)
    padded = F.pad(x, (0, 1, 0, 1))
    ref = F.conv2d(padded, block.conv.weight, block.conv.bias, stride=2)
    valid = F.conv2d(x, block.conv.weight, block.conv.bias, stride=2)  # 13x13
    torch.testing.assert_close(ref[..., :13, :13], valid)
    out = block(x)
    expected = F.relu(block.norm(ref))
    torch.testing.assert_close(out, expected)
    # size 7 -> 4 pads one on each side
    y = torch.randn(2, 4, 7, 7)
    b2 = ConvBlock(4, 4, stride=2, pool=False)
    ref2 = F.conv2d(F.pad(y, (1, 1, 1, 1)), b2.conv.weight, b2.conv.bias, stride=2)
    torch.testing.assert_close(b2.relu(b2.norm(ref2)), b2(y))


def test_batch_norm_matches_formula():
    torch.manual_seed(0)
    bn = BatchNormNoScale(5)
    with torch.no_grad():
        bn.beta.copy_(torch.randn(5))
    x = torch.randn(6, 5, 4, 3) * 3 + 1
    xn = x.numpy().astype(np.float64)
    mean = xn.mean(axis=(0, 2, 3), keepdims=True)
    var = xn.var(axis=(0, 2, 3), keepdims=True)  # biased, as tf.nn.moments
    ref = (xn - mean) / np.sqrt(var + 1e-3) + bn.beta.detach().numpy()[None, :, None, None]
    np.testing.assert_allclose(bn(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        bn(x), F.batch_norm(x, None, None, None, bn.beta, training=True, eps=1e-3))
    # batch statistics in eval mode too
    bn.eval()
    np.testing.assert_allclose(bn(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert list(dict(bn.named_buffers())) == []


def test_batch_norm_second_order_gradients_are_exact():
    torch.manual_seed(0)
    bn = BatchNormNoScale(2).double()
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def f(x, beta):
        return torch.func.functional_call(bn, {"beta": beta}, (x,)).pow(3).sum()

    assert torch.autograd.gradgradcheck(f, (x, beta))
