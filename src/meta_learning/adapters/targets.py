"""Which modules of a model an adapter wraps.

``target_modules`` follows PEFT's rules so that PEFT configs mean the same here:

- a list of names: a module is targeted when its full name equals an entry or ends with ``"." + entry``
  (``"query"`` matches ``encoder.layer.0.attention.self.query``); every entry must match at least one module;
- one string: a regular expression that must match the full module name (``re.fullmatch``);
- ``"all-linear"``: every ``nn.Linear`` except the output layer;
- ``None``: the adapter type's documented default (:data:`NAMES` families, with a fallback for models that use
  none of those names).

Modules already wrapped by an adapter count as the module they wrap; nothing inside a wrapper is ever targeted.
Children of ``nn.MultiheadAttention`` are never targeted: its forward reads ``out_proj.weight`` directly and never
calls ``out_proj``, so a wrapper there would silently do nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from torch import nn

from meta_learning.adapters.layer import AdapterLayer

TargetSpec = str | tuple[str, ...] | None

# Projection names used by the common transformer implementations (BERT/RoBERTa/MiniLM, LLaMA/OPT/BART, DistilBERT,
# nn.TransformerEncoderLayer). Suffix-matched like PEFT's lists.
NAMES: dict[str, tuple[str, ...]] = {
    "query": ("attention.self.query", "q_proj", "q_lin"),
    "key": ("attention.self.key", "k_proj", "k_lin"),
    "value": ("attention.self.value", "v_proj", "v_lin"),
    "attention_output": ("attention.output.dense", "o_proj", "out_lin"),
    "ffn_up": ("intermediate.dense", "fc1", "up_proj", "lin1", "linear1"),
    "ffn_down": ("fc2", "down_proj", "lin2", "linear2"),
}
# BERT's FFN down-projection is "<layer>.output.dense", which must not match "attention.output.dense".
_BERT_FFN_DOWN = re.compile(r"(.*\.)?\d+\.output\.dense")


def matches(name: str, entries: Sequence[str]) -> bool:
    """PEFT's list rule: ``name`` equals an entry or ends with ``"." + entry``."""
    return any(name == e or name.endswith("." + e) for e in entries)


def is_family(name: str, family: str) -> bool:
    """Whether module ``name`` belongs to a projection family of :data:`NAMES` (``"ffn_down"`` includes BERT's)."""
    if family == "ffn_down" and _BERT_FFN_DOWN.fullmatch(name):
        return True
    return matches(name, NAMES[family])


def candidates(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` pairs that may be targeted: wrappers stand for their base module, their insides are skipped,
    and so are the children of ``nn.MultiheadAttention``."""
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in skip):
            continue
        if isinstance(module, AdapterLayer):
            skip.append(name + "." if name else "")
            yield name, module.base_layer
        elif isinstance(module, nn.MultiheadAttention):
            skip.append(name + "." if name else "")
            yield name, module
        else:
            yield name, module


def output_layer(model: nn.Module) -> str | None:
    """Name of the last module (in registration order) that owns parameters directly: the output layer/head."""
    last = None
    for name, module in candidates(model):
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return last


def select(
    model: nn.Module,
    spec: TargetSpec,
    *,
    accepts: Callable[[nn.Module], bool],
    accepted: str,
    default: Callable[[nn.Module], list[str]],
    what: str,
) -> list[str]:
    """The names of the modules to wrap, validated.

    Args:
        model: the base model (possibly already carrying wrappers of the same adapter object).
        spec: ``target_modules`` as described in the module docstring.
        accepts: whether this adapter type can wrap a module.
        accepted: the modules it can wrap, in words (for messages).
        default: the type's default rule, used when ``spec`` is ``None``.
        what: the adapter type's name, for messages.

    Raises:
        ValueError: a list entry matches no module, nothing is selected, or a selected module has an unsupported type.
    """
    pool = list(candidates(model))
    if spec is None:
        names = default(model)
    elif spec == "all-linear":
        head = output_layer(model)
        names = [n for n, m in pool if isinstance(m, nn.Linear) and n != head]
    elif isinstance(spec, str):
        try:
            pattern = re.compile(spec)
        except re.error as err:
            raise ValueError(f"target_modules={spec!r} is not a valid regular expression: {err}") from None
        names = [n for n, _ in pool if pattern.fullmatch(n)]
    else:
        names = []
        for entry in spec:
            hits = [n for n, _ in pool if n and matches(n, [entry])]
            if not hits:
                raise ValueError(
                    f"target_modules entry {entry!r} matches no module of the model; "
                    f"module names look like {[n for n, _ in pool if n][:6]}"
                )
            names.extend(h for h in hits if h not in names)
    if not names:
        raise ValueError(f"target_modules={spec!r} selects no module for {what}; give target_modules explicitly")
    modules = dict(pool)
    for n in names:
        module = modules[n]
        if not accepts(module):
            raise ValueError(
                f"target module {n!r} is a {type(module).__name__}; {what} supports {accepted}. "
                "Choose other target_modules"
            )
    return names


def by_families(model: nn.Module, families: Sequence[str], supported: tuple[type[nn.Module], ...]) -> list[str]:
    """Modules of ``supported`` type whose names belong to any of ``families``."""
    return [
        n for n, m in candidates(model) if n and isinstance(m, supported) and any(is_family(n, f) for f in families)
    ]


def all_except_output(model: nn.Module, supported: tuple[type[nn.Module], ...]) -> list[str]:
    """Every module of ``supported`` type except the output layer (the fallback for models of unknown layout)."""
    head = output_layer(model)
    return [n for n, m in candidates(model) if isinstance(m, supported) and n != head]


def of_type(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> list[str]:
    """Every module that is an instance of ``kinds``."""
    return [n for n, m in candidates(model) if isinstance(m, kinds)]
