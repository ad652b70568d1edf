"""The interface shared by metric-based few-shot learners (Prototypical and Relation networks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from meta_learning._checks import check_choice, check_tensors
from meta_learning._modes import eval_mode
from meta_learning.config import BATCH_NORM_MODES
from meta_learning.data.episode import Episode
from meta_learning.metrics import Accuracy, accuracy, accuracy_from_episodes
from meta_learning.training.loop import History, StepOutput, fit

_EPISODE_NAMES = ("support_x", "support_y", "query_x")
_SEED_NAMES = ("support_samples", "support_labels", "query_samples")


def check_support_query(
    support_x: Any, support_y: Any, query_x: Any, names: tuple[str, str, str] = _EPISODE_NAMES, dense: bool = True
) -> Tensor:
    """Validate one few-shot input triple and return ``support_y`` as int64.

    ``support_x [S, ...]`` (S >= 1) and ``query_x [M, ...]`` (M >= 0) must be tensors of one dtype and per-example
    shape, finite if floating; ``support_y [S]`` integer labels, ``0..N-1`` with an example of each when ``dense``.
    ``names`` are the caller's argument names, used in the messages.
    """
    sx_name, sy_name, qx_name = names
    check_tensors(**{sx_name: support_x, sy_name: support_y, qx_name: query_x})
    if support_x.dim() < 2 or support_x.shape[0] == 0:
        raise ValueError(f"{sx_name} has shape {tuple(support_x.shape)}; expected [S, ...] with S >= 1 examples")
    if query_x.shape[1:] != support_x.shape[1:]:
        raise ValueError(
            f"{qx_name} has examples of shape {tuple(query_x.shape[1:])} but {sx_name} has {tuple(support_x.shape[1:])}"
        )
    if query_x.dtype != support_x.dtype:
        raise TypeError(f"{qx_name} has dtype {query_x.dtype} but {sx_name} has {support_x.dtype}; use one dtype")
    if support_y.is_floating_point() or support_y.is_complex() or support_y.dtype == torch.bool:
        raise TypeError(f"{sy_name} must hold integer class labels, got dtype {support_y.dtype}")
    if support_y.shape != support_x.shape[:1]:
        raise ValueError(
            f"{sy_name} has shape {tuple(support_y.shape)} but {sx_name} has {support_x.shape[0]} examples; "
            "give one integer label per support example"
        )
    labels = support_y.long()
    if dense:
        present = torch.unique(labels).tolist()
        if present != list(range(len(present))):
            raise ValueError(
                f"{sy_name} must hold the labels 0..N-1 with at least one example of each, got classes {present}"
            )
    return labels


def embed_pair(encoder: Callable[[Tensor], Tensor], support_x: Tensor, query_x: Tensor) -> Tensor:
    """``encoder(cat([support_x, query_x]))`` (one batch, so BatchNorm sees both), naming the inputs when a
    backbone refuses their shape or dtype."""
    try:
        return encoder(torch.cat([support_x, query_x], dim=0))
    except (ValueError, TypeError) as err:  # the library's backbones validate their input
        raise type(err)(
            f"support_x/query_x with examples of shape {tuple(support_x.shape[1:])} and dtype {support_x.dtype} do "
            f"not fit the encoder: {err}"
        ) from err


@contextmanager
def episode_batch_statistics(module: nn.Module) -> Iterator[None]:
    """Within the block, every BatchNorm of ``module`` normalises with the statistics of the batch it is given,
    whatever the module's mode, and neither reads nor updates its running statistics (restored on exit).

    Evaluating a few-shot learner this way is *transductive*: a query's prediction depends on the other images of
    its episode (the setting Nichol et al. 2018 call transductive). It is how the reference code of
    MAML (Finn et al. 2017) and of Relation Networks (Sung et al. 2018, whose modules are never put in eval mode)
    computes its test accuracy; Snell et al.'s ProtoNet code evaluates in eval mode (running statistics).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    try:
        for m in norms:  # training mode without tracking: batch statistics, running buffers passed as None
            m.training, m.track_running_stats = True, False
        yield
    finally:
        for m, (training, tracking) in zip(norms, saved, strict=True):
            m.training, m.track_running_stats = training, tracking


def _episode_parts(episode: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if not isinstance(episode, Episode):
        raise TypeError(f"expected an Episode, got {type(episode).__name__}")
    return episode.support_x, episode.support_y, episode.query_x, episode.query_y


class EpisodicLearner(nn.Module):
    """Base class: a learner that maps ``(support_x, support_y, query_x)`` to query logits.

    Subclasses implement :meth:`predict` (labels ``0..N-1``) and may override :meth:`loss`. The seed's names
    (``train_episodes``, ``classify``) and the shared ones (``meta_train``, ``predict``, ``evaluate``) are here.
    """

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Query logits ``[M, N]`` for support labels in ``0..N-1``."""
        raise NotImplementedError

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Training loss of ``logits [M, N]`` against ``query_y [M]`` (cross-entropy by default)."""
        return nn.functional.cross_entropy(logits, query_y)

    def training_step(self, episode: Episode) -> StepOutput:
        """Loss and accuracy on one episode's query set (used by the training loop)."""
        sx, sy, qx, qy = _episode_parts(episode)
        logits = self.predict(sx, sy, qx)
        return StepOutput(self.loss(logits, qy), accuracy(logits.detach(), qy))

    def classify(self, query_samples: Tensor, support_samples: Tensor, support_labels: Tensor) -> Tensor:
        """Predicted label of every query sample, in the label space of ``support_labels``.

        ``support_labels`` may hold any integer ids in any order (e.g. original class ids); the prediction
        for each query is one of them.
        """
        classes, logits = self._logits_any_labels(query_samples, support_samples, support_labels)
        return classes[logits.argmax(dim=-1)]

    def predict_proba(self, query_samples: Tensor, support_samples: Tensor, support_labels: Tensor) -> Tensor:
        """Class probabilities ``[M, N]``; column ``j`` is the ``j``-th smallest id in ``support_labels``."""
        _, logits = self._logits_any_labels(query_samples, support_samples, support_labels)
        return logits.softmax(dim=-1)

    def _logits_any_labels(self, query: Tensor, support: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(labels, (list, tuple)):
            try:
                labels = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f"support_labels must be integer class ids, got {labels!r:.80}") from err
        labels = check_support_query(support, labels, query, names=_SEED_NAMES, dense=False)
        classes, dense = torch.unique(labels, sorted=True, return_inverse=True)
        with torch.no_grad(), eval_mode(self):
            logits = self.predict(support, dense.to(support.device), query)
        return classes.to(logits.device), logits

    @torch.no_grad()
    def evaluate(self, episodes: Iterable[Episode], batch_norm: str = "running") -> Accuracy:
        """Mean query accuracy with 95% CI over ``episodes`` (eval mode, no gradients); every episode needs a query.

        ``batch_norm="running"`` (default, inductive: each query is classified on its own) normalises with the
        running statistics gathered in training; ``"episode"`` with the statistics of each episode's images
        (transductive, the protocol of MAML's and Relation Networks' reference code; see
        :func:`episode_batch_statistics`). The running statistics are left unchanged either way.
        """
        check_choice("batch_norm", batch_norm, BATCH_NORM_MODES)
        with eval_mode(self):
            device = next(self.parameters()).device
            accs = []
            with episode_batch_statistics(self) if batch_norm == "episode" else nullcontext():
                for i, ep in enumerate(episodes):
                    ep = ep.to(device)
                    if ep.query_y.numel() == 0:
                        raise ValueError(
                            f"episodes[{i}] has no query examples; accuracy needs at least one per episode"
                        )
                    accs.append(accuracy(self.predict(ep.support_x, ep.support_y, ep.query_x), ep.query_y))
        if not accs:
            raise ValueError("episodes is empty; evaluate needs at least one episode")
        return accuracy_from_episodes(accs)

    def meta_train(self, episodes: Any, **kwargs: Any) -> History:
        """Train on episodes with the shared episodic loop; see :func:`meta_learning.training.fit`.

        ``episodes`` is an :class:`~meta_learning.data.EpisodeSampler` (or anything with ``sample()``) or an
        iterable of :class:`Episode`. Keyword arguments go to ``fit`` (``num_episodes``, ``lr``,
        ``val_episodes``, ``run_dir``, ``progress``, ...).
        """
        return fit(self, episodes, **kwargs)

    def train_episodes(self, episodes: Any, **kwargs: Any) -> History:
        """The seed's name for :meth:`meta_train`."""
        return self.meta_train(episodes, **kwargs)
