"""Recipes: YAML files for alignment runs, validated completely before anything heavy.

Keys: ``trainer``, ``model``, ``data``, one section per trainer named after it (``dpo``,
``ppo``: any field of that trainer's config), ``rewards``, ``kl``, ``filters``,
``rollout_filters``, ``eval``, ``report``. Errors name the key path (``dpo.beta``), show
the value and list what is allowed.

Paths: a relative path written in a recipe (data files, prompt sets, model folders,
``file.py:attr`` references) resolves against the recipe's own folder; a relative path
given with ``--set`` resolves against the working directory, like every other path on
the command line. Both are made absolute when the recipe loads, so nothing downstream
re-bases them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RecipeError

# trainer name -> (module, config class, section)
TRAINERS = {
    "dpo": ("trl_plus.trainers.dpo", "DPOConfig"),
    "ppo": ("trl_plus.trainers.ppo_config", "PPOConfig"),
}
# Sections of the recipe that other parts of trl-plus own and validate themselves.
FREE_SECTIONS = ("eval", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    name_or_path: str = Field(description="local folder, hub id, or tiny:causal-lm")
    tokenizer: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    ref_model: str | None = None
    peft: dict[str, Any] | None = None


class DataSplit(_Strict):
    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | list[str] | dict[str, Any] | None = None
    max_rows: int | None = Field(default=None, gt=0)
    columns: dict[str, str] | None = None  # rename: {old: new}


class DataSection(_Strict):
    train: DataSplit
    eval: DataSplit | None = None
    on_error: Literal["raise", "drop"] = "raise"  # bad rows and malformed lines: stop at the first, or drop and count
    drop_empty: bool = False  # drop rows whose text columns are empty (always counted in the filter report)


class ComponentSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class RewardSpec(ComponentSpec):
    weight: float = 1.0
    normalize: bool = False
    alias: str | None = None


class RecipeModel(_Strict):
    # Optional only for a pipeline recipe (``stages:``), which builds its own models and
    # data per stage and runs with ``trl-plus compare``; a trainer recipe needs all three.
    trainer: Literal["dpo", "ppo"] | None = None
    model: ModelSection | None = None
    data: DataSection | None = None
    dpo: dict[str, Any] = {}
    ppo: dict[str, Any] = {}
    rewards: list[RewardSpec] = []
    kl: ComponentSpec | None = None
    filters: list[ComponentSpec] = []
    rollout_filters: list[ComponentSpec] = []
    eval: dict[str, Any] = {}
    report: dict[str, Any] = {}
    stages: dict[str, Any] = {}


@dataclass
class Recipe:
    """A validated recipe: the typed sections, the raw dict, where it came from."""

    spec: RecipeModel
    raw: dict
    source: Path | None

    def __getattr__(self, name: str):
        return getattr(self.spec, name)

    @property
    def trainer_args(self) -> dict:
        return dict(getattr(self.spec, self.spec.trainer))

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


# ---------------------------------------------------------------------------------------
# finding and reading
# ---------------------------------------------------------------------------------------


def shipped_recipes() -> dict[str, Path]:
    root = resources.files("trl_plus.recipes")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def find_recipe(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if stem in shipped and not path.parent.name:
        return shipped[stem]
    hint = difflib.get_close_matches(stem, list(shipped), n=1)
    raise RecipeError(
        f"no recipe file {str(name_or_path)!r} and no shipped recipe of that name."
        + (f" Did you mean: {hint[0]}?" if hint else "")
        + f" Shipped: {', '.join(sorted(shipped))}"
    )


def parse_override(text: str) -> tuple[list[str | int], Any]:
    if "=" not in text:
        raise RecipeError(f"--set expects KEY=VALUE, got {text!r}")
    key, _, value = text.partition("=")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_override(raw: dict, text: str) -> None:
    parts, value = parse_override(text)
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not isinstance(part, int) or part > len(node):
                raise RecipeError(f"--set {text!r}: index {part!r} out of range", ".".join(map(str, parts[: i + 1])))
            if part == len(node):  # one past the end appends a new item
                node.append([] if isinstance(nxt, int) else {})
            node = node[part]
        else:
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last > len(node):
            raise RecipeError(f"--set {text!r}: index {last!r} out of range", ".".join(map(str, parts)))
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"--set {text!r}: {'.'.join(map(str, parts[:-1]))} is not a mapping or list")


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed at a location of the recipe (for did-you-mean)."""
    model: type[BaseModel] | None = RecipeModel
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return []
    return list(model.model_fields)


def _pydantic_error(exc: ValidationError) -> RecipeError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = _format_loc(loc)
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        name = str(loc[-1])
        hint = difflib.get_close_matches(name, allowed, n=1)
        return RecipeError(
            f"unknown key {name!r}." + (f" Did you mean: {hint[0]}?" if hint else "") + f" Allowed: {', '.join(allowed)}",
            key,
        )
    if err["type"] == "missing":
        return RecipeError("missing required key", key)
    return RecipeError(f"{err['msg']} (got {err.get('input')!r})", key)


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def trainer_config_class(trainer: str):
    module, cls = TRAINERS[trainer]
    return getattr(importlib.import_module(module), cls)


def _check_trainer_section(spec: RecipeModel) -> None:
    section = spec.trainer
    values = getattr(spec, section)
    other = "ppo" if section == "dpo" else "dpo"
    if getattr(spec, other):
        raise RecipeError(f"section {other!r} is for trainer {other!r}, but trainer is {section!r}", other)
    cls = trainer_config_class(section)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            raise RecipeError(
                f"unknown {cls.__name__} field {key!r}." + (f" Did you mean: {hint[0]}?" if hint else ""),
                f"{section}.{key}",
            )
        if key == "output_dir":
            raise RecipeError("set the output folder with --output-dir, not in the recipe", f"{section}.{key}")
    hints = _type_hints(cls)
    for key, value in values.items():
        expected = _simple_types(hints.get(key))
        if expected and not _type_ok(value, expected):
            names = " or ".join(sorted({t.__name__ for t in expected}))
            raise RecipeError(f"expected {names}, got {value!r}", f"{section}.{key}")
    for key in ("beta", "kl_coef"):
        if key in values and not (isinstance(values[key], (int, float)) and values[key] > 0):
            raise RecipeError(f"must be a number > 0, got {values[key]!r}", f"{section}.{key}")
    try:
        build_trainer_config(spec, "/tmp/trl-plus-validate", device_defaults=False)
    except RecipeError:
        raise
    except Exception as exc:
        raise RecipeError(f"{cls.__name__} rejected the section: {exc}", section) from None


def _type_hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: skip type checks rather than fail
        return {}


_CHECKED = (bool, int, float, str, type(None))


def _simple_types(annotation) -> tuple | None:
    """The plain types a field accepts, or None when it is not a plain scalar field."""
    if annotation is None:
        return None
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    if not all(a in _CHECKED for a in args):
        return None
    return tuple(args)


def _type_ok(value, expected: tuple) -> bool:
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int) and (int in expected or float in expected):
        return True
    return isinstance(value, tuple(t for t in expected if t is not bool))


def build_trainer_config(spec: RecipeModel, output_dir: str, device_defaults: bool = True, **overrides):
    """The trainer's config from the recipe section, with CPU-friendly defaults where unset."""
    cls = trainer_config_class(spec.trainer)
    values = {**getattr(spec, spec.trainer), **overrides}
    values.setdefault("report_to", "none")
    if device_defaults:
        import torch

        if not torch.cuda.is_available():
            # TRL's defaults (bf16, gradient checkpointing) make CPU training slower, not leaner.
            values.setdefault("bf16", False)
            if "gradient_checkpointing" not in values:
                values.setdefault("activation_checkpointing", False)
            # Without use_cpu, accelerate treats torchrun's CPU processes as independent single runs.
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                values.setdefault("use_cpu", True)
    else:
        values.setdefault("bf16", False)
        if "gradient_checkpointing" not in values:
            values.setdefault("activation_checkpointing", False)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in list(values.items()):
        if key in fields:
            continue
        raise RecipeError(f"unknown {cls.__name__} field {key!r}", f"{spec.trainer}.{key}")
    return cls(output_dir=output_dir, **values)


_PY_FILE_REF = re.compile(r"^(?P<file>[^:]+\.py):(?P<attr>[\w.]+)$")
_MISSING = object()
# Sections whose component specs may hold ``file.py:attr`` references and reward models.
_COMPONENT_SECTIONS = ("rewards", "kl", "filters", "rollout_filters", "eval", "stages")


def _at(node: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _resolve_paths(raw: dict, base: Path, only=None) -> None:
    """Relative paths in the recipe become absolute, against ``base``.

    Data files and prompt sets (``data.*``, ``eval.prompts``, ``eval.val_prompts``,
    ``stages.pairs.dataset``), model folders (``model.*``, ``eval.reference``,
    ``eval.kl.reference``, ``stages.sft.base``, a ``reward_model``'s ``model`` in any
    component spec), ``file.py:attr`` references, ``eval.cache`` and
    ``dpo.ref_logps_cache``. A name that is no local path (a hub id, ``tiny:...``) is left
    as it is: see ``trl_plus.loading.local_path``.

    :param only: ``only(location) -> bool``: resolve just those locations (the ones
        ``--set`` gave, which resolve against the working directory instead).
    """
    from .loading import local_path

    def put(node, key, loc, files=False, always=False):
        if not isinstance(node, dict) or not isinstance(node.get(key), str) or (only and not only(loc)):
            return
        value = node[key]
        if always and value and not Path(value).expanduser().is_absolute():
            node[key] = os.path.abspath(base / Path(value).expanduser())
            return
        path = local_path(value, base, files=files)
        if path is not None:
            node[key] = str(path)

    def data_entry(parent, key, loc):
        """A data split or prompt set: a path string or a mapping with ``path``."""
        entry = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(entry, dict):
            put(entry, "path", loc + ("path",), files=True)
        else:
            put(parent, key, loc, files=True)

    data = raw.get("data")
    if isinstance(data, dict):
        for split in ("train", "eval"):
            if isinstance(data.get(split), str):
                data[split] = {"path": data[split]}
            data_entry(data, split, ("data", split))
    model = raw.get("model")
    for key in ("name_or_path", "tokenizer", "ref_model"):
        put(model, key, ("model", key))
    ev = raw.get("eval")
    if isinstance(ev, dict):
        for key in ("prompts", "val_prompts"):
            data_entry(ev, key, ("eval", key))
        put(ev, "reference", ("eval", "reference"))
        put(ev.get("kl"), "reference", ("eval", "kl", "reference"))
        put(ev, "cache", ("eval", "cache"), always=True)
    put(raw.get("dpo"), "ref_logps_cache", ("dpo", "ref_logps_cache"), always=True)
    stages = raw.get("stages")
    if isinstance(stages, dict):
        put(stages.get("sft"), "base", ("stages", "sft", "base"))
        data_entry(stages.get("pairs"), "dataset", ("stages", "pairs", "dataset"))

    def fix(node, loc):
        if isinstance(node, dict):
            if node.get("name") == "reward_model":  # a reward source or judge: its model folder
                put(node, "model", loc + ("model",))
            for k, v in list(node.items()):
                node[k] = fix(v, loc + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = fix(v, loc + (i,))
        elif isinstance(node, str) and not (only and not only(loc)):
            m = _PY_FILE_REF.match(node)
            if m and not Path(m["file"]).expanduser().is_absolute():
                return f"{os.path.abspath(base / Path(m['file']).expanduser())}:{m['attr']}"
        return node

    for key in _COMPONENT_SECTIONS:
        if key in raw:
            raw[key] = fix(raw[key], (key,))


def _looks_like_file(path: str) -> bool:
    return Path(path).suffix in {".jsonl", ".json", ".csv", ".parquet", ".txt"} or path.startswith(("/", "./", "../"))


def _check_data(spec: RecipeModel) -> None:
    for split in ("train", "eval"):
        entry = getattr(spec.data, split)
        if entry is not None and _looks_like_file(entry.path) and not Path(entry.path).exists():
            raise RecipeError(f"file not found: {entry.path!r}", f"data.{split}.path")


def _check_components(spec: RecipeModel, hooks) -> None:
    from .components import REWARD_CORE_KEYS

    def check(registry, entry, where, core=()):
        kwargs = {k: v for k, v in entry.model_dump().items() if k != "name" and k not in core}
        registry.check_kwargs(entry.name, kwargs, where)

    for i, entry in enumerate(spec.rewards):
        check(hooks.reward_sources, entry, f"rewards[{i}]", REWARD_CORE_KEYS)
    if spec.kl is not None:
        check(hooks.kl_schedules, spec.kl, "kl")
    for key in ("filters", "rollout_filters"):
        for i, entry in enumerate(getattr(spec, key)):
            check(hooks.data_filters, entry, f"{key}[{i}]")
    if spec.rollout_filters and spec.trainer != "ppo" and not spec.stages:
        raise RecipeError("rollout filters apply to trainer 'ppo' only", "rollout_filters")


def validate_dict(raw: Any, hooks=None, source: Path | None = None, overrides: list[str] = ()) -> Recipe:
    from .manager import Hooks

    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe is a mapping of keys, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    _resolve_paths(raw, source.parent if source else Path.cwd())
    if overrides:
        # A value typed on the command line is a command-line path: it resolves against the
        # working directory, whichever folder the recipe lives in (a shipped recipe's is
        # inside the installed package).
        written = copy.deepcopy(raw)
        for text in overrides:
            apply_override(raw, text)
        _resolve_paths(raw, Path.cwd(), only=lambda loc: _at(raw, loc) != _at(written, loc))
    try:
        spec = RecipeModel.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(exc) from None
    hooks = Hooks.of(hooks)
    if not spec.stages:
        for key in ("trainer", "model", "data"):
            if getattr(spec, key) is None:
                raise RecipeError("missing required key", key)
    if spec.model is not None:
        from .loading import check_model_name

        for key in ("name_or_path", "tokenizer", "ref_model"):
            if getattr(spec.model, key):
                check_model_name(getattr(spec.model, key), f"model.{key}")
    if spec.data is not None:
        _check_data(spec)
    if spec.trainer is not None:
        _check_trainer_section(spec)
    _check_components(spec, hooks)
    recipe = Recipe(spec, raw, source)
    if spec.stages:  # a pipeline: its stages, and its eval section as the eval stage will run it
        from trl_plus.pipeline import check_recipe

        check_recipe(recipe, hooks)
    elif spec.eval:
        from trl_plus.eval import validate_eval_section

        validate_eval_section(spec.eval, hooks)
    return recipe


def load_recipe(name_or_path: str | Path, overrides: list[str] = (), hooks=None) -> Recipe:
    """Find, read (``yaml.safe_load``), override and validate a recipe; calls ``recipe_loaded``."""
    from .manager import Hooks

    path = find_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    hooks = Hooks.of(hooks)
    recipe = validate_dict(raw, hooks, source=path.resolve(), overrides=list(overrides))
    hooks.recipe_loaded(recipe)
    return recipe
