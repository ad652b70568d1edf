from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad

from meta_learning import MLP, Conv4, ResNet12
from meta_learning.models import MaxPool2x2


@pytest.mark.parametrize(
    ("model", "x", "shape"),
    [
        (Conv4(in_channels=1), torch.rand(3, 1, 28, 28), (3, 64)),
        (Conv4(in_channels=3), torch.rand(2, 3, 84, 84), (2, 64 * 5 * 5)),
        (Conv4(in_channels=1, num_classes=5), torch.rand(3, 1, 28, 28), (3, 5)),
        (Conv4(in_channels=1, pool_blocks=2, flatten=False), torch.rand(2, 1, 28, 28), (2, 64, 7, 7)),
        # Relation Networks' embedding: 28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5 (first two blocks unpadded)
        (Conv4(pool_blocks=2, flatten=False, padding=(0, 0, 1, 1)), torch.rand(2, 1, 28, 28), (2, 64, 5, 5)),
        (Conv4(hidden_channels=8, padding=0, flatten=False), torch.rand(2, 1, 46, 46), (2, 8, 1, 1)),
        (ResNet12(in_channels=3, channels=(8, 16, 16, 32)), torch.rand(2, 3, 32, 32), (2, 32)),
        (ResNet12(in_channels=3, channels=(8, 8, 8, 8), num_classes=4), torch.rand(2, 3, 32, 32), (2, 4)),
        (MLP(1, [40, 40], 1), torch.rand(6, 1), (6, 1)),
    ],
)
def test_shapes(model, x, shape):
    assert model(x).shape == shape


def test_resnet12_standard_widths_on_84px():
    model = ResNet12(in_channels=3)
    assert model(torch.rand(1, 3, 84, 84)).shape == (1, 640)
    # the standard ResNet-12 has ~12.4M parameters
    assert 12.0e6 < sum(p.numel() for p in model.parameters()) < 12.8e6


def test_conv4_standard_layout():
    model = Conv4(in_channels=1)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    pools = [m for m in model.modules() if isinstance(m, MaxPool2x2)]
    assert [c.out_channels for c in convs] == [64] * 4 and all(c.kernel_size == (3, 3) for c in convs)
    assert len(bns) == 4 and len(pools) == 4
    conv = lambda cin: cin * 64 * 9 + 64  # noqa: E731
    assert sum(p.numel() for p in model.parameters()) == conv(1) + 3 * conv(64) + 4 * 2 * 64


def _conventional_conv4(model: Conv4) -> torch.nn.Sequential:
    """The papers' block order, conv -> BatchNorm -> ReLU -> maxpool, sharing ``model``'s parameters, with
    PyTorch's own ``nn.MaxPool2d``."""
    layers: list[torch.nn.Module] = []
    for block in model.features:
        conv, bn = block[0], block[1]
        pools = [torch.nn.MaxPool2d(2) for m in block if isinstance(m, MaxPool2x2)]
        layers += [conv, bn, torch.nn.ReLU(), *pools]
    return torch.nn.Sequential(*layers, torch.nn.Flatten())


@pytest.mark.parametrize("pool_blocks", [4, 2])
def test_conv4_pool_before_relu_is_the_conventional_block_exactly(pool_blocks):
    # Conv4 runs maxpool before ReLU (a quarter of the ReLU work); forward, gradients and second-order gradients
    # must be those of the papers' order bit for bit, including tied and all-negative pooling windows
    torch.manual_seed(0)
    model = Conv4(in_channels=1, hidden_channels=8, pool_blocks=pool_blocks).double()
    blocks = [[type(m) for m in b] for b in model.features]
    assert blocks[0] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, MaxPool2x2, torch.nn.ReLU]
    reference = _conventional_conv4(model)
    x = torch.randn(6, 1, 16, 16, dtype=torch.float64)
    x[:, :, :4] = 0.0  # constant rows: BatchNorm maps them to equal values, ties inside pooling windows
    out, ref = model(x), reference(x)
    assert torch.equal(out, ref)
    params = list(model.parameters())
    g = torch.autograd.grad((out * out.detach().cos()).sum(), params, create_graph=True)
    g_ref = torch.autograd.grad((ref * ref.detach().cos()).sum(), params, create_graph=True)
    assert all(torch.equal(a, b) for a, b in zip(g, g_ref, strict=True))
    gg = torch.autograd.grad(sum((a * a).sum() for a in g), params, allow_unused=True)
    gg_ref = torch.autograd.grad(sum((a * a).sum() for a in g_ref), params, allow_unused=True)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(gg, gg_ref, strict=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda: (Conv4(num_classes=5).double(), torch.rand(4, 1, 28, 28, dtype=torch.float64)),
        lambda: (
            ResNet12(channels=(4, 4, 4, 4), num_classes=3).double(),
            torch.rand(2, 3, 16, 16, dtype=torch.float64),
        ),
        lambda: (MLP(3, [8], 2).double(), torch.rand(5, 3, dtype=torch.float64)),
    ],
)
def test_functional_call_matches_forward_and_differentiates(make):
    """What MAML needs: functional_call with a params dict equals the module, and grad works through it."""
    torch.manual_seed(0)
    model, x = make()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}

    # BatchNorm updates its running statistics in place, so buffers are an explicit input of the transformed
    # function (mutating a captured tensor inside `grad` is an error).
    def loss(p, b):
        return functional_call(model, (p, b), (x,)).pow(2).mean()

    g = grad(loss)(params, buffers)
    model.zero_grad()
    model(x).pow(2).mean().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(g[k], p.grad)
    for k, b in model.named_buffers():  # the functional call updated its buffers exactly as the module did
        torch.testing.assert_close(buffers[k], b)
    torch.testing.assert_close(functional_call(model, (params, buffers), (x,)), model(x))


def test_errors():
    with pytest.raises(ValueError, match="hidden_channels=0"):
        Conv4(hidden_channels=0)
    with pytest.raises(ValueError, match="pool_blocks=5 but num_blocks=4"):
        Conv4(pool_blocks=5)
    with pytest.raises(ValueError, match=r"expects \[B, C, H, W\]"):
        Conv4()(torch.zeros(28, 28))
    with pytest.raises(ValueError, match=r"padding=\(0, 2, 1, 1\).*0 or 1"):
        Conv4(padding=(0, 2, 1, 1))
    with pytest.raises(ValueError, match=r"padding=\(0, 1\).*4 such values"):
        Conv4(padding=(0, 1))
    with pytest.raises(ValueError, match=r"padding=1.0"):
        Conv4(padding=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="activation='swish'"):
        MLP(1, [4], 1, activation="swish")
    with pytest.raises(ValueError, match="exactly 4 block widths"):
        ResNet12(channels=(8, 8))


@pytest.mark.parametrize(("padding", "pool_blocks", "smallest"), [(1, 4, 16), ((0, 0, 1, 1), 2, 10), (0, 4, 46)])
def test_conv4_names_the_smallest_input_it_takes(padding, pool_blocks, smallest):
    model = Conv4(hidden_channels=4, pool_blocks=pool_blocks, padding=padding)
    assert model(torch.rand(2, 1, smallest, smallest)).shape[0] == 2  # the smallest size runs
    with pytest.raises(ValueError, match=f"H, W >= {smallest} "):  # one pixel less is refused, before torch fails
        model(torch.rand(1, 1, smallest - 1, smallest - 1))
