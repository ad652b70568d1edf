"""A plain multi-layer perceptron (the sinusoid-regression network of Finn et al. 2017 is ``MLP(1, [40, 40], 1)``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from meta_learning._checks import check_choice, check_positive_int

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    """Linear layers with an activation between them (none after the last).

    Args:
        in_features: input size ``D``.
        hidden: sizes of the hidden layers.
        out_features: output size.
        activation: one of ``relu``, ``tanh``, ``gelu``, ``silu``.

    Shapes: ``x [B, D] -> [B, out_features]`` (inputs with more dims are flattened from dim 1).

    Example:
        >>> MLP(1, [40, 40], 1)(torch.zeros(5, 1)).shape
        torch.Size([5, 1])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu") -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        for i, h in enumerate(hidden):
            check_positive_int(f"hidden[{i}]", h)
        act = _ACTIVATIONS[check_choice("activation", activation, _ACTIVATIONS)]
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(act())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1) if x.dim() > 2 else x)
