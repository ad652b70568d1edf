from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from meta_learning import config as config_module
from meta_learning.config import (
    DataConfig,
    EWCConfig,
    ExperimentConfig,
    LoRAConfig,
    MAMLConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)

# The seed README's configuration example, exactly as written (note the leading space in ' fisher_scale').
SEED_README_CONFIG = {
    "maml": {"lr_inner": 0.01, "lr_outer": 0.001, "num_inner_steps": 5},
    "ewc": {"lambda": 1000, " fisher_scale": 1.0},
    "lora": {"r": 16, "alpha": 16, "dropout": 0.1},
}
SEED_FIXED = {**SEED_README_CONFIG, "ewc": {"lambda": 1000, "fisher_scale": 1.0}}
SHIPPED = sorted((Path(config_module.__file__).parent / "configs").glob("*.yaml"))


def leaves(d: dict, prefix: str = "") -> dict[str, object]:
    """Flatten a nested dict to ``{"a.b": value}``."""
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --- the seed README's example


def test_seed_readme_example_is_refused_naming_the_bad_key_and_the_fix():
    with pytest.raises(ValueError) as info:
        load_config(SEED_README_CONFIG)
    assert str(info.value) == "unknown key 'ewc. fisher_scale'; did you mean 'fisher_scale'?"


def test_seed_readme_example_with_the_key_fixed_loads_every_value():
    cfg = load_config(SEED_FIXED)
    assert cfg.maml == MAMLConfig(lr_inner=0.01, lr_outer=0.001, num_inner_steps=5, first_order=False)
    assert cfg.ewc == EWCConfig(ewc_lambda=1000.0, fisher_scale=1.0)
    assert cfg.lora == LoRAConfig(r=16, alpha=16.0, dropout=0.1)
    # ints given for float fields become floats; absent sections keep their defaults
    assert type(cfg.ewc.ewc_lambda) is float and type(cfg.lora.alpha) is float
    assert cfg.train == TrainConfig() and cfg.data == DataConfig()


def test_optional_sections_are_none_when_absent():
    cfg = load_config({"lora": {"r": 4}})
    assert cfg.maml is None and cfg.ewc is None
    assert cfg.lora == LoRAConfig(r=4)


def test_round_trip_through_dict_yaml_and_json(tmp_path):
    cfg = load_config(SEED_FIXED)
    data = to_dict(cfg)
    assert data["ewc"] == {"lambda": 1000.0, "fisher_scale": 1.0}  # the alias is written back
    assert from_dict(ExperimentConfig, data) == cfg

    save_config(cfg, tmp_path / "cfg.yaml")
    text = (tmp_path / "cfg.yaml").read_text()
    assert "lambda: 1000.0" in text and "ewc_lambda" not in text
    assert load_config(tmp_path / "cfg.yaml") == cfg

    save_config(cfg, tmp_path / "cfg.json")
    assert json.loads((tmp_path / "cfg.json").read_text())["lora"] == {"r": 16, "alpha": 16.0, "dropout": 0.1}
    assert load_config(str(tmp_path / "cfg.json")) == cfg


def test_seed_readme_example_written_as_json_file_loads(tmp_path):
    (tmp_path / "seed.json").write_text(json.dumps(SEED_FIXED))
    assert load_config(tmp_path / "seed.json") == load_config(SEED_FIXED)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    assert cfg.name == yaml.safe_load(path.read_text())["name"]
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg


# --- unknown keys


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"nun_episodes": 5}}, "unknown key 'train.nun_episodes'; did you mean 'num_episodes'?"),
        ({"trian": {"lr": 0.1}}, "unknown key 'trian'; did you mean 'train'?"),
        (
            {"learner": {"distance-metric": "cosine"}},
            "unknown key 'learner.distance-metric'; did you mean 'distance_metric'?",
        ),
        ({"ewc": {"Fisher_Scale": 2.0}}, "unknown key 'ewc.Fisher_Scale'; did you mean 'fisher_scale'?"),
        ({"lora": {"dropuot": 0.2}}, "unknown key 'lora.dropuot'; did you mean 'dropout'?"),
        ({"eval": {"zzz": 1}}, "unknown key 'eval.zzz'; valid keys: batch_norm, episodes, seed"),
        ({"train": {" LR ": 0.1}}, "unknown key 'train. LR '; did you mean 'lr'?"),
    ],
)
def test_unknown_keys_name_the_dotted_path_and_the_closest_key(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(data)


def test_a_field_given_by_both_name_and_alias_is_refused():
    with pytest.raises(ValueError, match=r"'ewc\.lambda' is given as both 'lambda' and 'ewc_lambda'"):
        load_config({"ewc": {"lambda": 1, "ewc_lambda": 2}})
    assert load_config({"ewc": {"ewc_lambda": 2}}).ewc == EWCConfig(ewc_lambda=2.0)


# --- types


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"lr": "fast"}}, "train.lr='fast' (str) but expected float"),
        ({"train": {"num_episodes": True}}, "train.num_episodes=True (bool) but expected int"),
        ({"data": {"train_way": 5.0}}, "data.train_way=5.0 (float) but expected int"),
        ({"train": {"lr": True}}, "train.lr=True (bool) but expected float"),
        ({"train": {"patience": "3"}}, "train.patience='3' (str) but expected int | None"),
        ({"data": {"download": "yes"}}, "data.download='yes' (str) but expected bool"),
        ({"name": 5}, "name=5 (int) but expected str"),
        ({"learner": {"name": 1}}, "learner.name=1 (int) but expected one of 'protonet', 'relationnet'"),
        ({"maml": [0.1]}, "maml=[0.1] (list) but expected MAMLConfig | None"),
    ],
)
def test_wrong_types_name_the_key_the_value_and_the_expected_type(data, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        load_config(data)


def test_a_bad_choice_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"learner\.distance_metric='manhattan' .*'euclidean', 'cosine'"):
        load_config({"learner": {"distance_metric": "manhattan"}})


def test_ints_are_accepted_for_floats_and_yaml_exponent_strings_are_read_as_floats(tmp_path):
    cfg = load_config({"train": {"lr": 1, "weight_decay": 0}})
    assert type(cfg.train.lr) is float and cfg.train.lr == 1.0
    # PyYAML (YAML 1.1) reads `1e-3` as the string '1e-3'
    (tmp_path / "cfg.yaml").write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    assert yaml.safe_load((tmp_path / "cfg.yaml").read_text())["train"]["lr"] == "1e-3"
    cfg = load_config(tmp_path / "cfg.yaml")
    assert (cfg.train.lr, cfg.train.weight_decay) == (0.001, 0.0005)


def test_a_section_that_is_not_a_mapping_is_a_type_error():
    with pytest.raises(TypeError, match=r"train=5 \(int\) but expected TrainConfig"):
        load_config({"train": 5})
    with pytest.raises(TypeError, match="config must be a mapping"):
        from_dict(ExperimentConfig, [("seed", 1)])  # type: ignore[arg-type]


# --- ranges (in __post_init__)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"data": {"train_way": 0}}, "data: train_way=0 but it must be a positive integer"),
        ({"data": {"test_query": -1}}, "data: test_query=-1 but it must be a positive integer"),
        ({"train": {"lr": 0}}, "train: lr=0.0 but it must be > 0"),
        ({"train": {"lr_decay": 1.5}}, "train: lr_decay=1.5 but it must lie in (0, 1]"),
        ({"train": {"weight_decay": -0.1}}, "train: weight_decay=-0.1 but it must lie in [0, inf)"),
        ({"train": {"patience": 0}}, "train: patience=0 but it must be a positive integer"),
        ({"lora": {"dropout": 1.0}}, "lora: dropout=1.0 but it must lie in [0, 1)"),
        ({"ewc": {"lambda": -1}}, "ewc: lambda=-1.0 but it must lie in [0, inf)"),
        ({"maml": {"num_inner_steps": -1}}, "maml: num_inner_steps=-1 but it must be >= 0"),
        ({"seed": -3}, "seed=-3 but it must be >= 0"),
        ({"data": {"dataset": "image_folder"}}, "dataset='image_folder' needs root="),
    ],
)
def test_out_of_range_values_are_refused_naming_section_and_field(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(data)


def test_nan_is_refused_where_a_range_is_checked():
    with pytest.raises(ValueError, match="lr_decay=nan"):
        TrainConfig(lr_decay=float("nan"))


def test_direct_construction_is_checked_and_normalised_too():
    with pytest.raises(ValueError, match="train_way=0"):
        DataConfig(train_way=0)
    with pytest.raises(TypeError, match="train_way='5'"):
        DataConfig(train_way="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="choose one of 'omniglot', 'miniimagenet', 'image_folder'"):
        DataConfig(dataset="cifar")  # type: ignore[arg-type]
    assert type(TrainConfig(lr=1).lr) is float
    assert DataConfig(dataset="image_folder", root="/data").root == "/data"
    assert TrainConfig(patience=None, lr_decay_every=None).patience is None


# --- overrides


def test_overrides_change_exactly_the_named_fields():
    base = load_config(SEED_FIXED)
    new = apply_overrides(base, ["train.lr=0.01", "data.train_way=20", "learner.distance_metric=cosine"])
    before, after = leaves(to_dict(base)), leaves(to_dict(new))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"train.lr", "data.train_way", "learner.distance_metric"}
    assert (new.train.lr, new.data.train_way, new.learner.distance_metric) == (0.01, 20, "cosine")
    assert base.train.lr == 1e-3  # the original is untouched


def test_overrides_accept_aliases_field_names_null_and_absent_sections():
    base = load_config(SEED_FIXED)
    assert apply_overrides(base, ["ewc.lambda=5"]).ewc == EWCConfig(ewc_lambda=5.0)
    assert apply_overrides(base, ["ewc.ewc_lambda=7"]).ewc == EWCConfig(ewc_lambda=7.0)
    assert apply_overrides(base, ["maml=null"]).maml is None
    assert apply_overrides(base, ["train.lr=5e-4"]).train.lr == 5e-4  # YAML 1.1 reads 5e-4 as a string
    assert apply_overrides(base, ["train.patience=3", "train.patience=null"]).train.patience is None
    fresh = apply_overrides(ExperimentConfig(), ["maml.lr_inner=0.5", " run_dir = runs/a "])
    assert fresh.maml == MAMLConfig(lr_inner=0.5)  # an absent section starts from its defaults
    assert fresh.run_dir == "runs/a"


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("data.train_way=0", ValueError, "data: train_way=0 but it must be a positive integer"),
        ("train.lr=fast", TypeError, "train.lr='fast' (str) but expected float"),
        ("train.progress=3", TypeError, "train.progress=3 (int) but expected bool"),
        ("train.nun_episodes=5", ValueError, "unknown key 'train.nun_episodes'; did you mean 'num_episodes'?"),
        ("trian.lr=0.1", ValueError, "unknown key 'trian'; did you mean 'train'?"),
        ("train.lr", ValueError, "override 'train.lr' is not of the form 'section.key=value'"),
        ("=0.1", ValueError, "override '=0.1' is not of the form"),
        ("train..lr=0.1", ValueError, "is not of the form"),
        ("train.lr.x=1", ValueError, "'train.lr' is a value, not a section"),
        ("train.lr=[1, 2", ValueError, "the value is not valid YAML"),
    ],
)
def test_overrides_are_revalidated(override, error, message):
    with pytest.raises(error, match=re.escape(message)):
        apply_overrides(ExperimentConfig(), [override])


def test_overrides_must_be_a_list_not_one_string():
    with pytest.raises(TypeError, match="list of strings"):
        apply_overrides(ExperimentConfig(), "train.lr=0.1")


# --- files


def test_save_config_leaves_no_temporary_files(tmp_path):
    save_config(ExperimentConfig(seed=3), tmp_path / "cfg.yaml")
    assert os.listdir(tmp_path) == ["cfg.yaml"]


def test_failed_serialisation_leaves_the_existing_file_untouched(tmp_path, monkeypatch):
    target = tmp_path / "cfg.yaml"
    save_config(ExperimentConfig(seed=1), target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("serialiser exploded")

    monkeypatch.setattr(yaml, "safe_dump", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        save_config(ExperimentConfig(seed=2), target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["cfg.yaml"]


def test_a_failed_write_leaves_the_existing_file_untouched(tmp_path, monkeypatch):
    target = tmp_path / "cfg.yaml"
    save_config(ExperimentConfig(seed=1), target)
    before = target.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)  # fails after the temporary file was written, before the move
    with pytest.raises(OSError, match="disk full"):
        save_config(ExperimentConfig(seed=2), target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["cfg.yaml"]


def test_yaml_python_tags_are_refused(tmp_path):
    marker = tmp_path / "created"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.mkdir ['{marker}']\n")  # yaml.unsafe_load would run it
    with pytest.raises(ValueError, match="plain YAML or JSON only"):
        load_config(path)
    assert not marker.exists()
    path.write_text("name: !!python/object:meta_learning.config.TrainConfig {}\n")
    with pytest.raises(ValueError, match="could not determine a constructor"):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "text", "error", "message"),
    [
        ("cfg.txt", "seed: 1", ValueError, "has suffix '.txt'; use .yaml, .yml or .json"),
        ("cfg.yml", "- 1\n- 2\n", TypeError, "must hold a mapping at the top, got list"),
        ("cfg.json", "{'seed': 1}", ValueError, "plain YAML or JSON only"),
        ("cfg.yaml", "seed: [1\n", ValueError, "plain YAML or JSON only"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, name, text, error, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(error, match=re.escape(message)):
        load_config(tmp_path / name)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")


# --- the generic machinery on a dataclass of its own


@dataclass(frozen=True)
class Inner:
    dims: tuple[int, ...] = (1, 2)
    scale: float | None = None


@dataclass(frozen=True)
class Outer:
    width: int
    tag: str = field(default="x", metadata={"alias": "label"})
    inner: Inner = field(default_factory=Inner)


def test_generic_tuples_required_keys_and_aliases():
    obj = from_dict(Outer, {"width": 3, "label": "y", "inner": {"dims": [4, 5, 6], "scale": 2}})
    assert obj == Outer(width=3, tag="y", inner=Inner(dims=(4, 5, 6), scale=2.0))
    assert to_dict(obj) == {"width": 3, "label": "y", "inner": {"dims": [4, 5, 6], "scale": 2.0}}
    assert from_dict(Outer, to_dict(obj)) == obj
    with pytest.raises(TypeError, match=re.escape("inner.dims[1]='5' (str) but expected int")):
        from_dict(Outer, {"width": 3, "inner": {"dims": [4, "5"]}})
    with pytest.raises(TypeError, match=re.escape("inner.dims=4 (int) but expected tuple")):
        from_dict(Outer, {"width": 3, "inner": {"dims": 4}})
    with pytest.raises(ValueError, match="missing key 'width'"):
        from_dict(Outer, {"label": "y"})
    with pytest.raises(ValueError, match="unknown key 'inner.scal'; did you mean 'scale'?"):
        from_dict(Outer, {"width": 1, "inner": {"scal": 1.0}})


def test_seed_config_sections_build_maml_ewc_and_lora():
    """The seed's configuration dict drives MAML, EWC and LoRA (its stray ' fisher_scale' key is refused)."""
    from torch import nn

    from meta_learning.adapters import LoRAAdapter
    from meta_learning.continual import EWC
    from meta_learning.maml import MAML

    seed = {
        "maml": {"lr_inner": 0.01, "lr_outer": 0.001, "num_inner_steps": 5},
        "ewc": {"lambda": 1000, "fisher_scale": 1.0},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.1},
    }
    cfg = load_config(seed)
    net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    maml = MAML.from_config(net, cfg.maml)
    assert (maml.lr_inner, maml.lr_outer, maml.num_inner_steps) == (0.01, 0.001, 5)
    assert MAML.from_config(net, seed["maml"], meta_batch_size=2).meta_batch_size == 2  # a dict works too
    ewc = EWC.from_config(net, seed["ewc"], online=True)
    assert (ewc.ewc_lambda, ewc.fisher_scale, ewc.online) == (1000.0, 1.0, True)
    lora = LoRAAdapter.from_config(net, cfg.lora, target_modules=["0"])
    assert (lora.config.r, lora.config.lora_alpha, lora.config.lora_dropout) == (16, 16.0, 0.1)
    lora.add_adapter()
    assert lora.efficiency().trainable == 16 * (4 + 32)
    with pytest.raises(ValueError, match="fisher_scale"):
        EWC.from_config(net, {"lambda": 1000, " fisher_scale": 1.0})
    with pytest.raises(TypeError, match="maml must be a MAMLConfig or a mapping"):
        MAML.from_config(net, 0.01)
