"""Progressive neural networks (Rusu et al. 2016): one column per task, lateral adapters from all earlier columns.

Notation: column ``k`` (task ``k``) copies the base model's architecture; ``h_i^(k)`` is the output of its stage
``i`` (a stage is one Linear or Conv2d layer with the layers that follow it up to the next one). For ``i >= 1`` and
``k >= 1`` the pre-activation of stage ``i`` gets a lateral term from the concatenated outputs of stage ``i-1`` of
every earlier column:

    ``h_i^(k) = f_i( W_i^(k) h_{i-1}^(k) + U_i^(k) relu( V_i^(k) [alpha_1 h_{i-1}^(0), ..., alpha_k h_{i-1}^(k-1)] ) )``

``V`` reduces the concatenation to ``hidden_size`` units (a 1x1 convolution for convolutional stages), ``U`` maps
them to the layer's output (a convolution with the layer's kernel, stride and padding), ``alpha`` are learned
scalars (initialised to ``alpha_init``; the paper draws a small random value). Adding a column freezes every earlier
column and adapter (``requires_grad=False``, eval mode), so earlier tasks' outputs never change.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_non_negative_int, check_positive_float, check_positive_int
from meta_learning.continual.base import Strategy, TaskLog, fingerprint
from meta_learning.continual.models import TaskAwareModule, seeded_init
from meta_learning.models.mlp import MLP

_PARAM_LAYERS = (nn.Linear, nn.Conv2d)


def _flatten_layers(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, MLP):
        return [nn.Flatten(), *_flatten_layers(model.net)]
    if isinstance(model, nn.Sequential):
        out: list[nn.Module] = []
        for m in model:
            out.extend(_flatten_layers(m) if isinstance(m, (nn.Sequential, MLP)) else [m])
        return out
    raise TypeError(
        f"base_model must be an nn.Sequential (nested Sequentials allowed) or a meta_learning MLP, got "
        f"{type(model).__name__}; wrap your layers in nn.Sequential so that columns can be connected layer by layer"
    )


class _Lateral(nn.Module):
    """``U relu(V [alpha_j h_j]_j)`` for one stage of one column, from ``n_sources`` earlier columns."""

    def __init__(self, layer: nn.Module, n_sources: int, hidden_size: int, alpha_init: float) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((n_sources,), float(alpha_init)))
        if isinstance(layer, nn.Linear):
            self.v: nn.Module = nn.Linear(n_sources * layer.in_features, hidden_size)
            self.u: nn.Module = nn.Linear(hidden_size, layer.out_features, bias=False)
        elif isinstance(layer, nn.Conv2d):
            self.v = nn.Conv2d(n_sources * layer.in_channels, hidden_size, kernel_size=1)
            self.u = nn.Conv2d(
                hidden_size,
                layer.out_channels,
                kernel_size=layer.kernel_size,  # type: ignore[arg-type]
                stride=layer.stride,  # type: ignore[arg-type]
                padding=layer.padding,  # type: ignore[arg-type]
                dilation=layer.dilation,  # type: ignore[arg-type]
                bias=False,
            )
        else:  # pragma: no cover - guarded by _PARAM_LAYERS
            raise TypeError(f"no lateral adapter for {type(layer).__name__}")

    def forward(self, sources: list[Tensor]) -> Tensor:
        scaled = torch.cat([a * h for a, h in zip(self.alpha, sources, strict=True)], dim=1)
        return self.u(torch.relu(self.v(scaled)))


class ProgressiveColumns(TaskAwareModule):
    """The columns and adapters of a progressive network; ``forward(x, task_id)`` runs columns ``0..task_id``.

    Args:
        base_model: column 0 (used in place); later columns copy its architecture with fresh weights.
        hidden_size: width of the lateral adapters' reduction ``V``.
        seed: column ``k`` and its adapters are initialised from ``seed + k``.
        alpha_init: initial value of the lateral scalars.
    """

    def __init__(self, base_model: nn.Module, hidden_size: int, *, seed: int = 0, alpha_init: float = 0.1) -> None:
        super().__init__()
        layers = _flatten_layers(base_model)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.seed = check_non_negative_int("seed", seed)
        self.alpha_init = check_positive_float("alpha_init", alpha_init)
        param_at = [i for i, m in enumerate(layers) if isinstance(m, _PARAM_LAYERS)]
        if len(param_at) < 2:
            raise ValueError(
                f"base_model has {len(param_at)} Linear/Conv2d layers; a progressive network needs at least 2 "
                "(lateral connections enter every layer after the first)"
            )
        # stage i spans layers[start_i : start_{i+1}] and its parametrised layer is layers[param_at[i]]
        self._starts = [0, *param_at[1:], len(layers)]
        self._param_at = param_at
        self._template = copy.deepcopy(nn.Sequential(*layers))  # unregistered: not in state_dict
        self.columns = nn.ModuleList([nn.ModuleList(layers)])
        self.laterals = nn.ModuleList([nn.ModuleList()])

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    def known_tasks(self) -> list[int]:
        return list(range(self.num_columns))

    def prepare_task(self, task_id: int) -> None:
        check_non_negative_int("task_id", task_id)
        if task_id < self.num_columns:
            return
        if task_id > self.num_columns:
            raise ValueError(f"task_id={task_id} but columns are added in order; the next one is {self.num_columns}")
        for module in (*self.columns, *self.laterals):
            for p in module.parameters():
                p.requires_grad_(False)
        column = copy.deepcopy(self._template)
        with seeded_init(self.seed + task_id):
            for m in column.modules():
                reset = getattr(m, "reset_parameters", None)  # the layers' own default initialisation
                if callable(reset):
                    reset()
            laterals = nn.ModuleList(
                [
                    _Lateral(column[self._param_at[i]], task_id, self.hidden_size, self.alpha_init)
                    for i in range(1, len(self._param_at))
                ]
            )
        ref = next(self.columns[0].parameters())
        self.columns.append(nn.ModuleList(list(column)).to(device=ref.device, dtype=ref.dtype))
        self.laterals.append(laterals.to(device=ref.device, dtype=ref.dtype))
        self.train(self.training)

    def train(self, mode: bool = True) -> ProgressiveColumns:
        super().train(mode)
        frozen = self.num_columns - 1 if self.num_columns > 1 else 0
        for k in range(frozen):  # frozen columns always run in eval mode (BatchNorm statistics, dropout)
            self.columns[k].eval()
            self.laterals[k].eval()
        return self

    def forward(self, x: Tensor, task_id: int) -> Tensor:
        if not 0 <= task_id < self.num_columns:
            raise ValueError(f"task_id={task_id} has no column; known tasks: {self.known_tasks()}")
        hs: list[Tensor] = [x] * (task_id + 1)
        for i in range(len(self._param_at)):
            new: list[Tensor] = []
            for k in range(task_id + 1):
                with torch.set_grad_enabled(torch.is_grad_enabled() and k == task_id):
                    new.append(self._stage(k, i, hs[k], hs[:k]))
            hs = new
        return hs[task_id]

    def _stage(self, k: int, i: int, h: Tensor, earlier: list[Tensor]) -> Tensor:
        layers: nn.ModuleList = self.columns[k]  # type: ignore[assignment]
        start, stop, p = self._starts[i], self._starts[i + 1], self._param_at[i]
        for j in range(start, p + 1):
            h = layers[j](h)
        if i > 0 and k > 0:
            h = h + self.laterals[k][i - 1](earlier)  # type: ignore[index]
        for j in range(p + 1, stop):
            h = layers[j](h)
        return h


class ProgressiveNetwork(Strategy):
    """A progressive network trained task by task (task-incremental: ``predict`` needs the task id).

    Args:
        base_model: column 0, trained in place by the first task (an ``nn.Sequential`` or a
            :class:`~meta_learning.models.MLP`; its last layer is each column's output head).
        hidden_size: width of the lateral adapters.
        base_trained: the base model already learned task 0; the first :meth:`add_new_task` adds column 1.
        alpha_init: initial lateral scalars.
        **kwargs: :class:`~meta_learning.continual.base.Strategy` options (``config``, ``seed``, ``device``).

    Example:
        >>> net = ProgressiveNetwork(base_model=MLP(784, [100, 100], 10), hidden_size=50)  # doctest: +SKIP
        >>> net.add_new_task(x1, y1); net.add_new_task(x2, y2)                              # doctest: +SKIP
        >>> net.predict(x1, task_id=0).argmax(1)                                            # doctest: +SKIP
    """

    def __init__(
        self,
        base_model: nn.Module,
        hidden_size: int,
        *,
        base_trained: bool = False,
        alpha_init: float = 0.1,
        **kwargs: Any,
    ) -> None:
        columns = ProgressiveColumns(base_model, hidden_size, seed=kwargs.get("seed", 0), alpha_init=alpha_init)
        super().__init__(columns, **kwargs)
        self.base_model = base_model
        if base_trained:
            self.task_ids.append(0)

    @property
    def columns(self) -> ProgressiveColumns:
        return self.model  # type: ignore[return-value]

    def add_new_task(self, data: Tensor, labels: Tensor, **kwargs: Any) -> TaskLog:
        """Add a column for a new task and train it (and its adapters) on ``data``, ``labels``."""
        return self.learn_task(data, labels, **kwargs)

    def learn_task(
        self, data: Tensor, labels: Tensor, previous_tasks: Any = None, task_id: int | None = None, **kwargs: Any
    ) -> TaskLog:
        expected = max(self.task_ids, default=-1) + 1
        for i, prev in enumerate(previous_tasks or ()):
            px, py, _ = self._unpack_previous(i, prev)
            if fingerprint(px, py) not in self._fingerprints:
                self.consolidate(px, py, i)
        if task_id is not None and task_id != expected:
            raise ValueError(
                f"task_id={task_id} but a progressive network adds tasks in order; the next one is {expected}"
            )
        return super().learn_task(data, labels, previous_tasks, task_id, **kwargs)

    def consolidate(self, data: Tensor, labels: Tensor, task_id: int) -> None:
        raise ValueError(
            f"a progressive network keeps tasks in their own columns; previous task {task_id} has no "
            "column (learn it with add_new_task first, or pass base_trained=True for a base model that knows it)"
        )
