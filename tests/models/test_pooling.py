"""MaxPool2x2 against PyTorch's max_pool2d: values, gradients and second derivatives bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from meta_learning.models import Conv4, MaxPool2x2, max_pool2x2, pooling
from meta_learning.models.pooling import _pool

F64 = torch.float64


@pytest.fixture(autouse=True)
def every_size_takes_the_strided_path(monkeypatch):
    # small maps go to max_pool2d itself (cheaper there); the tests exercise the strided computation at every size
    monkeypatch.setattr(pooling, "_MIN_ELEMENTS", 0)


def tied(shape, dtype=F64, seed=0):
    """Small integers: most windows hold ties, several of them on the maximum."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, shape, generator=g).to(dtype)


def same(a, b):
    """Bitwise equality, NaN in the same places and the same sign of every zero."""
    return (
        a.shape == b.shape
        and torch.equal(torch.isnan(a), torch.isnan(b))
        and torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))
        and torch.equal(torch.signbit(a), torch.signbit(b))
    )


def derivatives(pool, x, seed=1):
    """Forward value, input gradient and the gradient's derivative with respect to the output gradient."""
    x = x.clone().requires_grad_()
    y = pool(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).requires_grad_()
    (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
    v = torch.randn(dx.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=x.dtype)
    (dg,) = torch.autograd.grad((dx * v).sum(), g)
    return y.detach(), dx.detach(), dg


@pytest.mark.parametrize(
    "shape", [(2, 3, 8, 8), (2, 3, 9, 7), (3, 5, 6), (1, 1, 2, 2), (4, 2, 3, 3), (75, 4, 28, 28), (1, 1, 2, 40_001)]
)
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
def test_values_gradients_and_second_derivatives_are_max_pool2d_bit_for_bit(shape, dtype):
    x = tied(shape, dtype)
    for ours, ref in zip(derivatives(max_pool2x2, x), derivatives(lambda t: F.max_pool2d(t, 2), x), strict=True):
        assert same(ours, ref)


def test_first_of_tied_maxima_gets_the_gradient_in_row_major_order():
    # [[1, 2], [2, 0]]: the first 2 in row-major order is (0, 1); a rows-first reduction would pick (1, 0)
    x = torch.tensor([[[[1.0, 2.0], [2.0, 0.0]]]], dtype=F64, requires_grad=True)
    max_pool2x2(x).sum().backward()
    assert x.grad.tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]]
    assert torch.equal(_pool(x.detach())[1], F.max_pool2d_with_indices(x.detach(), 2)[1])


def test_signed_zeros_infinities_and_nans_follow_the_reference_kernel():
    x = tied((3, 4, 6, 6), seed=3)
    x[0, 0, :2, :2] = torch.tensor([[-0.0, 0.0], [0.0, -0.0]])  # the maximum is the first zero: -0.0
    x[0, 1, :2, :2] = torch.tensor([[0.0, -0.0], [-0.0, -0.0]])
    x[0, 2, :2, :2] = float("-inf")
    x[1, 0, 2:4, 2:4] = torch.tensor([[1.0, float("nan")], [5.0, float("nan")]])  # the last NaN wins there
    x[2, 3, 0, 1] = float("inf")
    for ours, ref in zip(derivatives(max_pool2x2, x), derivatives(lambda t: F.max_pool2d(t, 2), x), strict=True):
        assert same(ours, ref)
    assert torch.signbit(max_pool2x2(x)[0, 0, 0, 0])


def test_a_random_float64_map_passes_gradcheck_and_gradgradcheck():
    x = torch.randn(2, 2, 5, 6, dtype=F64, requires_grad=True)  # distinct values: no ties
    assert torch.autograd.gradcheck(max_pool2x2, (x,))
    assert torch.autograd.gradgradcheck(max_pool2x2, (x,))


def test_torch_func_grad_goes_through_it():
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    w = torch.randn(2, 3, 3, 3, dtype=F64)
    ours = torch.func.grad(lambda t: (max_pool2x2(t) * w).sum())(x)
    ref = torch.func.grad(lambda t: (F.max_pool2d(t, 2) * w).sum())(x)
    assert torch.equal(ours, ref)


def test_small_maps_channels_last_and_chunked_maps_give_the_same_result(monkeypatch):
    calls = []
    real = F.max_pool2d
    monkeypatch.setattr(pooling.F, "max_pool2d", lambda *a: calls.append(a[0].shape) or real(*a))
    monkeypatch.setattr(pooling, "_MIN_ELEMENTS", 100 // torch.get_num_threads() + 1)  # 72 below the bar, 240 above
    small = torch.randn(1, 2, 6, 6)  # 72 elements: PyTorch's kernel
    assert torch.equal(max_pool2x2(small), real(small, 2)) and calls == [small.shape]
    monkeypatch.setattr(pooling, "_CHUNK_ELEMENTS", 64)  # 4 planes of 4 x 4 per chunk, the last chunk partial
    x = tied((3, 5, 4, 4))
    for ours, ref in zip(derivatives(max_pool2x2, x), derivatives(lambda t: real(t, 2), x), strict=True):
        assert same(ours, ref)
    assert calls == [small.shape]


def test_channels_last_input_gives_the_same_result():
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert torch.equal(max_pool2x2(x), F.max_pool2d(x, 2))


def test_module_form_and_conv4_meta_gradient_equal_nn_maxpool2d():
    # a second-order MAML-style meta-gradient through Conv4 is the same with nn.MaxPool2d swapped back in
    from meta_learning import Episode
    from meta_learning.maml import MAML

    def build(swap):
        torch.manual_seed(0)
        model = Conv4(in_channels=1, hidden_channels=4, num_classes=3).to(F64)
        if swap:
            for block in model.features:
                for i, m in enumerate(block):
                    if isinstance(m, MaxPool2x2):
                        block[i] = torch.nn.MaxPool2d(2)
        return model

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 6, 1, 28, 28, generator=g, dtype=F64)
    x[:, :, :, :6] = 0.0  # blank rows, as on Omniglot's background: tied windows in the first block
    y = torch.arange(3).repeat(2)
    eps = [Episode(x[t, :3], y[:3], x[t, 3:], y[3:]) for t in range(2)]
    grads = []
    for swap in (False, True):
        model = build(swap)
        MAML(model, lr_inner=0.4, num_inner_steps=2).meta_backward(eps)
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert repr(MaxPool2x2()) == "MaxPool2x2()"


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        ([[1.0]], TypeError, "must be a torch.Tensor"),
        (torch.zeros(4, 4), ValueError, r"\[C, H, W\] or \[N, C, H, W\].*\(4, 4\)"),
        (torch.zeros(1, 2, 1, 4), ValueError, "H, W >= 2"),
        (torch.zeros(1, 2, 4, 4, dtype=torch.int64), TypeError, "floating point.*int64"),
    ],
)
def test_bad_input_is_refused_with_the_reason(x, error, match):
    with pytest.raises(error, match=match):
        max_pool2x2(x)
