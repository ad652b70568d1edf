"""ANIL, Meta-SGD and Reptile: MAML variants over the same functional core.

- ANIL (Raghu et al. 2020): the inner loop adapts the head only; the body is meta-learned by the outer loop.
- Meta-SGD (Li et al. 2017): one learned step size per parameter entry, meta-learned with the initialisation.
- Reptile (Nichol et al. 2018): first-order; ``k`` SGD steps on the task, then
  ``theta <- theta + epsilon * mean_tasks(phi - theta)``, no query loss. The update is applied as the gradient
  ``theta - mean(phi)`` of the surrogate ``0.5 * ||theta - mean(phi)||^2`` so the shared loop and optimizer drive it
  (with SGD(lr=epsilon) this is exactly the Reptile step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning.maml.distributed import all_reduce_sum
from meta_learning.maml.functional import LossFn, last_module_with_parameters
from meta_learning.maml.maml import MAML
from meta_learning.maml.tasks import MetaBatch, meta_batch
from meta_learning.metrics import accuracy
from meta_learning.training.loop import StepOutput


class ANIL(MAML):
    """Almost No Inner Loop: MAML whose inner loop adapts only ``head`` (default: the last layer with parameters).

    Example:
        >>> anil = ANIL(model=Conv4(num_classes=5), head="head", lr_inner=0.1, num_inner_steps=5)
    """

    def __init__(self, model: nn.Module, head: str | None = None, **kwargs: Any) -> None:
        if "inner_params" in kwargs:
            raise TypeError("ANIL chooses inner_params from head=; pass head= instead")
        head = head if head is not None else last_module_with_parameters(model)
        super().__init__(model, inner_params=[head], **kwargs)
        self.head = head


class MetaSGD(MAML):
    """Meta-SGD: MAML with a learned step size per parameter entry (initialised to ``lr_inner``).

    The learned rates are tuned for the number of inner steps used in meta-training. Adapting with more steps at
    test time can diverge: trained with one step on sinusoid regression, ten steps at the learned rates gave a
    non-finite loss on 25-41% of 1,000 test tasks (benchmarks/RESULTS.md). Train with the step count you will adapt
    with, or pass a smaller ``num_steps`` to :meth:`adapt`.
    """

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        if "learn_inner_lr" in kwargs:
            raise TypeError("MetaSGD always learns per-parameter rates; use MAML(learn_inner_lr=...) otherwise")
        super().__init__(model, learn_inner_lr="per_parameter", **kwargs)


class Reptile(MAML):
    """Reptile: first-order meta-learning by moving the initialisation towards task-adapted weights.

    Args:
        model: the network.
        lr_inner: inner SGD step size.
        lr_outer: ``epsilon``, the interpolation rate (the outer optimizer is SGD with this rate).
        num_inner_steps: ``k`` inner steps per task (on the support and query sets together).
    """

    def __init__(
        self,
        model: nn.Module,
        lr_inner: float = 0.001,
        lr_outer: float = 0.1,
        num_inner_steps: int = 5,
        meta_batch_size: int = 5,
        inner_params: Sequence[str] | Callable[[str], bool] | None = None,
        loss_fn: LossFn | None = None,
    ) -> None:
        super().__init__(
            model, lr_inner=lr_inner, lr_outer=lr_outer, num_inner_steps=num_inner_steps, first_order=True,
            meta_batch_size=meta_batch_size, inner_params=inner_params, loss_fn=loss_fn,
        )  # fmt: skip
        self.optimizer = torch.optim.SGD(self.parameters(), lr=self.lr_outer)

    def meta_loss(self, tasks: MetaBatch) -> StepOutput:
        """Surrogate ``sum_t 0.5 * ||theta - phi_t||^2 / B``, whose gradient is ``theta - mean_t(phi_t)``.

        Each rank sums over its share of the meta-batch, so gradients summed over ranks are the same.
        """
        episodes = meta_batch(tasks)
        params = dict(self.model.named_parameters())
        terms: list[Tensor] = []
        metrics: list[float] = []
        for ep in self.local_share(episodes):
            x = torch.cat([ep.support_x, ep.query_x]) if ep.query_x.numel() else ep.support_x
            y = torch.cat([ep.support_y, ep.query_y]) if ep.query_y.numel() else ep.support_y
            with torch.no_grad():
                phi = self.adapt_params(x, y, first_order=True)[-1]
                if ep.query_x.numel():  # pre-adaptation query accuracy (or loss): what the outer loop improves
                    out = self.predict(ep.support_x, ep.support_y, ep.query_x, num_steps=0)
                    q = ep.query_y
                    metrics.append(accuracy(out, q) if ep.is_classification else float(self.loss_fn(out, q)))
            terms.extend(0.5 * (params[k] - phi[k]).pow(2).sum() for k in self.inner_names)
        (metric_sum,) = all_reduce_sum([sum(metrics)])
        if self.training:
            self.iteration += 1
        metric = metric_sum / len(episodes) if metrics else float("nan")
        return StepOutput(torch.stack(terms).sum() / len(episodes), metric)

    def meta_backward(self, tasks: MetaBatch) -> StepOutput:
        """Backward of the Reptile surrogate (its graph is one subtraction per parameter, nothing to free early)."""
        out = self.meta_loss(tasks)
        out.loss.backward()
        return StepOutput(out.loss.detach(), out.accuracy, backward_done=True)
