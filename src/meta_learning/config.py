"""Typed experiment configuration: frozen dataclasses loaded from YAML, JSON or a nested dict.

``from_dict`` checks each value against its field's annotation and refuses unknown keys, naming the closest
valid one; each dataclass checks its ranges in ``__post_init__``. YAML is read with ``yaml.safe_load`` only.

Example:
    >>> apply_overrides(load_config({"ewc": {"lambda": 500}}), ["train.lr=0.01"]).train.lr
    0.01
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import types
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints, overload

import yaml

from meta_learning import _checks
from meta_learning._io import atomic_write_text

__all__ = [
    "DataConfig", "EWCConfig", "EvalConfig", "ExperimentConfig", "LearnerConfig", "LoRAConfig", "MAMLConfig",
    "ModelConfig", "TrainConfig", "apply_overrides", "from_dict", "load_config", "save_config", "to_dict",
]  # fmt: skip

T = TypeVar("T")

_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # PyYAML (YAML 1.1) reads `1e-3` as a str
_OVERRIDE_FORM = "'section.key=value', e.g. 'train.lr=0.01'"


# --- Generic machinery: dataclass <-> nested dict, driven by the annotations
def _fields(cls: type) -> tuple[tuple[dataclasses.Field[Any], str, Any], ...]:
    """``(field, public key, resolved annotation)`` per field; the public key is the field's alias if any."""
    hints = get_type_hints(cls)  # annotations are strings under `from __future__ import annotations`
    return tuple((f, f.metadata.get("alias", f.name), hints[f.name]) for f in dataclasses.fields(cls))


def _unknown_key(dotted: str, key: object, valid: Collection[str]) -> ValueError:
    wanted = str(key).strip().lower().replace("-", "_").replace(" ", "_")  # ' fisher_scale' -> 'fisher_scale'
    close = [wanted] if wanted in valid else difflib.get_close_matches(wanted, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return ValueError(f"unknown key {dotted!r}; {hint}")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    args = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    return " | ".join("None" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)


def _convert(tp: Any, value: Any, path: str, shown: Any = None) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it; ``shown`` is the type named in errors."""
    wrong = TypeError(f"{path}={value!r} ({type(value).__name__}) but expected {_type_name(shown or tp)}")
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) != 1:
            raise TypeError(f"{path}: annotation {tp} is not supported; use X or X | None")
        return _convert(options[0], value, path, tp)  # a nested section's own errors pass through as they are
    if origin is Literal:
        if not any(type(value) is type(a) for a in args):  # type(): True must not pass for Literal[1]
            raise wrong
        _checks.check_choice(path, value, args)
        return value
    if origin is tuple and args[-1:] == (Ellipsis,) and isinstance(value, (list, tuple)):
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return from_dict(tp, value, path=path)  # type: ignore[arg-type]
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (isinstance(value, bool) and tp is not bool) or not isinstance(value, origin or tp):  # bool is an int
        raise wrong
    return value


def _check_fields(cfg: Any) -> None:
    """Type-check each field of a config dataclass, normalising in place (``int`` -> ``float``)."""
    for f, key, tp in _fields(type(cfg)):
        object.__setattr__(cfg, f.name, _convert(tp, getattr(cfg, f.name), key))


def from_dict(cls: type[T], data: Mapping[str, Any], *, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` (recursively) from a mapping, checking every key and value.

    Fields may be annotated ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``X | None``, ``tuple[X, ...]``,
    ``Literal[...]`` or another such dataclass. Keys are field names or their ``metadata["alias"]``; absent keys
    take the field's default; ``path`` is the dotted prefix for error messages, set when recursing.

    Raises:
        ValueError: an unknown key (naming the closest valid one), a missing key, a value out of range.
        TypeError: a value of the wrong type, naming the dotted key, the value and the expected type.

    Example:
        >>> from_dict(EWCConfig, {"lambda": 10}).ewc_lambda
        10.0
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{path or 'config'} must be a mapping, got {type(data).__name__} ({data!r})")
    by_key = {key: spec for spec in _fields(cls) for key in (spec[0].name, spec[1])}
    prefix = f"{path}." if path else ""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in by_key:
            raise _unknown_key(f"{prefix}{key}", key, by_key.keys())
        f, public, tp = by_key[key]
        if f.name in kwargs:
            raise ValueError(f"'{prefix}{public}' is given as both {public!r} and {f.name!r}; keep one")
        kwargs[f.name] = _convert(tp, value, f"{prefix}{key}")
    for f, public, _ in _fields(cls):
        if f.name not in kwargs and f.default is f.default_factory is dataclasses.MISSING:
            raise ValueError(f"missing key '{prefix}{public}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # range checks name the field, not the section it sits in
        raise type(err)(f"{path}: {err}" if path else str(err)) from err


def as_section(cls: type[T], value: T | Mapping[str, Any], name: str) -> T:
    """``value`` as the section dataclass ``cls``: an instance is returned as is, a mapping (the seed's nested-dict
    form, e.g. ``{"lambda": 1000, "fisher_scale": 1.0}``) is validated by :func:`from_dict` under the key ``name``.

    Raises:
        TypeError: ``value`` is neither.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return from_dict(cls, value, path=name)
    raise TypeError(f"{name} must be a {cls.__name__} or a mapping of its keys, got {type(value).__name__}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (aliases as keys, tuples as lists); ``from_dict``'s inverse.

    Example:
        >>> to_dict(EWCConfig())
        {'lambda': 1000.0, 'fisher_scale': 1.0}
    """

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_dict(value)
        return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value

    return {key: plain(getattr(cfg, f.name)) for f, key, _ in _fields(type(cfg))}


def _set_path(node: dict[str, Any], cls: Any, keys: list[str], value: Any, item: str) -> None:
    """Set ``value`` at ``keys`` in ``node`` (``to_dict`` of a ``cls``), writing field names as aliases."""
    for depth, key in enumerate(keys):
        spec = next((s for s in _fields(cls) if key in (s[0].name, s[1])), None) if cls else None
        public = spec[1] if spec else key  # an unknown key stays as typed: from_dict reports it with a hint
        if depth == len(keys) - 1:
            node[public] = value
            return
        if node.get(public) is None:
            node[public] = {}  # an absent optional section (`maml: None`) starts from its defaults
        if not isinstance(node[public], dict):
            raise ValueError(f"override {item!r}: {'.'.join(keys[: depth + 1])!r} is a value, not a section")
        hint = spec[2] if spec else None  # the section's dataclass, also inside `MAMLConfig | None`
        cls = next((a for a in (hint, *get_args(hint)) if dataclasses.is_dataclass(a)), None)
        node = node[public]


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Return a copy of ``cfg`` with ``dotted.key=value`` overrides applied, then re-validated as a whole.

    Values are parsed with ``yaml.safe_load`` (``0.01`` a float, ``cosine`` a string, ``null`` None). Errors are
    those of ``from_dict``, and a ``ValueError`` for an override without ``=``.

    Example:
        >>> apply_overrides(ExperimentConfig(), ["learner.distance_metric=cosine"]).learner.distance_metric
        'cosine'
    """
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a list of strings like {_OVERRIDE_FORM}, not one string")
    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        keys = [k.strip() for k in key.split(".")]
        if not sep or not all(keys):
            raise ValueError(f"override {item!r} is not of the form {_OVERRIDE_FORM}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({err})") from err
        _set_path(data, type(cfg), keys, value, item)
    return from_dict(type(cfg), data)


# --- Configuration sections
def _check_in(name: str, value: float, ok: bool, interval: str) -> None:
    if not ok:  # `ok` is a chained comparison, so nan fails it too
        raise ValueError(f"{name}={value!r} but it must lie in {interval}")


@dataclass(frozen=True)
class DataConfig:
    """Benchmark and episodes: ``*_way`` classes, ``*_shot`` support and ``*_query`` query examples each."""

    dataset: Literal["omniglot", "miniimagenet", "image_folder"] = "omniglot"
    root: str | None = None
    download: bool = False
    image_size: int = 28
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    train_way: int = 60
    train_shot: int = 1
    train_query: int = 5
    test_way: int = 5
    test_shot: int = 1
    test_query: int = 15
    train_shift: int = 0  # training images moved by random whole pixels in [-train_shift, train_shift] (0: none)

    def __post_init__(self) -> None:
        _check_fields(self)
        for name in ("image_size", "train_way", "train_shot", "train_query", "test_way", "test_shot", "test_query"):
            _checks.check_positive_int(name, getattr(self, name))
        _checks.check_non_negative_int("train_shift", self.train_shift)
        if self.train_shift >= self.image_size:
            raise ValueError(f"train_shift={self.train_shift} must be smaller than image_size={self.image_size}")
        if self.dataset == "image_folder" and self.root is None:
            raise ValueError("dataset='image_folder' needs root=<folder with one sub-folder per split>")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone architecture; relation networks build their own modules from these sizes."""

    backbone: Literal["conv4", "resnet12", "mlp"] = "conv4"
    in_channels: int = 1
    hidden_channels: int = 64

    def __post_init__(self) -> None:
        _check_fields(self)
        _checks.check_positive_int("in_channels", self.in_channels)
        _checks.check_positive_int("hidden_channels", self.hidden_channels)


MAML_FAMILY = ("maml", "anil", "metasgd")  # the learner names that read the ``maml`` section
BatchNormMode = Literal["running", "episode"]  # how few-shot learners' BatchNorm normalises at test time
BATCH_NORM_MODES: tuple[str, ...] = get_args(BatchNormMode)


@dataclass(frozen=True)
class LearnerConfig:
    """Few-shot learner and its own options (``relation_*`` apply to ``relationnet`` only; the MAML family reads
    the ``maml`` section)."""

    name: Literal["protonet", "relationnet", "maml", "anil", "metasgd"] = "protonet"
    distance_metric: Literal["euclidean", "cosine"] = "euclidean"
    relation_loss: Literal["mse", "cross_entropy"] = "mse"
    relation_hidden: int = 8

    def __post_init__(self) -> None:
        _check_fields(self)
        _checks.check_positive_int("relation_hidden", self.relation_hidden)


@dataclass(frozen=True)
class TrainConfig:
    """Meta-training: ``lr`` times ``lr_decay`` every ``lr_decay_every`` episodes (``lr_schedule: step``) or a
    cosine decay from ``lr`` to 0 over ``num_episodes`` (``lr_schedule: cosine``); ``patience`` in evals.
    ``precision: bf16`` trains with bfloat16 autocast (mixed precision); ``channels_last`` stores the model's
    4-D weights channels-last (faster convolutions on CPU)."""

    num_episodes: int = 20000
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_every: int | None = 2000
    lr_decay: float = 0.5
    lr_schedule: Literal["step", "cosine"] = "step"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    eval_every: int = 500
    val_episodes: int = 200
    patience: int | None = None
    max_time_s: float | None = None
    checkpoint_every: int = 500
    progress: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.max_time_s is not None:
            _checks.check_positive_float("max_time_s", self.max_time_s)
        for name in ("num_episodes", "eval_every", "val_episodes", "checkpoint_every", "lr_decay_every", "patience"):
            if getattr(self, name) is not None:  # only the last two may be None, as their annotations say
                _checks.check_positive_int(name, getattr(self, name))
        _checks.check_positive_float("lr", self.lr)
        _check_in("weight_decay", self.weight_decay, 0 <= self.weight_decay < math.inf, "[0, inf)")
        _check_in("lr_decay", self.lr_decay, 0 < self.lr_decay <= 1, "(0, 1]")


@dataclass(frozen=True)
class EvalConfig:
    """Final evaluation on ``episodes`` fixed test episodes drawn with ``seed``.

    ``batch_norm``: how BatchNorm layers normalise at test time. ``running`` (ProtoNet's and RelationNet's default:
    the statistics gathered in training, each query classified on its own) or ``episode`` (the statistics of each
    test episode's images: transductive, as the reference code of MAML and Relation Networks evaluates). Unset: the
    learner's convention; the MAML family always uses batch statistics, so ``running`` is an error there.
    """

    episodes: int = 1000
    seed: int = 1
    batch_norm: BatchNormMode | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        _checks.check_positive_int("episodes", self.episodes)
        _checks.check_non_negative_int("seed", self.seed)


@dataclass(frozen=True)
class MAMLConfig:
    """MAML: inner step size ``lr_inner``, meta step size ``lr_outer``, ``num_inner_steps`` inner steps.

    MAML++ (Antoniou et al. 2019) options, as :class:`~meta_learning.maml.MAML` takes them: ``learn_inner_lr``
    (``per_step``: learned per-layer per-step rates; ``per_parameter`` is Meta-SGD's, which the ``metasgd``
    learner always uses), ``multi_step_loss`` over the first ``msl_iterations`` iterations,
    ``first_order_iterations`` (derivative-order annealing) and ``per_step_bn`` (per-step BatchNorm weights and
    biases: the backbone's BatchNorm layers become :class:`~meta_learning.maml.PerStepBatchNorm` with
    ``num_inner_steps`` steps).
    """

    lr_inner: float = 0.01
    lr_outer: float = 0.001
    num_inner_steps: int = 5
    first_order: bool = False
    meta_batch_size: int = 32
    eval_inner_steps: int | None = None
    learn_inner_lr: Literal["fixed", "per_parameter", "per_step"] = "fixed"
    multi_step_loss: bool = False
    msl_iterations: int = 10_000
    first_order_iterations: int = 0
    per_step_bn: bool = False

    def __post_init__(self) -> None:
        _check_fields(self)
        _checks.check_positive_float("lr_inner", self.lr_inner)
        _checks.check_positive_float("lr_outer", self.lr_outer)
        _checks.check_non_negative_int("num_inner_steps", self.num_inner_steps)  # 0: a no-adaptation baseline
        _checks.check_positive_int("meta_batch_size", self.meta_batch_size)
        if self.eval_inner_steps is not None:
            _checks.check_non_negative_int("eval_inner_steps", self.eval_inner_steps)
        _checks.check_positive_int("msl_iterations", self.msl_iterations)
        _checks.check_non_negative_int("first_order_iterations", self.first_order_iterations)


@dataclass(frozen=True)
class EWCConfig:
    """Elastic weight consolidation: penalty weight ``ewc_lambda`` (key ``lambda``) and a Fisher scale."""

    ewc_lambda: float = field(default=1000.0, metadata={"alias": "lambda"})
    fisher_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_in("lambda", self.ewc_lambda, 0 <= self.ewc_lambda < math.inf, "[0, inf)")  # 0: no penalty
        _checks.check_positive_float("fisher_scale", self.fisher_scale)


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters: rank ``r``, scaling ``alpha / r``, ``dropout`` on the adapter input."""

    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _check_fields(self)
        _checks.check_positive_int("r", self.r)
        _checks.check_positive_float("alpha", self.alpha)
        _check_in("dropout", self.dropout, 0 <= self.dropout < 1, "[0, 1)")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment; the seed's ``maml``/``ewc``/``lora`` sections are ``None`` unless given."""

    name: str = "experiment"
    seed: int = 0
    run_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    maml: MAMLConfig | None = None
    ewc: EWCConfig | None = None
    lora: LoRAConfig | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        _checks.check_path_component("name", self.name)  # runs/<name>-<time>: a name must not escape runs/
        _checks.check_non_negative_int("seed", self.seed)
        if self.eval.batch_norm == "running" and self.learner.name in MAML_FAMILY:
            raise ValueError(
                f"eval.batch_norm='running' with learner.name={self.learner.name!r}: the MAML family normalises with "
                "batch statistics in the inner loop and at test time (no running statistics); use 'episode' or unset"
            )


# --- Files
def _suffix(path: Path) -> str:
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"config path {str(path)!r} has suffix {path.suffix!r}; use .yaml, .yml or .json")
    return path.suffix.lower()


@overload
def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> ExperimentConfig: ...
@overload
def load_config(source: str | os.PathLike[str] | Mapping[str, Any], cls: type[T]) -> T: ...
def load_config(source: str | os.PathLike[str] | Mapping[str, Any], cls: type[Any] = ExperimentConfig) -> Any:
    """Load a config from a ``.yaml``/``.yml``/``.json`` file or a mapping, validated by ``from_dict``.

    YAML goes through ``yaml.safe_load``, so a tag such as ``!!python/object`` is a ``ValueError``.

    Example:
        >>> load_config({"seed": 3}).seed
        3
    """
    if isinstance(source, Mapping):
        return from_dict(cls, source)
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if _suffix(path) == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read config {str(path)!r} (plain YAML or JSON only): {err}") from err
    if not isinstance(data, Mapping):
        raise TypeError(f"config {str(path)!r} must hold a mapping at the top, got {type(data).__name__}")
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write ``cfg`` to ``path`` atomically: YAML for ``.yaml``/``.yml``, JSON for ``.json``.

    The text is serialised first, then written to a temporary sibling and moved into place, so a failure
    leaves an existing file as it was.
    """
    data = to_dict(cfg)
    as_json = _suffix(Path(path)) == ".json"
    atomic_write_text(path, json.dumps(data, indent=2) + "\n" if as_json else yaml.safe_dump(data, sort_keys=False))
