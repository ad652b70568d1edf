"""DARTS: differentiable architecture search by bilevel optimisation of a supernet (Liu, Simonyan & Yang 2019).

Notation: ``w`` the supernet weights, ``α`` the architecture logits, ``L_train``/``L_val`` the cross-entropy on a
training/validation batch, ``ξ`` the learning rate of the virtual weight step (DARTS uses the current weight
learning rate), ``μ`` the weight optimiser's momentum with buffer ``m``, ``λ`` its weight decay.

- Bilevel problem: ``min_α L_val(w*(α), α)`` s.t. ``w*(α) = argmin_w L_train(w, α)``; alternate one ``α`` step on
  a validation batch and one ``w`` step on a training batch.
- First order (DARTS 1st): ``g_α = ∇_α L_val(w, α)`` (treat ``w*`` as independent of ``α``).
- Second order (DARTS 2nd, eq. 6-8): one virtual step of the weight optimiser
  ``w' = w - ξ (μ m + ∇_w L_train(w, α) + λ w)`` and
  ``g_α = ∇_α L_val(w', α) - ξ ∇²_{α,w} L_train(w, α) v``, ``v = ∇_{w'} L_val(w', α)``, where the
  Hessian-vector product is the central difference
  ``∇²_{α,w} L_train(w, α) v ≈ [∇_α L_train(w⁺, α) - ∇_α L_train(w⁻, α)] / (2ε)``, ``w^± = w ± ε v``,
  ``ε = r / ||v||`` with ``r = 0.01``. :func:`exact_unrolled_hypergradient` differentiates through the virtual
  step instead (double backward), the reference the finite difference approximates.
- Genotype derivation and the anti-collapse options (DARTS- auxiliary skip, DARTS+ early stop on the number of
  skip connections) are described in :mod:`.supernet` and :class:`DARTS`.

Example:
    >>> darts = DARTS(model_size=16, num_operations=5, search_space="nas-bench-201", epochs=50)
    >>> genotype = darts.search(train_data=(x_train, y_train), val_data=(x_val, y_val))
    >>> model, curves = darts.retrain(genotype, train_data=(x_train, y_train), val_data=(x_test, y_test), epochs=20)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from meta_learning._checks import check_choice, check_finite_non_negative, check_positive_float, check_positive_int
from meta_learning.nas.darts_space import DARTSSpace
from meta_learning.nas.nb201 import NASBench201Space
from meta_learning.nas.ops import DARTS_OPS, NB201_OPS, check_operations
from meta_learning.nas.supernet import DARTSSearchNetwork, NB201SearchNetwork, split_parameters
from meta_learning.nas.train import Data, TrainResult, as_tensors, batches, evaluate_accuracy, train_classifier

Params = Mapping[str, Tensor]
Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def batch_loss(model: nn.Module, params: Params, batch: Batch, loss_fn: LossFn = F.cross_entropy) -> Tensor:
    """``loss_fn(model(x; params), y)`` with ``params`` (weights and/or ``α``) substituted functionally."""
    x, y = batch
    return loss_fn(functional_call(model, dict(params), (x,)), y)


def _grads(loss: Tensor, params: Params, create_graph: bool = False) -> dict[str, Tensor]:
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True, create_graph=create_graph)
    return {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads, strict=True)}


def first_order_hypergradient(
    model: nn.Module, weights: Params, alphas: Params, val_batch: Batch, loss_fn: LossFn = F.cross_entropy
) -> dict[str, Tensor]:
    """``∇_α L_val(w, α)`` for every tensor of ``alphas``."""
    return _grads(batch_loss(model, {**weights, **alphas}, val_batch, loss_fn), alphas)


def virtual_step(
    model: nn.Module,
    weights: Params,
    alphas: Params,
    train_batch: Batch,
    xi: float,
    momentum_buffers: Params | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss_fn: LossFn = F.cross_entropy,
    create_graph: bool = False,
) -> dict[str, Tensor]:
    """``w' = w - ξ (μ m + ∇_w L_train(w, α) + λ w)`` (a missing momentum buffer counts as zero)."""
    grads = _grads(batch_loss(model, {**weights, **alphas}, train_batch, loss_fn), weights, create_graph)
    out = {}
    for n, w in weights.items():
        step = grads[n] + weight_decay * w
        if momentum_buffers is not None and n in momentum_buffers:
            step = step + momentum * momentum_buffers[n]
        out[n] = w - xi * step
    return out


def second_order_hypergradient(
    model: nn.Module,
    weights: Params,
    alphas: Params,
    train_batch: Batch,
    val_batch: Batch,
    xi: float,
    *,
    momentum_buffers: Params | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    r: float = 0.01,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, Tensor]:
    """DARTS' second-order ``g_α`` with the finite-difference Hessian-vector product (module notes)."""
    fixed_alphas = {n: a.detach() for n, a in alphas.items()}  # the virtual step needs no graph to α
    w_virtual = virtual_step(model, {n: w.detach().requires_grad_(True) for n, w in weights.items()}, fixed_alphas,
                             train_batch, xi, momentum_buffers, momentum, weight_decay, loss_fn)  # fmt: skip
    w_prime = {n: w.detach().requires_grad_(True) for n, w in w_virtual.items()}
    g = _grads(batch_loss(model, {**w_prime, **alphas}, val_batch, loss_fn), {**alphas, **w_prime})
    v = {n: g[n] for n in w_prime}
    norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v.values()))  # type: ignore[arg-type]
    if float(norm) == 0.0:
        return {n: g[n] for n in alphas}
    eps = r / float(norm)
    with torch.no_grad():
        w_plus = {n: weights[n].detach() + eps * v[n] for n in weights}
        w_minus = {n: weights[n].detach() - eps * v[n] for n in weights}
    g_plus = _grads(batch_loss(model, {**w_plus, **alphas}, train_batch, loss_fn), alphas)
    g_minus = _grads(batch_loss(model, {**w_minus, **alphas}, train_batch, loss_fn), alphas)
    return {n: g[n] - xi * (g_plus[n] - g_minus[n]) / (2 * eps) for n in alphas}


def exact_unrolled_hypergradient(
    model: nn.Module,
    weights: Params,
    alphas: Params,
    train_batch: Batch,
    val_batch: Batch,
    xi: float,
    *,
    momentum_buffers: Params | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, Tensor]:
    """``d/dα L_val(w'(α), α)`` by automatic differentiation through the virtual step (exact; double backward)."""
    w = {n: t.detach().requires_grad_(True) for n, t in weights.items()}
    w_prime = virtual_step(model, w, alphas, train_batch, xi, momentum_buffers, momentum, weight_decay, loss_fn,
                           create_graph=True)  # fmt: skip
    return _grads(batch_loss(model, {**w_prime, **alphas}, val_batch, loss_fn), alphas)


def darts_step(
    model: nn.Module,
    weights: Mapping[str, nn.Parameter],
    alphas: Mapping[str, nn.Parameter],
    w_opt: torch.optim.Optimizer,
    a_opt: torch.optim.Optimizer,
    train_batch: Batch,
    val_batch: Batch,
    *,
    order: str = "second",
    grad_clip: float | None = 5.0,
    loss_fn: LossFn = F.cross_entropy,
) -> tuple[Tensor, Tensor]:
    """One DARTS iteration: an ``α`` step on ``val_batch``, then a ``w`` step on ``train_batch``.

    The second-order ``ξ``, ``μ``, ``λ`` and momentum buffers are read from ``w_opt`` (an SGD optimiser: its current
    learning rate, momentum, weight decay and state), so the virtual step is the step ``w_opt`` would take.
    Returns the training loss (detached) and the training outputs.
    """
    if order == "first":
        grads = first_order_hypergradient(model, weights, alphas, val_batch, loss_fn)
    else:
        group = w_opt.param_groups[0]
        buffers = {n: w_opt.state[p]["momentum_buffer"] for n, p in weights.items()
                   if w_opt.state.get(p, {}).get("momentum_buffer") is not None}  # fmt: skip
        grads = second_order_hypergradient(model, weights, alphas, train_batch, val_batch, xi=group["lr"],
                                           momentum_buffers=buffers, momentum=group.get("momentum", 0.0),
                                           weight_decay=group.get("weight_decay", 0.0), loss_fn=loss_fn)  # fmt: skip
    a_opt.zero_grad(set_to_none=True)
    for n, a in alphas.items():
        a.grad = grads[n].detach()
    a_opt.step()
    out = model(train_batch[0])
    loss = loss_fn(out, train_batch[1])
    w_opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(list(weights.values()), grad_clip)
    w_opt.step()
    return loss.detach(), out.detach()


@dataclass(frozen=True)
class DARTSEpoch:
    """One search epoch: supernet losses/accuracies (in ``[0, 1]``), the derived genotype, its skip count, the
    auxiliary-skip weight ``β`` at the epoch's end and the softmax of each ``α`` tensor."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    genotype: str
    skip_count: int
    aux_skip_weight: float
    alphas: dict[str, list[list[float]]]
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ANTI_COLLAPSE = (None, "darts-", "darts+")


class DARTS:
    """Differentiable architecture search on the DARTS or NAS-Bench-201 cell space.

    Args:
        model_size: the supernet's initial channels ``C`` (16 in both papers).
        num_operations: the number of candidate ops, checked against ``operations`` (the seed's call shape
            ``num_operations=len(ops)``).
        search_space: ``"darts"`` (normal + reduction cells, 8 ops), ``"nas-bench-201"`` (one cell, 5 ops), or a
            :class:`DARTSSpace`/:class:`NASBench201Space` (whose operations, and steps, are taken).
        operations: candidate ops (default all of the space's, ``none`` included).
        layers: cells of the DARTS supernet (8); cells_per_stage: cells per stage of the NB201 supernet (5).
        steps: intermediate nodes of a DARTS cell (4, or the given space's).
        num_classes, in_channels: the data.
        order: ``"first"`` or ``"second"`` (finite-difference second-order approximation).
        epochs, batch_size: search length and batch size (DARTS: 50, 64).
        w_lr, w_lr_min, w_momentum, w_weight_decay, grad_clip: SGD on ``w`` with cosine annealing (0.025, 0.001,
            0.9, 3e-4, 5).
        alpha_lr, alpha_betas, alpha_weight_decay: Adam on ``α`` (3e-4, (0.5, 0.999), 1e-3).
        anti_collapse: None; ``"darts-"`` (Chu et al. 2021: an auxiliary skip ``β x`` on every edge, ``β`` decayed
            linearly from 1 to 0 over the search); or ``"darts+"`` (Liang et al. 2019: stop the search at the end of
            the first epoch whose derived normal cell has ``max_skips`` or more skip connections).
        seed: seeds the supernet initialisation, ``α`` and the batch order.
        device: where the supernet lives.
        progress: tqdm bar over epochs (default: when attached to a terminal).

    After :meth:`search`: ``supernet``, ``history`` (one :class:`DARTSEpoch` per epoch), ``genotype``,
    ``stopped_early``, ``search_time_s``.
    """

    def __init__(
        self,
        model_size: int = 16,
        num_operations: int | None = None,
        *,
        search_space: str | DARTSSpace | NASBench201Space = "darts",
        operations: Sequence[str] | None = None,
        layers: int | None = None,
        cells_per_stage: int | None = None,
        steps: int | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        order: str = "second",
        epochs: int = 50,
        batch_size: int = 64,
        w_lr: float = 0.025,
        w_lr_min: float = 0.001,
        w_momentum: float = 0.9,
        w_weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        alpha_lr: float = 3e-4,
        alpha_betas: tuple[float, float] = (0.5, 0.999),
        alpha_weight_decay: float = 1e-3,
        anti_collapse: str | None = None,
        max_skips: int = 2,
        seed: int = 0,
        device: str | torch.device = "cpu",
        progress: bool | None = None,
    ) -> None:
        self.model_size = check_positive_int("model_size", model_size)
        if isinstance(search_space, str):
            kind = check_choice("search_space", search_space, ("darts", "nas-bench-201"))
        elif isinstance(search_space, (DARTSSpace, NASBench201Space)):
            kind = "darts" if isinstance(search_space, DARTSSpace) else "nas-bench-201"
        else:
            raise TypeError(f"search_space must be 'darts', 'nas-bench-201' or such a space, got {search_space!r}")
        is_darts = kind == "darts"
        all_ops = DARTS_OPS if is_darts else NB201_OPS
        if operations is None:
            if isinstance(search_space, str):
                operations = all_ops
            else:  # the space's genotype ops, plus 'none' for the DARTS supernet (as in DARTS)
                operations = ("none", *search_space.operations) if is_darts else search_space.operations
        self.operations = check_operations("operations", list(operations), all_ops)
        if num_operations is not None and check_positive_int("num_operations", num_operations) != len(self.operations):
            raise ValueError(f"num_operations={num_operations} but there are {len(self.operations)} operations "
                             f"{list(self.operations)}; pass operations= to choose them")  # fmt: skip
        if is_darts and cells_per_stage is not None:
            raise ValueError("cells_per_stage is a NAS-Bench-201 setting; the DARTS space takes layers=")
        if not is_darts and (layers is not None or steps is not None):
            raise ValueError(
                "layers and steps are DARTS-space settings; the NAS-Bench-201 space takes cells_per_stage="
            )
        if isinstance(search_space, DARTSSpace):
            if steps is not None and steps != search_space.steps:
                raise ValueError(f"steps={steps} but the given DARTSSpace has steps={search_space.steps}")
            steps = search_space.steps
        self.layers = check_positive_int("layers", layers if layers is not None else 8)
        self.cells_per_stage = check_positive_int("cells_per_stage", cells_per_stage or 5)
        self.steps = check_positive_int("steps", steps if steps is not None else 4)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        # the space of the derived genotypes, whose build() makes the retraining network
        self.space: DARTSSpace | NASBench201Space
        if is_darts:
            self.space = DARTSSpace([o for o in self.operations if o != "none"], self.steps, self.model_size,
                                    self.layers, self.num_classes, self.in_channels)  # fmt: skip
        else:
            self.space = NASBench201Space(self.operations, self.model_size, self.cells_per_stage, self.num_classes,
                                          self.in_channels)  # fmt: skip
        self.order = check_choice("order", order, ("first", "second"))
        self.epochs = check_positive_int("epochs", epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.w_lr = check_positive_float("w_lr", w_lr)
        self.w_lr_min = check_finite_non_negative("w_lr_min", w_lr_min)
        self.w_momentum = check_finite_non_negative("w_momentum", w_momentum)
        self.w_weight_decay = check_finite_non_negative("w_weight_decay", w_weight_decay)
        self.grad_clip = check_positive_float("grad_clip", grad_clip)
        self.alpha_lr = check_positive_float("alpha_lr", alpha_lr)
        self.alpha_betas = (float(alpha_betas[0]), float(alpha_betas[1]))
        self.alpha_weight_decay = check_finite_non_negative("alpha_weight_decay", alpha_weight_decay)
        if anti_collapse not in ANTI_COLLAPSE:
            raise ValueError(f"anti_collapse={anti_collapse!r} is not supported; choose one of {ANTI_COLLAPSE}")
        self.anti_collapse = anti_collapse
        self.max_skips = check_positive_int("max_skips", max_skips)
        self.seed = seed
        self.device = torch.device(device)
        self.progress = progress
        self.supernet: NB201SearchNetwork | DARTSSearchNetwork | None = None
        self.history: list[DARTSEpoch] = []
        self.genotype: Any = None
        self.stopped_early = False
        self.search_time_s = 0.0

    def build_supernet(self) -> NB201SearchNetwork | DARTSSearchNetwork:
        """A freshly initialised supernet (weights from ``seed`` in a forked RNG, ``α`` from a generator)."""
        gen = torch.Generator().manual_seed(self.seed)
        aux = self.anti_collapse == "darts-"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if isinstance(self.space, DARTSSpace):
                net: NB201SearchNetwork | DARTSSearchNetwork = DARTSSearchNetwork(
                    self.model_size, self.layers, self.steps, self.num_classes, self.in_channels, self.operations,
                    aux_skip=aux, generator=gen)  # fmt: skip
            else:
                net = NB201SearchNetwork(self.model_size, self.cells_per_stage, self.num_classes, self.in_channels,
                                         self.operations, aux_skip=aux, generator=gen)  # fmt: skip
        return net.to(self.device)

    def search(self, train_data: Data, val_data: Data, epochs: int | None = None) -> Any:
        """Run the bilevel search and return the derived genotype (an ``NB201Architecture`` or ``DARTSGenotype``).

        Args:
            train_data: trains the weights ``w`` (``(x, y)`` tensors or a dataset).
            val_data: trains the architecture ``α`` (a held-out split of the training data, as in DARTS).
            epochs: overrides the constructor's ``epochs``.
        """
        epochs = self.epochs if epochs is None else check_positive_int("epochs", epochs)
        x_tr, y_tr = as_tensors(train_data, "train_data")
        x_val, y_val = as_tensors(val_data, "val_data")
        net = self.supernet = self.build_supernet()
        weights, alphas = split_parameters(net)
        w_opt = torch.optim.SGD(weights.values(), lr=self.w_lr, momentum=self.w_momentum,
                                weight_decay=self.w_weight_decay)  # fmt: skip
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=epochs, eta_min=self.w_lr_min)
        a_opt = torch.optim.Adam(alphas.values(), lr=self.alpha_lr, betas=self.alpha_betas,
                                 weight_decay=self.alpha_weight_decay)  # fmt: skip
        gen = torch.Generator().manual_seed(self.seed)
        steps_per_epoch = math.ceil(x_tr.shape[0] / self.batch_size)
        total, done = epochs * steps_per_epoch, 0
        self.history, self.stopped_early = [], False
        start = time.perf_counter()
        bar = tqdm(range(epochs), disable=None if self.progress is None else not self.progress, leave=False)
        for epoch in bar:
            net.train()
            val_iter: Iterator[Tensor] = iter(())
            loss_sum, correct, seen = 0.0, 0, 0
            for idx in batches(x_tr.shape[0], self.batch_size, gen):
                vidx = next(val_iter, None)
                if vidx is None:
                    val_iter = batches(x_val.shape[0], self.batch_size, gen)
                    vidx = next(val_iter)
                if self.anti_collapse == "darts-":
                    net.aux_skip_weight = 1.0 - done / total
                train_batch = (x_tr[idx].to(self.device), y_tr[idx].to(self.device))
                val_batch = (x_val[vidx].to(self.device), y_val[vidx].to(self.device))
                loss, logits = darts_step(net, weights, alphas, w_opt, a_opt, train_batch, val_batch,
                                          order=self.order, grad_clip=self.grad_clip)  # fmt: skip
                loss_sum += float(loss) * idx.numel()
                correct += int((logits.argmax(-1) == train_batch[1]).sum())
                seen += idx.numel()
                done += 1
            sched.step()
            geno = net.genotype()
            record = DARTSEpoch(epoch, loss_sum / seen, correct / seen, evaluate_accuracy(net, x_val, y_val),
                                str(geno), net.skip_count(), net.aux_skip_weight,
                                {n: F.softmax(a.detach(), -1).tolist() for n, a in alphas.items()},
                                time.perf_counter() - start)  # fmt: skip
            self.history.append(record)
            bar.set_postfix(loss=f"{record.train_loss:.3f}", val=f"{record.val_accuracy:.3f}", skips=record.skip_count)
            if self.anti_collapse == "darts+" and record.skip_count >= self.max_skips and epoch < epochs - 1:
                self.stopped_early = True
                break
        bar.close()
        net.aux_skip_weight = 0.0
        self.search_time_s = time.perf_counter() - start
        self.genotype = net.genotype()
        return self.genotype

    def retrain(
        self, genotype: Any, train_data: Data, val_data: Data | None = None, *, epochs: int = 20,
        seed: int | None = None, build_kwargs: Mapping[str, Any] | None = None, **train_kwargs: Any,
    ) -> tuple[nn.Module, TrainResult]:  # fmt: skip
        """Train the network of ``genotype`` from scratch; returns ``(model, curves)``.

        ``build_kwargs`` go to the space's ``build`` (``channels``, ``layers`` / ``cells_per_stage``, ...; the
        defaults are this search's ``model_size``, data shape and skeleton); ``train_kwargs`` to
        :func:`~meta_learning.nas.train.train_classifier`.
        """
        seed = self.seed if seed is None else seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.space.build(genotype, **(build_kwargs or {}))
        result = train_classifier(model, train_data, val_data, epochs=epochs, seed=seed, device=self.device,
                                  **train_kwargs)  # fmt: skip
        return model, result
