"""What a run's output folder holds: the files that show a run of ours used it, the files a
run would overwrite, and where the run's copy of its recipe goes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from .checkpoints import TRAINER_STATE, WEIGHTS, checkpoint_dirs

# What only a run of ours leaves (with checkpoint-N folders): a folder holding one of these holds a run.
RUN_MARKERS = (TRAINER_STATE, "run_info.json", "filter_report.json", "ppo_state.json", "dpo_state.json",
               "rloo_state.json", "grpo_state.json", "online_dpo_state.json", "compute.json", "done.json")
RUN_FILES = (*RUN_MARKERS, "recipe.yaml", *WEIGHTS)
# What a training run writes into its output folder besides the files RUN_FILES
# names (which show the folder is a run of ours): the model's and tokenizer's files, TRL's
# model card, the training arguments.
MODEL_FILES = (
    "config.json", "generation_config.json", "README.md", "training_args.bin", "adapter_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
    "chat_template.json", "processor_config.json", "preprocessor_config.json", "critic",
)
SHARDS = re.compile(r"^(model|pytorch_model|adapter_model)-\d+-of-\d+\.(safetensors|bin)$")
RESOLVED_RECIPE = "recipe.resolved.yaml"  # the run's copy, where recipe.yaml is the recipe being run


def run_files(folder: str | os.PathLike) -> list[str]:
    """What in ``folder`` shows that a run of ours already used it (empty for a fresh folder)."""
    folder = Path(folder)
    return [p.name + "/" for p in checkpoint_dirs(folder)] + [name for name in RUN_MARKERS if (folder / name).exists()]


def foreign_files(folder: str | os.PathLike, keep: tuple[Path, ...] = ()) -> list[str]:
    """Files in ``folder`` that a run would overwrite (model, tokenizer, model card, the
    recipe's copy, ...), apart from those in ``keep`` (the recipe being run)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    kept = {_same_file_key(p) for p in keep}
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in MODEL_FILES or name in RUN_FILES or SHARDS.match(name) or name == RESOLVED_RECIPE:
            if _same_file_key(entry) in kept:
                continue
            found.append(name + ("/" if entry.is_dir() else ""))
    return found


def _same_file_key(path: Path):
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return str(path)


def recipe_copy_name(recipe, output_dir: str | os.PathLike) -> str | None:
    """Where the run's copy of its recipe goes: ``recipe.yaml``, or, when that file is the
    recipe being run, ``recipe.resolved.yaml`` (None: the recipe there already says it all,
    the same data whatever its comments and layout). Used by ``train`` and ``compare``."""
    target = Path(output_dir) / "recipe.yaml"
    source = getattr(recipe, "source", None)
    if source is None or not target.exists():
        return "recipe.yaml"
    try:
        same = os.path.samefile(source, target)
    except OSError:
        same = False
    if not same:
        return "recipe.yaml"
    try:
        if yaml.safe_load(target.read_text()) == yaml.safe_load(recipe.to_yaml()):
            return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return RESOLVED_RECIPE
