"""Per-step BatchNorm for MAML++ (Antoniou et al. 2019): BNWB (and the BNRS slots), and batch statistics.

MAML++ gives every inner step ``s = 0..S`` its own BatchNorm affine weights and biases (BNWB) and its own running
statistics (BNRS), because the feature distribution moves as the inner loop adapts the weights. The module reads
the current step from its ``step`` attribute, which :class:`~meta_learning.maml.MAML` sets before each forward of
the inner loop (step ``s`` for the support forward of step ``s``, step ``S`` for the query). ``MAML`` refuses more
meta-training inner steps than the module has slots; at test time (``adapt``/``evaluate`` with more steps) steps
past ``num_steps`` reuse the last slot.

Within the MAML family only the per-step weights and biases are learned: every forward of MAML (inner loop, outer
loop, evaluation, and the module ``adapt`` returns) normalises with the statistics of the batch at hand, the
original MAML convention, so the per-step running statistics are neither read nor accumulated (as in Antoniou et
al.'s code, whose BatchNorm always normalises with batch statistics). The BNRS slots are kept so that the module
also works on its own: in training mode it normalises with batch statistics and updates slot ``step``, in eval mode
it reads slot ``step``.

Shapes: ``weight``, ``bias``: ``[S + 1, C]`` (or ``[C]`` without BNWB); ``running_mean``, ``running_var``:
``[S + 1, C]``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from meta_learning._checks import check_non_negative_int, check_positive_int


class PerStepBatchNorm(nn.Module):
    """BatchNorm over dim 1 of ``[B, C, ...]`` inputs with per-step statistics and (optionally) affine terms.

    Args:
        num_features: ``C``.
        num_steps: inner steps ``S`` (``S + 1`` slots: one per support forward and one for the query).
        per_step_affine: BNWB: separate weights/biases per step (else shared, like plain BatchNorm).
        eps, momentum: as in ``nn.BatchNorm2d``.

    In training mode the batch statistics are used and slot ``step`` of the running statistics is updated; in
    eval mode slot ``step`` of the running statistics is used. With ``running_mean``/``running_var`` set to ``None``
    (as MAML's forwards pass them, see :func:`use_batch_statistics`) batch statistics are used in either mode.
    """

    def __init__(
        self, num_features: int, num_steps: int, per_step_affine: bool = True, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.num_steps = check_non_negative_int("num_steps", num_steps)
        self.eps, self.momentum = eps, momentum
        slots = num_steps + 1
        shape = (slots, num_features) if per_step_affine else (num_features,)
        self.per_step_affine = per_step_affine
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("running_mean", torch.zeros(slots, num_features))
        self.register_buffer("running_var", torch.ones(slots, num_features))
        self.step = 0

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_steps={self.num_steps}, per_step_affine={self.per_step_affine}"

    def forward(self, x: Tensor) -> Tensor:
        s = min(self.step, self.num_steps)
        weight = self.weight[s] if self.per_step_affine else self.weight
        bias = self.bias[s] if self.per_step_affine else self.bias
        if self.running_mean is None or self.running_var is None:  # batch statistics, nothing to update
            return nn.functional.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        return nn.functional.batch_norm(
            x, self.running_mean[s], self.running_var[s], weight, bias, self.training, self.momentum, self.eps
        )


def per_step_batchnorm(model: nn.Module, num_steps: int, per_step_affine: bool = True) -> nn.Module:
    """A copy of ``model`` with every ``BatchNorm1d/2d/3d`` replaced by :class:`PerStepBatchNorm`.

    Each slot starts from the original layer's affine terms and running statistics.
    """
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                new = PerStepBatchNorm(child.num_features, num_steps, per_step_affine, child.eps, child.momentum or 0.1)
                like = next(iter(child.parameters()), child.running_mean)
                if like is not None:
                    new = new.to(device=like.device, dtype=like.dtype)
                with torch.no_grad():
                    if child.affine:
                        new.weight.copy_(child.weight.expand_as(new.weight))
                        new.bias.copy_(child.bias.expand_as(new.bias))
                    if child.running_mean is not None and child.running_var is not None:
                        new.running_mean.copy_(child.running_mean.expand_as(new.running_mean))
                        new.running_var.copy_(child.running_var.expand_as(new.running_var))
                setattr(parent, name, new)
    return model


def per_step_modules(model: nn.Module) -> Iterator[PerStepBatchNorm]:
    for m in model.modules():
        if isinstance(m, PerStepBatchNorm):
            yield m


def running_stat_names(model: nn.Module) -> set[str]:
    """Names of the BatchNorm (and :class:`PerStepBatchNorm`) running statistics among ``model``'s buffers.

    MAML's forwards pass ``None`` for these, so the layers normalise with batch statistics in training and eval mode
    and nothing is read from or written to the running statistics.
    """
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, PerStepBatchNorm)):
            names.update(f"{prefix}.{b}" if prefix else b for b, _ in module.named_buffers(recurse=False))
    return names


def use_batch_statistics(model: nn.Module) -> None:
    """Make every BatchNorm of ``model`` (in place) normalise with batch statistics in eval mode too.

    The running statistics are removed (``None``; they leave the ``state_dict``) and ``track_running_stats`` is
    turned off, which is PyTorch's documented way for BatchNorm to use batch statistics at evaluation; a
    :class:`PerStepBatchNorm` does the same without running statistics. Used on the module ``MAML.adapt`` returns,
    so that ``adapted.eval()`` predicts what the adaptation was computed with.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean, module.running_var, module.num_batches_tracked = None, None, None
        elif isinstance(module, PerStepBatchNorm):
            module.running_mean, module.running_var = None, None  # type: ignore[assignment]


def set_step(model: nn.Module, step: int) -> None:
    """Tell every :class:`PerStepBatchNorm` in ``model`` which inner step the next forward belongs to."""
    for m in per_step_modules(model):
        m.step = step
