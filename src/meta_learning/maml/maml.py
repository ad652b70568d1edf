"""MAML and its variants as one learner over the functional core (:mod:`meta_learning.maml.functional`).

``MAML`` is second-order MAML (Finn et al. 2017); ``first_order=True`` is FOMAML. MAML++ options
(Antoniou et al. 2019): ``learn_inner_lr="per_step"`` (learned per-layer per-step rates, LSLR),
``multi_step_loss=True`` (query loss after every inner step, weights annealed towards the last step over
``msl_iterations``, then the last step's loss alone), ``first_order_iterations`` (derivative-order annealing: first
order for the first N iterations, second order afterwards). ``learn_inner_lr="per_parameter"`` is Meta-SGD (Li et
al. 2017).

BatchNorm convention: batch statistics in the inner and the outer loop and at evaluation, in training and in eval
mode alike (the original MAML setting, transductive over each set): every forward passes ``None`` for the running
statistics, so they are never read nor updated, and ``adapt``/``evaluate`` leave the model bit-identical. The module
:meth:`MAML.adapt` returns has its BatchNorm layers switched to batch statistics in eval mode too
(:func:`~meta_learning.maml.batchnorm.use_batch_statistics`). MAML++ per-step BatchNorm: only the per-step weights
and biases are learned (:mod:`meta_learning.maml.batchnorm`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_non_negative_int, check_positive_float, check_positive_int
from meta_learning.data.episode import Episode
from meta_learning.maml.batched import batched_task_losses, same_shapes, stack_episodes, vmap_refusal
from meta_learning.maml.batchnorm import per_step_modules, running_stat_names, set_step, use_batch_statistics
from meta_learning.maml.distributed import all_reduce_gradients, all_reduce_sum, shard, world
from meta_learning.maml.functional import (
    Buffers,
    InferenceModeError,
    LossFn,
    Params,
    default_loss,
    forward,
    inner_loop,
    resolve_inner_names,
)
from meta_learning.maml.stacked import LinearChain, has_hooks, per_task_losses, stacked_inner_loop
from meta_learning.maml.tasks import MetaBatch, as_episode, check_task_inputs, meta_batch, meta_batches
from meta_learning.metrics import Accuracy, MeanSquaredError, accuracy, accuracy_from_episodes, mse_from_episodes
from meta_learning.training.loop import History, StepOutput, fit

INNER_LR_MODES = ("fixed", "per_parameter", "per_step")


def _key(name: str) -> str:
    return name.replace(".", "__")


def _model_call(fn: Callable[[], Any], what: str) -> Any:
    """``fn()``, turning the model's or loss's refusal of the inputs (shape, dtype, label range) into a ValueError
    that names them; out-of-memory errors pass through."""
    try:
        return fn()
    except (torch.OutOfMemoryError, InferenceModeError):  # not about the inputs
        raise
    except (RuntimeError, IndexError) as err:
        raise ValueError(f"{what} do not fit the model or its loss: {err}") from err


def _check_finite_result(values: Iterable[Tensor], lr_inner: float, num_steps: int | None) -> None:
    if not all(bool(torch.isfinite(v).all()) for v in values):
        raise ValueError(
            f"adaptation diverged: non-finite values after {num_steps} inner steps with lr_inner={lr_inner}; "
            "lower lr_inner or the number of steps"
        )


class MAML(nn.Module):
    """Model-Agnostic Meta-Learning for any ``nn.Module``, classification or regression.

    Args:
        model: the network ``f_theta``; any module built from standard layers.
        lr_inner: inner-loop step size ``alpha`` (the initial value when it is learned).
        lr_outer: meta step size (Adam).
        num_inner_steps: inner steps during meta-training (``adapt``/``evaluate`` may use another number).
        first_order: FOMAML: ignore second-order terms.
        meta_batch_size: tasks per meta-update when ``meta_train`` draws from a sampler.
        inner_params: names (or prefixes) of the parameters adapted in the inner loop, or a predicate on names;
            default all. The others are meta-learned but not adapted (ANIL adapts the head only).
        learn_inner_lr: ``"fixed"``, ``"per_parameter"`` (Meta-SGD) or ``"per_step"`` (MAML++ LSLR).
        multi_step_loss: MAML++ multi-step loss: for the first ``msl_iterations`` meta-iterations the query losses
            after every inner step, weighted by :meth:`msl_weights`; afterwards the last step's loss alone (as in
            Antoniou et al.'s code, ``multi_step_loss_num_epochs``).
        first_order_iterations: MAML++ derivative-order annealing (first order for this many iterations).
        loss_fn: ``(outputs, targets) -> loss``; default cross-entropy for integer labels, MSE for floats.
        batch_tasks: ``"auto"`` (default): plain MLPs (``MLP``, or ``nn.Sequential`` of ``Linear`` and element-wise
            activations) run a meta-batch's tasks as one computation on stacked parameters (exact, several times
            faster: :mod:`meta_learning.maml.stacked`); other models use the per-task loop. ``True``: batch any
            model with ``vmap`` instead (slower on CPU, see :mod:`meta_learning.maml.batched`; only models built
            from layers proven exact under vmap, without buffers, others raise ``ValueError`` naming the module).
            ``False``: always the per-task loop.

    Example:
        >>> maml = MAML(model=Conv4(num_classes=5), lr_inner=0.4, lr_outer=0.001, num_inner_steps=1)
        >>> maml.meta_train(EpisodeSampler(Omniglot(split="train"), 5, 1, 15), num_iterations=1000)
        >>> adapted_model = maml.adapt(task_support, num_steps=5)   # a new nn.Module; maml is untouched
    """

    @classmethod
    def from_config(cls, model: nn.Module, config: Any, **kwargs: Any) -> MAML:
        """Built from the ``maml`` section of a config (a :class:`~meta_learning.config.MAMLConfig` or the seed's
        dict ``{"lr_inner": 0.01, "lr_outer": 0.001, "num_inner_steps": 5}``); ``kwargs`` add other options or
        override the section's.

        Example:
            >>> maml = MAML.from_config(model, load_config(config).maml)   # doctest: +SKIP
        """
        from meta_learning.config import MAMLConfig, as_section

        c = as_section(MAMLConfig, config, "maml")
        options = {
            "lr_inner": c.lr_inner, "lr_outer": c.lr_outer, "num_inner_steps": c.num_inner_steps,
            "first_order": c.first_order, "meta_batch_size": c.meta_batch_size,
        }  # fmt: skip
        return cls(model, **{**options, **kwargs})

    def __init__(
        self,
        model: nn.Module,
        lr_inner: float = 0.01,
        lr_outer: float = 0.001,
        num_inner_steps: int = 5,
        first_order: bool = False,
        meta_batch_size: int = 4,
        inner_params: Sequence[str] | Callable[[str], bool] | None = None,
        learn_inner_lr: str = "fixed",
        multi_step_loss: bool = False,
        msl_iterations: int = 10_000,
        first_order_iterations: int = 0,
        loss_fn: LossFn | None = None,
        batch_tasks: bool | str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.lr_inner = check_positive_float("lr_inner", lr_inner, finite=True)
        self.lr_outer = check_positive_float("lr_outer", lr_outer, finite=True)
        self.num_inner_steps = check_non_negative_int("num_inner_steps", num_inner_steps)
        self.first_order = bool(first_order)
        self.meta_batch_size = check_positive_int("meta_batch_size", meta_batch_size)
        self.inner_names = resolve_inner_names(model, inner_params)
        self.learn_inner_lr = check_choice("learn_inner_lr", learn_inner_lr, INNER_LR_MODES)
        self.multi_step_loss = bool(multi_step_loss)
        self.msl_iterations = check_positive_int("msl_iterations", msl_iterations)
        self.first_order_iterations = check_non_negative_int("first_order_iterations", first_order_iterations)
        self.loss_fn: LossFn = loss_fn or default_loss
        params = dict(model.named_parameters())
        self.inner_lrs = nn.ParameterDict()
        if self.learn_inner_lr == "per_parameter":
            for n in self.inner_names:
                self.inner_lrs[_key(n)] = nn.Parameter(torch.full_like(params[n].detach(), self.lr_inner))
        elif self.learn_inner_lr == "per_step":
            steps = max(self.num_inner_steps, 1)
            for n in self.inner_names:
                self.inner_lrs[_key(n)] = nn.Parameter(
                    torch.full((steps,), self.lr_inner, dtype=params[n].dtype, device=params[n].device)
                )
        slots = {m.num_steps for m in per_step_modules(model)}
        self._per_step_bn = bool(slots)
        if slots and self.num_inner_steps > min(slots):
            raise ValueError(
                f"num_inner_steps={self.num_inner_steps} but the model's per-step BatchNorm has slots for "
                f"num_steps={min(slots)}; build it with per_step_batchnorm(model, {self.num_inner_steps}) or use "
                f"num_inner_steps <= {min(slots)}"
            )
        self._running_stats = running_stat_names(model)
        if not isinstance(batch_tasks, bool) and batch_tasks != "auto":
            raise TypeError(f"batch_tasks must be 'auto', True or False, got {batch_tasks!r}")
        self._chain = LinearChain.of(model) if batch_tasks == "auto" else None
        refusal = vmap_refusal(model) if batch_tasks is True else None
        if refusal is not None:
            raise ValueError(f"batch_tasks=True: {refusal}; use the per-task loop (batch_tasks=False)")
        self.batch_tasks = batch_tasks
        self.iteration: Tensor
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))  # meta-updates so far
        # not rewound when fit restores the best-validation weights: the annealing schedules run on it
        self.progress_state = ("iteration",)
        self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.parameters(), lr=self.lr_outer)

    # -- the inner loop --------------------------------------------------------------------------------------

    def step_size(self, step: int) -> float | dict[str, Tensor]:
        """``alpha`` for inner step ``step``: a float, or per-name tensors when learned."""
        if self.learn_inner_lr == "fixed":
            return self.lr_inner
        if self.learn_inner_lr == "per_parameter":
            return {n: self.inner_lrs[_key(n)] for n in self.inner_names}
        last = self.inner_lrs[_key(self.inner_names[0])].shape[0] - 1
        return {n: self.inner_lrs[_key(n)][min(step, last)] for n in self.inner_names}

    def _state(self) -> tuple[Params, Buffers]:
        return dict(self.model.named_parameters()), self._cloned_buffers()

    def _cloned_buffers(self) -> Buffers:
        """The buffers for one task's forwards: BatchNorm running statistics as ``None`` (batch statistics, nothing
        read or updated), a clone of every other buffer (updates made during adaptation are dropped)."""
        return {k: None if k in self._running_stats else v.clone() for k, v in self.model.named_buffers()}

    def adapt_params(
        self,
        support_x: Tensor,
        support_y: Tensor,
        num_steps: int | None = None,
        first_order: bool | None = None,
        buffers: Buffers | None = None,
    ) -> list[Params]:
        """Parameters after each inner step on the support set: ``[theta, p_1, ..., p_S]`` (differentiable).

        ``buffers``: the (cloned) buffers to run with, so a caller can reuse them for its query forward; default a
        fresh clone of the model's.
        """
        params, fresh = self._state()
        buffers = fresh if buffers is None else buffers
        steps = self.num_inner_steps if num_steps is None else check_non_negative_int("num_steps", num_steps)
        fo = self._first_order_now() if first_order is None else first_order
        return inner_loop(
            self.model, params, buffers, support_x, support_y,
            num_steps=steps, step_size=self.step_size, inner_names=self.inner_names,
            first_order=fo, loss_fn=self.loss_fn, before_forward=self._at_step if self._per_step_bn else None,
        )  # fmt: skip

    def _at_step(self, step: int) -> None:
        """Select per-step BatchNorm slot ``step`` (MAML++ BNRS/BNWB) for the next forward; no-op otherwise."""
        if self._per_step_bn:
            set_step(self.model, step)

    def _query_forward(self, params: Params, buffers: Buffers, x: Tensor, step: int) -> Tensor:
        self._at_step(step)
        return forward(self.model, params, buffers, x)

    def _first_order_now(self) -> bool:
        return self.first_order or int(self.iteration) < self.first_order_iterations

    def _msl_active(self) -> bool:
        return self.multi_step_loss and int(self.iteration) < self.msl_iterations

    def msl_weights(self, num_steps: int) -> Tensor:
        """MAML++ multi-step loss weights for the current iteration.

        Uniform ``1/S`` at iteration 0; the weights of steps ``1..S-1`` fall linearly towards ``0.03/S`` over
        ``msl_iterations`` (the last step takes the rest); from iteration ``msl_iterations`` on exactly
        ``[0, ..., 0, 1]``: the last step's loss alone (Antoniou et al.'s code stops using the multi-step loss after
        ``multi_step_loss_num_epochs``).
        """
        if num_steps <= 1:
            return torch.ones(max(num_steps, 1), dtype=torch.float64)
        w = torch.zeros(num_steps, dtype=torch.float64)  # float64: the weights enter the loss as exact Python floats
        if int(self.iteration) >= self.msl_iterations:
            w[-1] = 1.0
            return w
        uniform = 1.0 / num_steps
        floor = 0.03 / num_steps
        progress = int(self.iteration) / self.msl_iterations
        others = max(uniform - progress * (uniform - floor), floor)
        w[:-1] = others
        w[-1] = 1.0 - others * (num_steps - 1)
        return w

    # -- meta-training ---------------------------------------------------------------------------------------

    def task_loss(self, episode: Episode) -> tuple[Tensor, float]:
        """Query loss of one task after the inner loop (differentiable w.r.t. the meta-parameters) and metric."""
        loss, final = self._task_loss_and_output(episode.support_x, episode.support_y, episode.query_x, episode.query_y)
        return loss, self._metric(final.detach(), episode.query_y)

    def _metric(self, outputs: Tensor, targets: Tensor) -> float:
        if torch.is_floating_point(targets):
            return float(self.loss_fn(outputs, targets))
        return accuracy(outputs, targets)

    def _task_loss_and_output(self, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
        """The inner loop on the support set, then the (multi-step) query loss and the final query outputs."""
        buffers = self._cloned_buffers()
        trajectory = self.adapt_params(sx, sy, buffers=buffers)
        return self._query_loss(
            trajectory, lambda p, s: self._query_forward(p, buffers, qx, s), lambda out: self.loss_fn(out, qy)
        )

    def _query_loss(
        self,
        trajectory: list[Params],
        query_out: Callable[[Params, int], Tensor],
        loss_of: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Query loss over an inner-loop trajectory (MAML++ multi-step loss while it is annealed) and the final
        outputs.

        ``query_out(p, s)``: query outputs with the parameters ``p`` after step ``s``; ``loss_of(outputs)``: their
        loss, a scalar (one task) or one per task (the stacked path).
        """
        if self._msl_active() and len(trajectory) > 1:
            weights = self.msl_weights(len(trajectory) - 1).tolist()
            outs = [query_out(p, s + 1) for s, p in enumerate(trajectory[1:])]
            loss = torch.stack([w * loss_of(o) for w, o in zip(weights, outs, strict=True)]).sum(0)
            return loss, outs[-1]
        out = query_out(trajectory[-1], len(trajectory) - 1)
        return loss_of(out), out

    def uses_batched_path(self, episodes: list[Episode]) -> bool:
        """Whether this meta-batch (this rank's share) runs as one batched computation (stacked or vmap)."""
        return self._batched_kind(episodes) is not None

    def _batched_kind(self, episodes: list[Episode]) -> str | None:
        """``"stacked"`` (``"auto"`` and a plain MLP), ``"vmap"`` (``batch_tasks=True``) or ``None`` (the loop)."""
        if self.batch_tasks is False or len(episodes) < 2:
            return None
        if not same_shapes(episodes):
            if self.batch_tasks is True:
                raise ValueError("batch_tasks=True needs the tasks of a meta-batch to have equal shapes")
            return None
        # a LinearChain has no norm layers, so no per-step BatchNorm either; hooks registered after __init__ would
        # be skipped by the stacked path, so they send the meta-batch to the loop
        if self._chain is not None and not has_hooks(self.model):
            first = episodes[0]
            if all(self._chain.inputs(x[None]) is not None for x in (first.support_x, first.query_x)):
                return "stacked"
        return "vmap" if self.batch_tasks is True else None

    def _stacked_losses(self, episodes: list[Episode]) -> tuple[Tensor, Tensor, Tensor]:
        """Per-task query losses ``[T]``, query outputs and targets of the stacked path (:mod:`.stacked`)."""
        chain = self._chain
        assert chain is not None
        sx, sy, qx, qy = stack_episodes(episodes)
        support, query = chain.inputs(sx), chain.inputs(qx)
        assert support is not None and query is not None  # checked by _batched_kind
        trajectory = stacked_inner_loop(
            chain, dict(self.model.named_parameters()), support, sy,
            num_steps=self.num_inner_steps, step_size=self.step_size, inner_names=self.inner_names,
            first_order=self._first_order_now(), loss_fn=self.loss_fn,
        )  # fmt: skip
        losses, outs = self._query_loss(
            trajectory, lambda p, s: chain.forward(p, query), lambda out: per_task_losses(self.loss_fn, out, qy)
        )
        return losses, outs, qy

    def meta_loss(self, tasks: MetaBatch) -> StepOutput:
        """Mean query loss over a meta-batch (differentiable) and the mean query accuracy (or loss).

        Under ``torch.distributed`` this rank computes only its share, scaled so that gradients summed over ranks
        (:meth:`all_reduce_gradients`) equal the single-process gradient of the mean over the whole meta-batch.
        """
        return self._over_meta_batch(tasks, backward=False)

    @staticmethod
    def local_share(episodes: list[Episode]) -> list[Episode]:
        """This rank's contiguous share of the meta-batch (all of it in a single process)."""
        rank, size = world()
        if len(episodes) < size:
            raise ValueError(
                f"a meta-batch of {len(episodes)} tasks cannot be split over {size} ranks; "
                f"use meta_batch_size >= {size}"
            )
        return shard(episodes, rank, size)

    def meta_backward(self, tasks: MetaBatch) -> StepOutput:
        """Accumulate the meta-gradient of :meth:`meta_loss` task by task, freeing each task's graph at once.

        Same gradients as ``meta_loss(tasks).loss.backward()`` with the memory of one task's graph instead of the
        whole meta-batch's. Returns the (detached) meta-loss with ``backward_done=True``.
        """
        return self._over_meta_batch(tasks, backward=True)

    def _over_meta_batch(self, tasks: MetaBatch, backward: bool) -> StepOutput:
        episodes = meta_batch(tasks)
        n = len(episodes)
        kept: list[Tensor] = []
        loss_sum, metric_sum = 0.0, 0.0
        local = self.local_share(episodes)
        kind = self._batched_kind(local)
        if kind is not None:
            if kind == "stacked":
                losses, outs, targets = self._stacked_losses(local)
            else:
                losses, outs, targets = batched_task_losses(self._task_loss_and_output, local)
            if backward:
                (losses.sum() / n).backward()
            else:
                kept.append(losses.sum())
            loss_sum = float(losses.detach().sum())
            metric_sum = sum(self._metric(o, t) for o, t in zip(outs.detach(), targets, strict=True))
            local = []
        for ep in local:
            loss, metric = self.task_loss(ep)
            if backward:
                (loss / n).backward()
            else:
                kept.append(loss)
            loss_sum += float(loss.detach())
            metric_sum += metric
        loss_all, metric_all = all_reduce_sum([loss_sum, metric_sum])
        if self.training:
            self.iteration += 1
        if backward:
            return StepOutput(torch.tensor(loss_all / n), metric_all / n, backward_done=True)
        return StepOutput(torch.stack(kept).sum() / n, metric_all / n)

    def all_reduce_gradients(self) -> None:
        """Sum gradients across ranks (no-op in one process); called between ``backward`` and the step."""
        all_reduce_gradients(self.parameters())

    def meta_step(self, batch: MetaBatch) -> dict[str, float]:
        """One meta-update on ``batch`` (a meta-batch, or a single :class:`Episode` as a meta-batch of one); returns
        ``{"loss", "accuracy"}`` (``accuracy`` is the loss for regression)."""
        self.optimizer.zero_grad(set_to_none=True)
        out = self.meta_backward(batch)
        self.all_reduce_gradients()
        self.optimizer.step()
        return {"loss": float(out.loss.detach()), "accuracy": out.accuracy}

    def meta_train(
        self, tasks: Any, num_iterations: int = 1000, val_tasks: Sequence[Episode] | None = None, **kwargs: Any
    ) -> History:
        """Meta-train with the shared loop (progress, validation, checkpoints, resume; see ``training.fit``).

        ``tasks``: a sampler (``meta_batch_size`` episodes are drawn per iteration), an iterable of meta-batches
        (``EpisodeBatch`` or lists of episodes), or an iterable of single episodes, grouped ``meta_batch_size`` at a
        time (a last, smaller group is a smaller meta-batch).
        """
        stream = meta_batches(tasks, self.meta_batch_size)
        rank, _ = world()
        return fit(
            self, stream, num_episodes=num_iterations, optimizer=self.optimizer, val_episodes=val_tasks,
            step_fn=self.meta_backward, after_backward=self.all_reduce_gradients, main_process=rank == 0, **kwargs,
        )  # fmt: skip

    def training_step(self, batch: MetaBatch) -> StepOutput:
        return self.meta_backward(batch)

    # -- adaptation and evaluation ---------------------------------------------------------------------------

    def adapt(self, task_support: Any, num_steps: int = 5) -> nn.Module:
        """A new module fine-tuned on ``task_support`` (an ``(x, y)`` pair or an :class:`Episode`'s support).

        The meta-parameters (and the learner's buffers) are left bit-identical; meta-training can continue. The
        returned module's BatchNorm layers normalise with batch statistics in eval mode too, as every forward of
        MAML does (their running statistics are removed: ``use_batch_statistics``), so ``adapted.eval()`` and
        ``adapted.train()`` predict alike and what :meth:`predict` returns; feed it batches, not single examples.
        """
        ep = as_episode(task_support)
        check_task_inputs(ep.support_x, ep.support_y)
        with torch.no_grad():  # the inner loop still differentiates inside; no graph to theta is built
            final = _model_call(
                lambda: self.adapt_params(ep.support_x, ep.support_y, num_steps, first_order=True)[-1],
                f"support_x {tuple(ep.support_x.shape)} and support_y {tuple(ep.support_y.shape)}",
            )
        _check_finite_result(final.values(), self.lr_inner, num_steps)
        adapted = copy.deepcopy(self.model)
        with torch.no_grad():
            for name, p in adapted.named_parameters():
                p.copy_(final[name].detach())
        steps = self.num_inner_steps if num_steps is None else num_steps
        set_step(adapted, steps)  # per-step BatchNorm: the adapted module predicts with the query slot
        use_batch_statistics(adapted)
        return adapted

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, num_steps: int | None = None) -> Tensor:
        """Query outputs after adapting on the support set (no meta-gradient kept)."""
        check_task_inputs(support_x, support_y, query_x)
        with torch.no_grad():
            buffers = self._cloned_buffers()
            shapes = f"support_x {tuple(support_x.shape)}, support_y {tuple(support_y.shape)} and query_x"
            trajectory = _model_call(
                lambda: self.adapt_params(support_x, support_y, num_steps, first_order=True, buffers=buffers), shapes
            )
            out = _model_call(
                lambda: self._query_forward(trajectory[-1], buffers, query_x, len(trajectory) - 1), shapes
            )
        _check_finite_result([out], self.lr_inner, num_steps)
        return out

    def adaptation_curve(self, tasks: Iterable[Episode], steps: Sequence[int] = (0, 1, 2, 5, 10)) -> dict[int, Any]:
        """Query accuracy (or MSE) after each number of inner steps in ``steps``, from one inner loop per task."""
        wanted = sorted({check_non_negative_int("steps", s) for s in steps})
        per_step: dict[int, list[float]] = {s: [] for s in wanted}
        regression = False
        for ep in tasks:
            regression = not ep.is_classification
            with torch.no_grad():
                buffers = self._cloned_buffers()
                trajectory = self.adapt_params(
                    ep.support_x, ep.support_y, wanted[-1], first_order=True, buffers=buffers
                )
                for s in wanted:
                    out = self._query_forward(trajectory[s], buffers, ep.query_x, s)
                    per_step[s].append(
                        float(self.loss_fn(out, ep.query_y)) if regression else accuracy(out, ep.query_y)
                    )
        summarise = mse_from_episodes if regression else accuracy_from_episodes
        return {s: summarise(v) for s, v in per_step.items()}

    def evaluate(self, tasks: Iterable[Episode], num_steps: int | None = None) -> Accuracy | MeanSquaredError:
        """Query accuracy (classification) or MSE (regression) after adaptation, with 95% CI over tasks."""
        steps = self.num_inner_steps if num_steps is None else num_steps
        return self.adaptation_curve(tasks, (steps,))[steps]
