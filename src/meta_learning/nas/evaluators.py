"""Evaluators: map an architecture to a score that the search maximises.

- :class:`TabularEvaluator` looks the architecture up in the NAS-Bench-201 table (:class:`NASBench201Table`, the
  CIFAR-10 test accuracy after 200 epochs, in percent, of each of the 15,625 cells; read in place from
  ``$META_LEARNING_DATA/nats_bench_tss/``).
- :class:`TrainingEvaluator` builds the network and trains it briefly, stopping a run early when its validation
  curve, extrapolated by :class:`~meta_learning.optim.LearningCurveAnalyzer`, is unlikely to beat the best run so far
  (Domhan, Springenberg & Hutter 2015). The score is the validation accuracy of the last epoch run.
- :class:`FunctionEvaluator` wraps a user function ``arch -> float``.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from meta_learning._checks import check_positive_float, check_positive_int
from meta_learning._io import data_root, sha256_file
from meta_learning.nas.nb201 import NB201Architecture
from meta_learning.nas.space import ArchitectureSpace
from meta_learning.nas.train import Data, TrainResult, as_tensors, train_classifier


@runtime_checkable
class Evaluator(Protocol):
    """``evaluator(arch) -> score`` (higher is better; None or NaN marks a failed evaluation)."""

    def __call__(self, arch: Any) -> float | None: ...


class NASBench201Table:
    """The NATS-Bench topology table: CIFAR-10 test accuracy (%) after 200 epochs of all 15,625 cells.

    Args:
        root: data root holding ``nats_bench_tss/`` (default ``$META_LEARNING_DATA``).
        path: the CSV itself (overrides ``root``).
        verify: check the file's sha256 against the known export (a corrupt or different file raises).

    Row ``k`` of the file is NATS-Bench architecture index ``k`` (:meth:`index`).

    Example:
        >>> table = NASBench201Table()
        >>> arch, acc = table.best()          # the benchmark optimum, 94.37
    """

    FOLDER = "nats_bench_tss"
    FILENAME = "nats_bench_tss_cifar10_test_acc_200ep.csv"
    SHA256 = "7a1497963ddbefcfb41bbaca629b54a8015b3e53f38ab449c7640a29ace1e3e4"
    HEADER = ("ArchitectureString", "CIFAR10TestAccuracy200Epochs")
    NUM_ARCHITECTURES = 15_625

    def __init__(
        self, root: str | os.PathLike[str] | None = None, path: str | os.PathLike[str] | None = None,
        verify: bool = True,
    ) -> None:  # fmt: skip
        self.path = Path(path) if path is not None else data_root(root) / self.FOLDER / self.FILENAME
        if not self.path.is_file():
            raise FileNotFoundError(
                f"NAS-Bench-201 table not found at {str(self.path)!r}; set META_LEARNING_DATA (or root=) to the "
                f"folder that holds {self.FOLDER}/{self.FILENAME}, or pass path="
            )
        if verify and (digest := sha256_file(self.path)) != self.SHA256:
            raise ValueError(f"{str(self.path)!r} has sha256 {digest}, expected {self.SHA256}; the file is corrupt "
                             "or a different export (pass verify=False to read it anyway)")  # fmt: skip
        strings: list[str] = []
        accuracies: dict[str, float] = {}
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = tuple(next(reader, ()))
            if header != self.HEADER:
                raise ValueError(f"{str(self.path)!r} has header {header}; expected {self.HEADER}")
            for line, row in enumerate(reader, start=2):
                if len(row) != 2:
                    raise ValueError(f"{str(self.path)!r} line {line} has {len(row)} fields; expected 2")
                arch = str(NB201Architecture.from_string(row[0]))  # canonical form, and validates the string
                if arch in accuracies:
                    raise ValueError(f"{str(self.path)!r} line {line} repeats architecture {arch}")
                acc = float(row[1])
                if not (math.isfinite(acc) and 0.0 <= acc <= 100.0):
                    raise ValueError(f"{str(self.path)!r} line {line}: accuracy {row[1]!r} is not in [0, 100]")
                strings.append(arch)
                accuracies[arch] = acc
        if len(strings) != self.NUM_ARCHITECTURES and verify:
            raise ValueError(f"{str(self.path)!r} lists {len(strings)} architectures; expected "
                             f"{self.NUM_ARCHITECTURES}")  # fmt: skip
        self._strings = strings
        self._acc = accuracies
        self._index = {s: i for i, s in enumerate(strings)}

    def _key(self, arch: NB201Architecture | str) -> str:
        if not isinstance(arch, (str, NB201Architecture)):
            raise TypeError(f"expected an NB201Architecture or its string, got {type(arch).__name__}")
        key = str(NB201Architecture.from_string(arch) if isinstance(arch, str) else arch)
        if key not in self._acc:
            raise KeyError(f"architecture {key} is not in the table {str(self.path)!r}")
        return key

    def accuracy(self, arch: NB201Architecture | str) -> float:
        """CIFAR-10 test accuracy (%) of ``arch`` after 200 epochs (mean over the benchmark's seeds)."""
        return self._acc[self._key(arch)]

    def index(self, arch: NB201Architecture | str) -> int:
        """NATS-Bench topology index of ``arch``."""
        return self._index[self._key(arch)]

    def best(self) -> tuple[NB201Architecture, float]:
        """The architecture with the highest accuracy and that accuracy."""
        key = max(self._strings, key=self._acc.__getitem__)
        return NB201Architecture.from_string(key), self._acc[key]

    def __len__(self) -> int:
        return len(self._strings)

    def __iter__(self) -> Iterator[tuple[NB201Architecture, float]]:
        for s in self._strings:
            yield NB201Architecture.from_string(s), self._acc[s]

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, (str, NB201Architecture)) and str(arch) in self._acc

    def __repr__(self) -> str:
        return f"NASBench201Table({len(self)} architectures, path={str(self.path)!r})"


class TabularEvaluator:
    """Score = the table's accuracy (%) of the architecture; ``queries`` counts lookups."""

    def __init__(self, table: NASBench201Table | None = None, root: str | os.PathLike[str] | None = None) -> None:
        self.table = table if table is not None else NASBench201Table(root)
        self.queries = 0

    def __call__(self, arch: NB201Architecture | str) -> float:
        self.queries += 1
        return self.table.accuracy(arch)


class FunctionEvaluator:
    """Wrap a user function ``arch -> float``, checking that it returns a real number (or None for a failure)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"evaluator must be callable arch -> float, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, arch: Any) -> float | None:
        value = self.fn(arch)
        if value is None:
            return None
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"the evaluator returned {value!r} ({type(value).__name__}); return a real number or "
                            "None for a failed evaluation")  # fmt: skip
        return float(value)


@dataclass(frozen=True)
class TrainingRecord:
    """One training evaluation: the validation curve, whether the curve rule stopped it, and the prediction of
    the final value it was stopped on (None when it ran to the end)."""

    architecture: str
    score: float
    val_accuracy: tuple[float, ...]
    stopped_early: bool
    predicted_final: float | None
    wall_time_s: float


class TrainingEvaluator:
    """Train each architecture for a few epochs and score it by validation accuracy (in ``[0, 1]``).

    Args:
        space: builds the network (``space.build(arch, **build_kwargs)``) and names architectures.
        train_data, val_data: ``(x, y)`` tensors or datasets (see :func:`~meta_learning.nas.train.as_tensors`).
        epochs: training epochs of a full run (the horizon of the curve extrapolation).
        early_stopping: stop a run when ``P(final accuracy > best so far) < threshold`` under the curve model
            (needs ``min_epochs`` points and a finished run to compare with).
        threshold, min_epochs: the stopping rule's probability and the points it needs.
        build_kwargs: passed to ``space.build`` (e.g. ``channels=8``).
        seed: seeds initialisation (``torch.manual_seed`` inside a forked RNG state) and batch order.
        train_kwargs: SGD settings of :func:`~meta_learning.nas.train.train_classifier` (``lr``, ``batch_size``...).
    """

    def __init__(
        self,
        space: ArchitectureSpace,
        train_data: Data,
        val_data: Data,
        *,
        epochs: int = 10,
        early_stopping: bool = True,
        threshold: float = 0.05,
        min_epochs: int = 4,
        build_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        **train_kwargs: Any,
    ) -> None:
        self.space = space
        self.train = as_tensors(train_data, "train_data")
        self.val = as_tensors(val_data, "val_data")
        self.epochs = check_positive_int("epochs", epochs)
        self.early_stopping = bool(early_stopping)
        self.threshold = check_positive_float("threshold", threshold)
        if self.threshold >= 1:
            raise ValueError(f"threshold={threshold} must be in (0, 1)")
        self.min_epochs = check_positive_int("min_epochs", min_epochs)
        self.build_kwargs = dict(build_kwargs or {})
        self.seed = seed
        self.device = device
        self.train_kwargs = train_kwargs
        # the curve model of the search issue (it lives in ``optim``); imported here so that ``import
        # meta_learning.nas`` does not load the optimisation package
        from meta_learning.optim.analyzer import LearningCurveAnalyzer

        self.analyzer = LearningCurveAnalyzer(mode="max", bounds=(0.0, 1.0), min_points=min_epochs)
        self.best: float | None = None
        self.records: list[TrainingRecord] = []

    def __call__(self, arch: Any) -> float:
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.space.build(arch, **self.build_kwargs)
        prediction: dict[str, float] = {}

        def stop(result: TrainResult) -> bool:
            curve = result.val_accuracy
            if not self.early_stopping or self.best is None or len(curve) < self.min_epochs:
                return False
            if not self.analyzer.should_stop(curve, horizon=self.epochs, best=self.best, threshold=self.threshold):
                return False
            prediction["mean"] = self.analyzer.predict(curve, at=self.epochs).mean
            return True

        result = train_classifier(model, self.train, self.val, epochs=self.epochs, seed=self.seed,
                                  device=self.device, on_epoch=stop, **self.train_kwargs)  # fmt: skip
        score = result.val_accuracy[-1]
        if not result.stopped_early:
            self.best = score if self.best is None else max(self.best, score)
        self.records.append(TrainingRecord(self.space.to_string(arch), score, tuple(result.val_accuracy),
                                           result.stopped_early, prediction.get("mean"),
                                           time.perf_counter() - start))  # fmt: skip
        return score
