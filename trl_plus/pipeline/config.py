"""The pipeline's part of a recipe: the ``stages:``, ``gold:``, ``report:`` and
``launcher:`` sections (``eval:`` is the evaluation harness's, validated by
``trl_plus.eval.validate_eval_section``); the pipeline registers them as recipe sections
(``trl_plus.pipeline.section``).

Validated here, before anything heavy starts; every error is a ``RecipeError`` naming the
key (``stages.dpo.betas``), the value and what is allowed. ``args`` sections are checked
field by field against the config they feed (``SFTConfig``, ``RewardConfig``, and the
config class of the trainer kind a policy stage runs: ``Hooks.trainer_kinds``). Besides the
pipeline's own policy stages (``ppo``, ``ppo_gt``, ``dpo``), every registered trainer kind
can be an arm under its own name (``stages.rloo``): ``trl_plus.pipeline.arms``.

:func:`parse` runs once per recipe: its result is kept on the recipe
(``recipe.parsed["stages"]``), and every later call returns it.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from ..errors import RecipeError
from ..recipe import Problems, RewardSpec, format_loc, pydantic_problems, trainer_value_problems, type_hints
from ..recipe import Strict as _Strict  # every number finite (betas: [.inf] is refused)
from .arms import ArmStage, PolicyStage, arm_names, parse_arms


class CorpusStage(_Strict):
    """The generated review corpus of the quickstart (``trl_plus.pipeline.corpus``)."""

    reviews: int = Field(20000, gt=0)
    prompts: int = Field(2000, gt=0)
    eval_prompts: int = Field(256, gt=0)  # test prompts (the reported numbers)
    val_prompts: int = Field(128, gt=0)  # validation prompts (which checkpoints form a frontier)
    vocab_size: int = Field(600, ge=300)
    seed: int = 0


class ModelShape(_Strict):
    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    max_len: int = Field(128, gt=8)


class SftStage(_Strict):
    """Train the base policy with ``trl.SFTTrainer``: from scratch (``model``) or from ``base``."""

    base: str | None = None  # a local folder or hub id; None: a tiny Llama built from scratch
    model: ModelShape = ModelShape()
    train: bool = True
    args: dict[str, Any] = {}


class PairsStage(_Strict):
    """Sample completions from the SFT model and label chosen/rejected with the gold reward."""

    dataset: str | None = None  # an existing preference dataset (prompt/chosen/rejected) instead
    # Without the corpus: prompts to sample the pairs from (a .jsonl file or a dataset spec
    # {path, split, ...} with a `prompt` column), at most max_prompts of them.
    prompts: str | dict[str, Any] | None = None
    max_prompts: int | None = Field(None, ge=1)
    samples_per_prompt: int = Field(2, ge=2)
    max_new_tokens: int = Field(24, gt=0)
    temperature: float = Field(1.0, gt=0)
    batch_size: int = Field(128, gt=0)
    min_margin: float = Field(0.0, ge=0)


class RewardStage(_Strict):
    """Train a reward model on the pairs with ``trl.RewardTrainer``."""

    args: dict[str, Any] = {}
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    normalize: bool = True  # rescale RM scores to the gold reward's spread on the pairs


class PPOStage(PolicyStage):
    """PPO against the learned reward model (``ppo``) or the gold reward (``ppo_gt``)."""

    kl_coefs: list[float] | None = None
    kl_targets: list[float] | None = None  # adaptive controller (Ziegler et al.) per target
    # The adaptive controller's horizon in samples. None (the default): scaled to each run,
    # ``horizon_fraction`` x the samples the run generates (``policy.kl_horizon``), so a
    # kl_targets sweep moves kl_coef however long its runs are; a number here wins.
    horizon: int | None = Field(None, gt=0)
    horizon_fraction: float = Field(0.1, gt=0, le=1)

    @field_validator("kl_coefs", "kl_targets")
    @classmethod
    def _positive(cls, value):
        if value is not None and (not value or any(v <= 0 for v in value)):
            raise ValueError(f"a non-empty list of numbers > 0, got {value}")
        return value


class DPOStage(PolicyStage):
    betas: list[float] = [0.1]

    @field_validator("betas")
    @classmethod
    def _positive(cls, value):
        if not value or any(v <= 0 for v in value):
            raise ValueError(f"a non-empty list of numbers > 0, got {value}")
        return value


class Stages(_Strict):
    seeds: list[int] = Field(default_factory=lambda: [0])
    checkpoints: int = Field(3, ge=1, le=20)
    corpus: CorpusStage | None = None
    sft: SftStage = SftStage()
    pairs: PairsStage = PairsStage()
    reward: RewardStage | None = None
    ppo: PPOStage | None = None
    ppo_gt: PPOStage | None = None
    dpo: DPOStage | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value):
        if not value or len(set(value)) != len(value):
            raise ValueError(f"a non-empty list of distinct integers, got {value}")
        return value


MIN_EFFECT = 0.02


class ReportSection(_Strict):
    title: str = "PPO vs DPO"
    kl_budget: float | None = None  # the verdict compares methods at KL <= this; None: what the methods reach
    # The smallest true difference in gold reward that matters: what power is planned for.
    # Stated before the run, never taken from the observed difference.
    min_effect: float = Field(MIN_EFFECT, gt=0, allow_inf_nan=False)


class LauncherSection(_Strict):
    """How the policy runs train: each one a ``trl-plus train`` under ``accelerate launch``
    (``accelerate_config``: a shipped name or a file, relative to the recipe) or ``torchrun``
    (several CPU processes), instead of inside the pipeline's own process."""

    command: Literal["accelerate", "torchrun"] = "accelerate"
    accelerate_config: str | None = None
    num_processes: int | None = Field(None, ge=1)


@dataclasses.dataclass
class PipelineConfig:
    stages: Stages
    report: ReportSection
    gold: list[dict]  # the recipe's ``gold:``: the held-out gold reward source(s); read it here, nowhere else
    launcher: LauncherSection | None = None  # None: every run trains in this process
    gold_key: str = "gold"  # the key the recipe wrote the gold reward under (``rewards``: its old name)
    # What the recipe points to was checked when it loaded (``deep``: trl-plus validate,
    # compare), so the runner's start-up check has nothing left to do.
    preflighted: bool = False
    # The arms that are registered trainer kinds (``stages.rloo``), in the recipe's order.
    arms: dict[str, ArmStage] = dataclasses.field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """Every arm: the pipeline's own policy stages the recipe names, then the other trainer kinds."""
        return [m for m in ("ppo", "ppo_gt", "dpo") if getattr(self.stages, m) is not None] + list(self.arms)


# The trainer kind each policy stage runs (its ``args`` are that kind's config fields).
STAGE_KINDS = {"dpo": "dpo", "ppo": "ppo", "ppo_gt": "ppo"}
# Set by the pipeline itself: a recipe that sets them would be silently overridden.
_RESERVED = {"output_dir", "seed", "save_steps", "save_strategy", "beta", "kl_coef"}
log = logging.getLogger("trl_plus")


def _args_config(stage: str, hooks) -> type | None:
    """The config class a stage's ``args`` feed (an arm's: its trainer kind's); None when
    its trainer is not installed."""
    try:
        if stage not in ("sft", "reward"):
            return hooks.trainer_kinds[STAGE_KINDS.get(stage, stage)].config_class
        import trl

        return {"sft": trl.SFTConfig, "reward": trl.RewardConfig}[stage]
    except ImportError:
        return None  # the trainer is missing: the stage itself says so when it runs


def _check_args(stage: str, args: dict, problems, hooks) -> None:
    cls = _args_config(stage, hooks)
    if cls is None:
        return
    name = cls.__name__
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = type_hints(cls)
    kind = hooks.trainer_kinds.get(stage) if stage not in ("sft", "reward", *STAGE_KINDS) else None
    reserved = _RESERVED | ({kind.kl_field} if kind is not None and kind.kl_field else set())
    for key in args:
        where = f"stages.{stage}.args.{key}"
        if key in reserved:
            problems.add(where, "set by the pipeline (seeds, checkpoints, betas/kl_coefs keys); remove it")
        elif key not in fields:
            hint = difflib.get_close_matches(key, sorted(fields), n=1)
            problems.add(where, f"unknown {name} field {key!r}." + (f" Did you mean: {hint[0]}?" if hint else ""))
        else:  # what a trainer recipe's values are held to: finite, of the field's type, in range
            section = STAGE_KINDS.get(stage, stage)
            for loc, message in trainer_value_problems(hints, key, args[key], section):
                problems.add(format_loc(("stages", stage, "args", key) + loc), message)


def parse(recipe, hooks=None) -> PipelineConfig:
    """The pipeline config of a validated recipe, parsed once: kept on the recipe, and
    returned from there by every later call. Every problem is found before any is raised:
    one error (``RecipeProblems`` when there are several) lists them all, each under its
    key (a list item as ``--set`` writes it: ``stages.dpo.betas.0``)."""
    parsed = recipe.parsed.get("stages")
    if isinstance(parsed, PipelineConfig):
        return parsed
    from ..manager import Hooks

    parsed = _parse(recipe, Hooks.of(hooks))
    recipe.parsed["stages"] = parsed
    return parsed


def _parse(recipe, hooks) -> PipelineConfig:
    raw = recipe.raw
    problems = Problems()
    stages = report = launcher = None
    raw_stages, keys = raw.get("stages") or {}, list(Stages.model_fields)
    named = arm_names(raw_stages, keys, hooks.trainer_kinds) if isinstance(raw_stages, dict) else []
    if isinstance(raw_stages, dict):  # the pipeline's own keys here; the other trainer kinds are arms
        raw_stages = {k: v for k, v in raw_stages.items() if k in keys}
    try:
        stages = Stages.model_validate(raw_stages)
    except ValidationError as exc:
        problems.add_validation(exc, Stages, ("stages",), dotted_indices=True)
    arms = {}
    if isinstance(raw.get("stages"), dict):
        arms = parse_arms(raw["stages"], keys, hooks.trainer_kinds, problems, raw["stages"].get("reward") is not None)
    report_raw = raw.get("report") or {}
    if isinstance(report_raw, dict) and "uncertainty" in report_raw:
        # Once accepted ("seeds" | "sampling") and never read: refused, so no recipe believes it chose something.
        problems.add("report.uncertainty", f"removed (got {report_raw['uncertainty']!r}): the report's intervals "
                                           "always take seeds (training runs) as the unit of uncertainty, and "
                                           "prompts within a run are not independent evidence; delete the key")
        report_raw = {k: v for k, v in report_raw.items() if k != "uncertainty"}
    try:
        report = ReportSection.model_validate(report_raw)
    except ValidationError as exc:
        problems.add_validation(exc, ReportSection, ("report",), dotted_indices=True)
    with problems.check("launcher"):
        launcher = _launcher(raw.get("launcher"), recipe.base_dir)
    if raw.get("peft") is not None:
        problems.add("peft", "a comparison trains several policies: give LoRA settings per stage, "
                             "as stages.dpo.peft, stages.ppo.peft or stages.ppo_gt.peft")
    if stages is not None:
        _check_stages(stages, raw, problems, named)
    # each stage's trainer args, read from the recipe as written (so also when another key of stages is wrong)
    for name, section in (raw.get("stages") or {}).items() if isinstance(raw.get("stages"), dict) else ():
        if (name in ("sft", "reward", *STAGE_KINDS) or name in named) and isinstance(section, dict) and isinstance(
                section.get("args"), dict):
            _check_args(name, section["args"], problems, hooks)
    gold, gold_key = _gold(recipe, problems)
    problems.raise_if_any()
    return PipelineConfig(stages, report, gold, launcher, gold_key, arms=arms)


def _gold(recipe, problems: Problems) -> tuple[list[dict], str]:
    """The gold reward source(s) and the key they were written under: ``gold:``, or its
    old name ``rewards:`` (read with a warning; both at once is an error)."""
    raw = recipe.raw
    if "rewards" in raw and "gold" in raw:
        problems.add("rewards", "a pipeline recipe names its gold reward under gold: (rewards: is the old name of "
                                "the same key): give it once, under gold:")
        return [], "gold"
    if "rewards" in raw:
        log.warning("rewards: in a pipeline recipe is the old name of gold: (the gold reward): rename it to gold:")
        specs, key = [r.model_dump() for r in recipe.spec.rewards], "rewards"
    else:
        specs, key = [], "gold"
        try:
            specs = [s.model_dump() for s in TypeAdapter(list[RewardSpec]).validate_python(raw.get("gold") or [])]
        except ValidationError as exc:
            problems.add_validation(exc, RewardSpec, ("gold",))
            return [], key
    if not specs and not problems.under(key):
        problems.add(key, "the pipeline labels pairs and judges every checkpoint with the gold reward: list it "
                          f"under {key}")
    return specs, key


def _check_stages(stages: Stages, raw: dict, problems, arms: list[str] = ()) -> None:
    """What a valid ``stages:`` section must also hold, across its stages (``arms``: the
    keys that name other trainer kinds)."""
    if not (stages.ppo or stages.ppo_gt or stages.dpo or arms):
        problems.add("stages", "a comparison needs at least one arm: ppo, ppo_gt, dpo, or a registered trainer kind "
                               "under its own name")
    if stages.ppo is not None and stages.reward is None:
        problems.add("stages.ppo", "ppo optimises the learned reward model: add a 'reward' stage (or use ppo_gt)")
    for name in ("ppo", "ppo_gt"):
        section = getattr(stages, name)
        if section is not None and section.kl_coefs and section.kl_targets:
            problems.add(f"stages.{name}", "give kl_coefs or kl_targets, not both")
        if section is not None and not section.kl_targets:
            for key in ("horizon", "horizon_fraction"):
                if key in section.model_fields_set:
                    problems.add(f"stages.{name}.{key}", "the adaptive controller's horizon is read only with "
                                                         "kl_targets (a kl_coefs sweep keeps kl_coef fixed); remove it")
        if section is not None and {"horizon", "horizon_fraction"} <= section.model_fields_set:
            problems.add(f"stages.{name}.horizon_fraction", "give horizon (samples) or horizon_fraction (of the "
                                                            "run's samples), not both")
    if stages.corpus is None and stages.sft.base is None:
        problems.add("stages.sft.base", "name a base model (stages.sft.base) or generate the review corpus "
                                        "(stages.corpus)")
    if stages.corpus is None and stages.pairs.dataset is None and stages.pairs.prompts is None:
        problems.add("stages.pairs.dataset", "without the generated corpus, give a preference dataset, or prompts to "
                                             "sample the pairs from (stages.pairs.prompts)")
    if stages.pairs.dataset is not None and stages.pairs.prompts is not None:
        problems.add("stages.pairs", "give a preference dataset or prompts to sample pairs from, not both")
    if stages.corpus is None and not (raw.get("eval") or {}).get("prompts"):
        problems.add("eval.prompts", "without the generated corpus, name the held-out eval prompts")


def _launcher(raw, base_dir) -> LauncherSection | None:
    if not raw:
        return None
    from ..launching import check_accelerate_config, find_accelerate_config

    try:
        section = LauncherSection.model_validate(raw)
    except ValidationError as exc:
        from ..errors import RecipeProblems

        raise RecipeProblems(pydantic_problems(exc, LauncherSection, ("launcher",), dotted_indices=True)) from None
    if section.command == "torchrun":
        if section.accelerate_config is not None:
            raise RecipeError("torchrun takes no accelerate config; use command: accelerate", "launcher.accelerate_config")
        if section.num_processes is None:
            raise RecipeError("torchrun needs the number of processes", "launcher.num_processes")
        return section
    if section.accelerate_config is None:
        raise RecipeError("name a shipped accelerate config (e.g. multi_gpu) or a config file", "launcher.accelerate_config")
    path = find_accelerate_config(section.accelerate_config, "launcher.accelerate_config", base_dir)
    check_accelerate_config(path, "launcher.accelerate_config")
    return section.model_copy(update={"accelerate_config": str(path)})
