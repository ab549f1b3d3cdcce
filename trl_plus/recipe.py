"""Recipes: YAML files for alignment runs, validated completely before anything heavy.

Keys: ``trainer``, ``model``, ``data``, one section per trainer named after it (``dpo``,
``ppo``: any field of that trainer's config), ``peft`` (LoRA), ``rewards``, ``kl``, ``filters``,
``rollout_filters``, ``eval``, ``report``. Errors name the key path (``dpo.beta``), show
the value and list what is allowed.

Paths: a relative path written in a recipe (data files, prompt sets, model folders,
``file.py:attr`` references) resolves against the recipe's own folder; a relative path
given with ``--set`` resolves against the working directory, like every other path on
the command line. Both are made absolute when the recipe loads, so nothing downstream
re-bases them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import hashlib
import importlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import RecipeError, RecipeProblems, TrlPlusError
from .registry import shown, yaml_hint

# trainer name -> (module, config class, section)
TRAINERS = {
    "dpo": ("trl_plus.trainers.dpo", "DPOConfig"),
    "ppo": ("trl_plus.trainers.ppo_config", "PPOConfig"),
}
# Sections of the recipe that other parts of trl-plus own and validate themselves.
FREE_SECTIONS = ("eval", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every number finite


class ModelSection(_Strict):
    name_or_path: str = Field(description="local folder, hub id, or tiny:causal-lm")
    tokenizer: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    ref_model: str | None = None
    peft: Any = Field(None, exclude=True)

    @field_validator("peft")
    @classmethod
    def _peft_moved(cls, value):
        if value is not None:
            raise PydanticCustomError("moved", "LoRA settings go in a top-level peft section, not under model")
        return value


class PeftSection(_Strict):
    """LoRA adapters on the policy (fields of ``peft.LoraConfig``). The policy then trains only
    the adapters; the reference is the same model with its adapters switched off."""

    r: int = Field(8, gt=0)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    # None: PEFT's default modules for the architecture; a list of module names, a regex
    # matched against full module names, or "all-linear".
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    use_dora: bool = False
    task_type: Literal["CAUSAL_LM"] = "CAUSAL_LM"

    @field_validator("target_modules", "modules_to_save")
    @classmethod
    def _names(cls, value):
        if isinstance(value, list) and (not value or not all(isinstance(v, str) and v for v in value)):
            raise PydanticCustomError("module_names", "expected a non-empty list of module names")
        if isinstance(value, str) and not value:
            raise PydanticCustomError("module_names", "expected module names, a regex of module names or 'all-linear'")
        return value

    @model_validator(mode="after")
    def _lora_accepts(self):
        from .loading import lora_config

        try:
            lora_config(self)  # LoraConfig's own checks, at start-up
        except (TypeError, ValueError) as exc:
            raise PydanticCustomError("lora", "peft.LoraConfig rejected the section: {reason}", {"reason": str(exc)}) from None
        return self


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
    # The core's own keys, strictly: "false" is no bool (the component's keys are checked
    # against its factory's annotations: trl_plus.registry.ComponentInfo.check_values).
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)
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
    peft: PeftSection | None = None
    filters: list[ComponentSpec] = []
    rollout_filters: list[ComponentSpec] = []
    eval: dict[str, Any] = {}
    report: dict[str, Any] = {}
    stages: dict[str, Any] = {}
    launcher: dict[str, Any] = {}  # a pipeline's (trl_plus.pipeline.config.LauncherSection)


@dataclass
class Recipe:
    """A validated recipe: the typed sections, the raw dict, where it came from."""

    spec: RecipeModel
    raw: dict
    source: Path | None
    checked_deep: bool = False  # what its kind's sections point to was checked too (``deep``)

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
        """The recipe as saved next to a run, addresses without their credentials."""
        from .redact import redact_urls

        return yaml.safe_dump(redact_urls(self.raw), sort_keys=False)


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


# The most values (mappings, lists and scalars, counted as written out: through YAML
# aliases too) a recipe may hold. A recipe is a page of settings; an alias "bomb" of a few
# lines expands to billions of values, and every walk over the recipe would hang on it.
MAX_RECIPE_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only, no Python objects) for recipes; use
    :func:`read_yaml`, which also refuses duplicate keys and bounds what aliases expand to."""


def _node_items(node) -> list | None:
    """(path part, child) of a YAML node; None for a scalar."""
    if isinstance(node, yaml.MappingNode):
        return [(k.value if isinstance(k, yaml.ScalarNode) else "?", v) for k, v in node.value]
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return None


def _data_items(value) -> list | None:
    """(path part, child) of a recipe mapping or list; None for anything else."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    return None


class _Endless(Exception):
    def __init__(self, loc, obj):
        self.loc, self.obj = loc, obj


def _expanded_sizes(root, items) -> dict:
    """Every container's size (values below it, counted as written out), by ``id``; each
    container is counted once however often an alias repeats it, so this takes as long as
    the text is long. Raises :class:`_Endless` for a container that holds itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(obj, loc):
        children = items(obj)
        if children is None:
            return 1
        key = id(obj)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Endless(loc, obj)
        active.add(key)
        total = 1 + sum(size(child, loc + (part,)) for part, child in children)
        active.discard(key)
        sizes[key] = total
        return total

    size(root, ())
    return sizes


def _check_expansion(root, items, line=lambda obj: None) -> None:
    """Refuse a recipe that writes out to more than ``MAX_RECIPE_VALUES`` values, or holds
    itself (``&a [*a]``), naming the key where it happens."""

    def at(loc, obj):
        n = line(obj)
        return f"{_format_loc(loc) or 'the recipe'}{f' (line {n})' if n else ''}"

    try:
        sizes = _expanded_sizes(root, items)
    except _Endless as exc:
        raise RecipeError(f"{at(exc.loc, exc.obj)} contains itself through a YAML alias (an endless value): "
                          "write the values out") from None
    except RecursionError:
        raise RecipeError("the recipe is nested too deeply to read (thousands of levels)") from None
    total = sizes.get(id(root), 1)
    if total <= MAX_RECIPE_VALUES:
        return
    loc, obj = (), root
    while True:  # down to the smallest value that is too large alone
        big = [(part, child) for part, child in items(obj) or () if sizes.get(id(child), 1) > MAX_RECIPE_VALUES]
        if not big:
            break
        part, obj = big[0]
        loc += (part,)
    raise RecipeError(
        f"{at(loc, obj)} expands to {sizes.get(id(obj), 1):,} values (YAML aliases, *name, repeat what they "
        f"point to); a recipe may hold at most {MAX_RECIPE_VALUES:,}: write fewer values, or put data in a file"
    )


def _duplicate_keys(root, loader, source=None) -> list[tuple[str, str]]:
    """(key path, message) for every key written twice in one mapping (a merge key, ``<<``,
    may be overridden: that is what it is for)."""
    found, seen_nodes = [], set()

    def walk(node, loc):
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag != _MERGE_TAG and isinstance(key_node, yaml.ScalarNode):
                    key, line = loader.construct_object(key_node), key_node.start_mark.line + 1
                    try:
                        first = lines.get(key)
                        lines.setdefault(key, line)
                    except TypeError:  # an unhashable key: construction says so
                        first = None
                    if first is not None:
                        found.append((_format_loc(loc + (key,)),
                                      f"written twice in one mapping{f' of {source}' if source else ''} "
                                      f"({f'lines {first} and {line}' if first != line else f'both on line {line}'}); "
                                      "YAML would silently keep only the last: delete one"))
                walk(value_node, loc + (key_node.value if isinstance(key_node, yaml.ScalarNode) else "?",))
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                walk(child, loc + (i,))

    walk(root, ())
    return found


def _load_yaml(text: str, source=None):
    """``text`` as plain data (``yaml.SafeLoader``), refused with a :class:`RecipeError` when a
    key is written twice in one mapping or aliases expand it beyond ``MAX_RECIPE_VALUES``
    values; both are checked on the parsed nodes, before anything is built or walked.
    Raises ``yaml.YAMLError`` for text that is not YAML."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, _node_items, lambda n: n.start_mark.line + 1)
        duplicates = _duplicate_keys(node, loader, source)
        if duplicates:
            raise RecipeProblems(duplicates)
        return loader.construct_document(node)
    except RecursionError:
        raise RecipeError("the recipe is nested too deeply to read (thousands of levels)") from None
    finally:
        loader.dispose()


def read_yaml(text: str, source: str | Path | None = None):
    """A recipe's YAML text as plain data: every recipe is read through here (see
    :func:`_load_yaml`); errors name ``source``."""
    try:
        return _load_yaml(text, source)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source or 'the recipe'}: not valid YAML: {exc}") from None
    except RecipeProblems:
        raise
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}" if source else str(exc)) from None


def parse_override(text: str) -> tuple[list[str | int], Any]:
    if "=" not in text:
        raise RecipeError(f"--set expects KEY=VALUE, got {text!r}")
    key, _, value = text.partition("=")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    try:
        parsed = _load_yaml(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    except RecipeError as exc:
        raise RecipeError(f"--set {key.strip()}=...: {exc}") from None
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


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(key, message) for every error pydantic found."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(loc[:-1])
            name = str(loc[-1])
            hint = difflib.get_close_matches(name, allowed, n=1)
            out.append((key, f"unknown key {name!r}." + (f" Did you mean: {hint[0]}?" if hint else "")
                        + f" Allowed: {', '.join(allowed)}"))
        elif err["type"] == "missing":
            out.append((key, "missing required key"))
        else:
            kind = err["type"].partition("_")[0]
            hint = yaml_hint(err.get("input"), wants_number=kind in ("int", "float"), wants_bool=kind == "bool",
                             wants_text=kind == "string", integer=kind == "int")
            out.append((key, f"{err['msg']} (got {shown(err.get('input'))}){hint}"))
    return out


class Problems:
    """What is wrong with a recipe, collected so that one run reports all of it."""

    def __init__(self):
        self.items: list[tuple[str | None, str]] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, key: str | None, message: str) -> None:
        if (key, message) not in self.items:
            self.items.append((key, message))

    def add_error(self, where: str | None, exc: BaseException) -> None:
        """An error raised while checking ``where``: under its own key when that lies
        within ``where``, else under ``where`` with its whole text."""
        if isinstance(exc, RecipeProblems):
            for key, message in exc.problems:
                self.add(key, message)
            return
        key = getattr(exc, "key", None)
        if isinstance(exc, RecipeError) and key and (where is None or key == where or key.startswith((f"{where}.", f"{where}["))):
            self.add(key, str(exc).removeprefix(f"{key}: "))
            return
        message = str(exc).removeprefix(f"{where}: ") if where else str(exc)  # texts often start with their key
        if not isinstance(exc, TrlPlusError):
            message = f"{type(exc).__name__}: {message}"
        self.add(where, message)

    @contextlib.contextmanager
    def check(self, where: str | None = None):
        """Record an error raised in the block instead of raising it."""
        try:
            yield
        except Exception as exc:
            self.add_error(where, exc)

    def under(self, prefix: str) -> bool:
        return any(k and (k == prefix or k.startswith((f"{prefix}.", f"{prefix}["))) for k, _ in self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise RecipeProblems(self.items)


# ---------------------------------------------------------------------------------------
# recipe kinds
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeKind:
    """A kind of recipe that another part of trl-plus owns, marked by a top-level key.

    ``check(recipe, hooks, problems, deep)`` validates the kind's sections into
    ``problems``; ``deep``: also what they point to (files, datasets), as
    ``trl-plus validate`` does.
    """

    key: str
    check: typing.Callable
    command: str  # the command that runs it, for messages


RECIPE_KINDS: dict[str, RecipeKind] = {}


def register_recipe_kind(key: str, check, command: str) -> None:
    """Let recipes with top-level ``key`` be validated by ``check`` (see :class:`RecipeKind`).

    The pipeline registers ``stages`` when ``trl_plus.pipeline`` is imported: this module
    imports no owner of a kind. Until its owner is imported, a kind's sections are
    checked when it runs.
    """
    RECIPE_KINDS[key] = RecipeKind(key, check, command)


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def trainer_config_class(trainer: str):
    module, cls = TRAINERS[trainer]
    return getattr(importlib.import_module(module), cls)


# Value ranges of trainer-config fields, checked before the config is built: TRL and
# transformers accept these values and fail (or silently do something else) much later.
_RANGES = (
    (("learning_rate", "critic_learning_rate", "num_train_epochs", "beta", "temperature", "logging_steps",
      "save_steps", "eval_steps"), lambda v: v > 0, "a number > 0"),
    (("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
      "generation_batch_size", "precompute_ref_batch_size", "num_iterations", "num_ppo_epochs", "num_mini_batches",
      "steps_per_generation", "max_length", "max_completion_length"), lambda v: v >= 1, "an integer >= 1"),
    (("max_steps",), lambda v: v == -1 or v > 0,
     "a number of optimizer steps > 0, or -1 (the default: train for num_train_epochs)"),
    (("weight_decay", "max_grad_norm", "warmup_steps"), lambda v: v >= 0, "a number >= 0"),
)
# PPO's beta (its KL coefficient) may be 0: no KL penalty and no reference model, as in RLOO.
_PPO_RANGES = ((("beta",), lambda v: v >= 0, "a number >= 0 (0: no KL penalty, no reference model)"),)
# "vf_coef must be >= 0, got -1": a config's own message that starts with its field
_FIELD_MESSAGE = re.compile(r"^`?(?P<field>[a-z_][a-z0-9_]*)`? (must|should|is|has|cannot|can't)\b")


def _check_trainer_section(spec: RecipeModel, problems: Problems) -> None:
    section = spec.trainer
    values = getattr(spec, section)
    other = "ppo" if section == "dpo" else "dpo"
    if getattr(spec, other):
        problems.add(other, f"section {other!r} is for trainer {other!r}, but trainer is {section!r}")
    cls = trainer_config_class(section)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _type_hints(cls)
    bad = False
    for key, value in values.items():
        where = f"{section}.{key}"
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            problems.add(where, f"unknown {cls.__name__} field {key!r}." + (f" Did you mean: {hint[0]}?" if hint else ""))
        elif key == "output_dir":
            problems.add(where, "set the output folder with --output-dir, not in the recipe")
        elif found := trainer_value_problems(hints, key, value, section):
            for loc, message in found:
                problems.add(_format_loc((section, key) + loc), message)
        else:
            continue
        bad = True
    if bad:
        return  # the config would only repeat what is said above, less clearly
    try:
        build_trainer_config(spec, "/tmp/trl-plus-validate", device_defaults=False)
    except RecipeError as exc:
        problems.add_error(section, exc)
    except Exception as exc:
        m = _FIELD_MESSAGE.match(str(exc))
        key = f"{section}.{m['field']}" if m and m["field"] in fields else section
        problems.add(key, f"{cls.__name__} rejected the section: {exc}")


def trainer_value_problems(hints: dict, key: str, value, section: str) -> list[tuple[tuple, str]]:
    """(location inside the value, message) for a trainer-config value that is not finite
    (anywhere in it), not of its field's type (with how YAML may have misread it), or out
    of range; [] when it is fine. ``hints``: the config class's type hints."""
    from .registry import _kinds

    bad = _non_finite(value)
    if bad is not None:
        return [(bad[0], f"must be a finite number, got {bad[1]}")]
    annotation = hints.get(key)
    kinds, words = _kinds(annotation) if annotation is not None else (set(), [])
    hint = yaml_hint(value, wants_number=bool({int, float} & kinds), wants_bool=bool in kinds,
                     wants_text=str in kinds and bool not in kinds, words=words,
                     integer=int in kinds and float not in kinds)
    expected = _simple_types(annotation)
    if expected and not _type_ok(value, expected):
        return [((), f"expected {' or '.join(sorted({t.__name__ for t in expected}))}, got {shown(value)}{hint}")]
    if isinstance(value, bool) and kinds and bool not in kinds:  # e.g. save_strategy: no
        return [((), f"expected {' or '.join(repr(w) for w in words) if words else 'a string'}, got {value}{hint}")]
    message = _out_of_range(key, value, section)
    return [((), message)] if message is not None else []


def _non_finite(value, loc: tuple = ()) -> tuple[tuple, float] | None:
    """(location, value) of the first float in ``value`` (a number, list or mapping) that is
    not finite (inf, nan), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (loc, value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for part, item in items:
        found = _non_finite(item, loc + (part,))
        if found is not None:
            return found
    return None


def _out_of_range(key: str, value, section: str = "dpo") -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for keys, ok, allowed in (_PPO_RANGES if section == "ppo" else ()) + _RANGES:
        if key in keys:  # the first range naming the key decides
            return None if ok(value) else f"must be {allowed}, got {value!r}"
    return None


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


# ``ppo.critic_init`` values that name no model: the policy's backbone, the recipe's reward model.
CRITIC_INIT_WORDS = ("policy", "reward")
_PY_FILE_REF = re.compile(r"^(?P<file>[^:]+\.py):(?P<attr>[\w.]+)$")
_PY_MODULE_REF = re.compile(r"^(?P<module>[A-Za-z_]\w*):(?P<attr>[\w.]+)$")
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
    component spec, ``ppo.critic_init`` unless ``policy`` or ``reward``), ``file.py:attr``
    references (and ``module:attr`` ones whose ``module.py`` is in ``base``: a module beside
    the recipe), ``eval.cache`` and
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
    ppo = raw.get("ppo")
    if isinstance(ppo, dict) and ppo.get("critic_init") not in CRITIC_INIT_WORDS:
        put(ppo, "critic_init", ("ppo", "critic_init"))  # a model folder (a hub id is left as it is)
    stages = raw.get("stages")
    if isinstance(stages, dict):
        put(stages.get("sft"), "base", ("stages", "sft", "base"))
        data_entry(stages.get("pairs"), "dataset", ("stages", "pairs", "dataset"))
        data_entry(stages.get("pairs"), "prompts", ("stages", "pairs", "prompts"))

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
            m = _PY_MODULE_REF.match(node)
            if m and (base / f"{m['module']}.py").is_file():
                # a module beside the recipe, as a script imports the modules beside it
                return f"{os.path.abspath(base / (m['module'] + '.py'))}:{m['attr']}"
        return node

    for key in _COMPONENT_SECTIONS:
        if key in raw:
            raw[key] = fix(raw[key], (key,))


def check_python_ref(ref: Any, where: str = "function") -> None:
    """A ``module:attr`` or ``file.py:attr`` reference checked without running any of it
    (``trl-plus validate --no-import``): the module's file is found (``importlib``'s
    finders, no package imported) and its source, parsed with ``ast``, defines the
    attribute's first name at its top level (a def, class, assignment or import; a class
    also its next name). A module without Python source (built in, compiled) is only found.
    Raises :class:`RecipeError` under ``where``."""
    import ast

    if not isinstance(ref, str) or ":" not in ref:
        raise RecipeError(f"expected 'module:attr' or 'file.py:attr', got {shown(ref)}", where)
    module_ref, _, attr = ref.rpartition(":")
    if module_ref.endswith(".py"):
        origin = Path(module_ref).expanduser()
        if not origin.is_file():
            raise RecipeError(f"cannot find {module_ref!r} for {ref!r}: no such file", where)
    else:
        origin = _module_file(module_ref, ref, where)
        if origin is None:
            return  # found, but no source to read
    try:
        tree = ast.parse(origin.read_bytes(), filename=str(origin))
    except SyntaxError as exc:
        raise RecipeError(f"{origin} for {ref!r} is not valid Python: {exc.msg} (line {exc.lineno})", where) from None
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read {origin} for {ref!r}: {exc}", where) from None
    names = _top_level_names(tree.body)
    first, *rest = attr.split(".")
    if first not in names:
        if "*" in names or "__getattr__" in names:
            return  # a star import or a module __getattr__: only running it would tell
        public = sorted(n for n in names if not n.startswith("_"))
        close = difflib.get_close_matches(first, public, n=1)
        raise RecipeError(f"{module_ref!r} defines no {first!r} at its top level (read without importing it)."
                          + (f" Did you mean: {close[0]}?" if close else "")
                          + f" It defines: {', '.join(public[:20]) or 'nothing'}{' ...' if len(public) > 20 else ''}",
                          where)
    node = names[first]
    if rest and isinstance(node, ast.ClassDef):
        members = _top_level_names(node.body)
        if rest[0] not in members and not node.bases:
            raise RecipeError(f"class {first!r} in {module_ref!r} defines no {rest[0]!r} (read without importing it)",
                              where)


def _module_file(module_ref: str, ref: str, where: str) -> Path | None:
    """The source file of module ``module_ref``, found as ``import`` would find it but
    without importing it or its packages; None when it has no Python source."""
    import importlib.machinery
    import importlib.util
    import sys

    search, spec = None, None
    parts = module_ref.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        try:
            if spec is None and i == 0:
                spec = importlib.util.find_spec(name)  # a top-level name: nothing is imported to find it
            elif spec is None:
                for finder in sys.meta_path:
                    find = getattr(finder, "find_spec", None)
                    spec = find(name, search) if find is not None else None
                    if spec is not None:
                        break
        except (ImportError, ValueError) as exc:
            raise RecipeError(f"cannot find module {name!r} for {ref!r}: {exc}", where) from None
        if spec is None:
            raise RecipeError(f"cannot find module {name!r} for {ref!r} (looked for it without importing anything)",
                              where)
        search = spec.submodule_search_locations
        if search is None and i < len(parts) - 1:
            raise RecipeError(f"cannot find module {module_ref!r} for {ref!r}: {name!r} is not a package", where)
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _top_level_names(body) -> dict:
    """The names a module (or class) body binds at its top level, also inside if/try/with
    blocks: name -> the statement ("*" for a star import)."""
    import ast

    names: dict = {}

    def targets(node, stmt):
        if isinstance(node, ast.Name):
            names.setdefault(node.id, stmt)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt, stmt)
        elif isinstance(node, ast.Starred):
            targets(node.value, stmt)

    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.setdefault(stmt.name, stmt)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                targets(target, stmt)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets(stmt.target, stmt)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                names.setdefault(alias.asname or alias.name.split(".")[0], stmt)
        elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)) or type(stmt).__name__ == "TryStar":
            for block in ("body", "orelse", "finalbody"):
                names.update({k: v for k, v in _top_level_names(getattr(stmt, block, [])).items() if k not in names})
            for handler in getattr(stmt, "handlers", []):
                names.update({k: v for k, v in _top_level_names(handler.body).items() if k not in names})
    return names


def _looks_like_file(path: str) -> bool:
    from .data_checks import file_format

    return file_format(path) is not None or path.startswith(("/", "./", "../"))


def _check_data(spec: RecipeModel, written: dict, base: Path, from_cli, problems: Problems, hooks=None) -> None:
    """Data files exist; a missing one is named as written and as resolved, and where
    a relative path was looked up (:param from_cli: ``from_cli(location)``: given by ``--set``).
    One that exists is checked as the loader will read it (``trl_plus.loading.data_file_check``)."""
    from .loading import data_file_check

    for split in ("train", "eval"):
        entry = getattr(spec.data, split)
        if entry is not None and Path(entry.path).is_file():
            problem = data_file_check(entry.path, spec.data.on_error, hooks)
            if problem:
                problems.add(f"data.{split}.path", problem)
        if entry is None or not _looks_like_file(entry.path) or Path(entry.path).exists():
            continue
        loc = ("data", split, "path")
        given = _at(written, loc)
        if given is _MISSING:  # written as a bare string, ``train: file.jsonl``
            given = _at(written, loc[:2])
        how = ""
        if isinstance(given, str) and not Path(given).expanduser().is_absolute():
            how = (f" (--set gave {given!r}; a relative path on the command line resolves against the working "
                   f"directory, {Path.cwd()})" if from_cli(loc) else
                   f" (the recipe says {given!r}; a relative path in a recipe resolves against the recipe's "
                   f"folder, {base})")
        problems.add(f"data.{split}.path", f"file not found: {entry.path}{how}")


def _check_components(spec: RecipeModel, hooks, problems: Problems) -> None:
    """Build every component the recipe names, as a dry run: nothing loads a model."""
    from .components import Components

    components = Components(hooks, problems)
    components.reward_mix([r.model_dump() for r in spec.rewards])
    if spec.kl is not None:
        components.kl_schedule(spec.kl.model_dump())
    for key in ("filters", "rollout_filters"):
        components.filter_chain([f.model_dump() for f in getattr(spec, key)], key)
    if spec.rollout_filters and spec.trainer != "ppo" and not spec.stages:
        problems.add("rollout_filters", "rollout filters apply to trainer 'ppo' only")


def check_eval_section(section: Any, hooks, problems: Problems | None = None):
    """An ``eval:`` section as ``trl-plus eval`` runs it: its keys
    (``trl_plus.eval.validate_eval_section``), then its judges and gold reward built as a
    dry run (no model loads). Returns the parsed section, or None when it has problems;
    raises :class:`RecipeProblems` unless ``problems`` is given to collect them."""
    from trl_plus.eval import validate_eval_section

    from .components import Components

    found = Problems() if problems is None else problems
    parsed = None
    with found.check("eval"):
        parsed = validate_eval_section(section, hooks)
    if parsed is not None:
        components = Components(hooks, found)
        for i, judge in enumerate(parsed.judges):
            check_judge(judge, f"eval.judges[{i}]", components)
        if parsed.gold is not None:
            components.reward_source(parsed.gold, "eval.gold")
    if problems is None:
        found.raise_if_any()
    return None if found.under("eval") else parsed


def check_judge(spec: Any, where: str, components) -> None:
    """Build a judge (a judge spec or a reward-source name) with dry-run ``components``;
    a reward source judging is built under ``where.source``."""
    from trl_plus.eval.judging import normalise_judge_spec

    with components.problems.check(where):
        spec = normalise_judge_spec(spec, components.hooks, where)
        if spec["name"] == "reward_source":
            source = components.reward_source(spec.get("source"), f"{where}.source")
            if source is None:
                return  # recorded under where.source
            spec = {**spec, "source": source}
        components.judge(spec, where)


def _written_out(value):
    """A copy of a recipe in which nothing is shared: what a YAML alias repeated becomes a
    copy of its own, so that ``--set`` and path resolution change one place only."""
    if isinstance(value, dict):
        return {k: _written_out(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_written_out(v) for v in value]
    return copy.deepcopy(value)


def _validate_sections(raw: dict, problems: Problems) -> RecipeModel:
    """The typed recipe; a top-level section pydantic rejects is reported and left out,
    so that the other sections are still checked."""
    try:
        return RecipeModel.model_validate(raw)
    except ValidationError as exc:
        for key, message in _pydantic_problems(exc):
            problems.add(key, message)
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
    try:
        return RecipeModel.model_validate({k: v for k, v in raw.items() if k not in bad})
    except ValidationError:
        return RecipeModel()


def validate_dict(raw: Any, hooks=None, source: Path | None = None, overrides: list[str] = (), deep: bool = False) -> Recipe:
    """Validate a recipe mapping completely; raises one :class:`RecipeProblems` (a
    ``RecipeError``) listing every problem, each under its key path, before any model loads.

    :param deep: also check what a recipe kind's sections point to (a pipeline's prompt
        files, datasets, benchmark tasks), as ``trl-plus validate`` does.
    """
    from .manager import Hooks

    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe is a mapping of keys, got {type(raw).__name__}")
    _check_expansion(raw, _data_items)  # a mapping built in Python, or read by other means
    raw = _written_out(raw)
    base = source.parent if source else Path.cwd()
    written = copy.deepcopy(raw)  # as written, for messages that say where a path was looked up
    _resolve_paths(raw, base)
    before = raw
    if overrides:
        # A value typed on the command line is a command-line path: it resolves against the
        # working directory, whichever folder the recipe lives in (a shipped recipe's is
        # inside the installed package).
        before = copy.deepcopy(raw)
        for text in overrides:
            apply_override(raw, text)
            apply_override(written, text)
        _resolve_paths(raw, Path.cwd(), only=lambda loc: _at(raw, loc) != _at(before, loc))
    from_cli = lambda loc: _at(raw, loc) != _at(before, loc)  # noqa: E731
    problems = Problems()
    spec = _validate_sections(raw, problems)
    hooks = Hooks.of(hooks)
    kinds = [kind for key, kind in RECIPE_KINDS.items() if raw.get(key)]
    if not raw.get("stages"):
        for key in ("trainer", "model", "data"):
            if getattr(spec, key) is None and not problems.under(key):
                problems.add(key, "missing required key")
        if spec.launcher:
            problems.add("launcher", "is for pipeline recipes (trl-plus compare); train one recipe on several "
                                     "processes with trl-plus launch RECIPE --accelerate-config NAME")
    if spec.model is not None:
        from .loading import check_model_name

        for key in ("name_or_path", "tokenizer", "ref_model"):
            if getattr(spec.model, key):
                with problems.check(f"model.{key}"):
                    check_model_name(getattr(spec.model, key), f"model.{key}")
    if spec.data is not None:
        _check_data(spec, written, base, from_cli, problems, hooks)
    if spec.trainer is not None:
        _check_trainer_section(spec, problems)
    critic = spec.ppo.get("critic_init") if spec.trainer == "ppo" else None
    if isinstance(critic, str) and critic and critic not in CRITIC_INIT_WORDS and not problems.under("ppo.critic_init"):
        from .loading import resolve_model_ref

        with problems.check("ppo.critic_init"):  # a folder must exist, a hub id be valid (and cached offline)
            resolve_model_ref(critic, "ppo.critic_init", lookup=False)
    elif critic == "reward" and not any(r.name == "reward_model" and isinstance(getattr(r, "model", None), str)
                                        for r in spec.rewards):
        problems.add("ppo.critic_init", "critic_init 'reward' starts the critic from the recipe's reward model, and "
                                        "rewards lists no 'reward_model' source with a model: add one, or use "
                                        "critic_init: policy or a model path")
    _check_components(spec, hooks, problems)
    recipe = Recipe(spec, raw, source)
    for kind in kinds:  # a pipeline: its stages, and its eval section as its eval stage runs it
        if problems.under(kind.key):
            continue  # not even a mapping: said above
        with problems.check():
            kind.check(recipe, hooks, problems, deep)
    if not spec.stages and spec.eval:
        check_eval_section(spec.eval, hooks, problems)
    problems.raise_if_any()
    return recipe


def load_recipe(name_or_path: str | Path, overrides: list[str] = (), hooks=None, deep: bool = False) -> Recipe:
    """Find, read (:func:`read_yaml`: plain data), override and validate a recipe (see
    :func:`validate_dict`); calls ``recipe_loaded``."""
    from .manager import Hooks

    path = find_recipe(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not a recipe: not UTF-8 text (byte {exc.start}); a recipe is a YAML file") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe: {exc.strerror or exc}") from None
    raw = read_yaml(text, path)
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty (no keys, or only comments); start from a shipped recipe, "
                          "e.g. trl-plus validate tiny-dpo")
    hooks = Hooks.of(hooks)
    recipe = validate_dict(raw, hooks, source=path.resolve(), overrides=list(overrides), deep=deep)
    hooks.recipe_loaded(recipe)
    return recipe
