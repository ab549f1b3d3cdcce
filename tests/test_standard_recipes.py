"""Every shipped recipe validates with the hub offline and nothing downloaded: the schema,
the trainer config, a pipeline's stages and start-up checks (which may only miss hub
models and datasets that are not cached), and every hub id is a well-formed one. The
standard recipes say what hardware and time they expect, and launch as their header says."""

from __future__ import annotations

import re
import shlex

import pytest

from trl_plus.cli import main
from trl_plus.model_refs import hub_id_problem, local_path
from trl_plus.recipe import load_recipe, shipped_recipes

SHIPPED = shipped_recipes()
STANDARD = ("zephyr-7b-dpo", "dpo-lora-1b", "ppo-tldr-pythia-1b", "imdb-sentiment-compare", "imdb-sentiment-arms",
            "tldr-ppo-rloo-dpo")
# Keys whose string values name a model or dataset: a local path, a tiny: model or a hub id.
REF_KEYS = {"name_or_path", "tokenizer", "ref_model", "path", "model", "base", "dataset", "prompts", "reference"}
OFFLINE_MISS = "is not in the local cache: the hub is offline"


def _refs(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _refs(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v, key)
    elif isinstance(node, str) and key in REF_KEYS:
        yield node


def _hub_ids(recipe) -> list[str]:
    return [name for name in _refs(recipe.raw)
            if not name.startswith("tiny:") and local_path(name, recipe.base_dir, files=True) is None]


def test_the_standard_recipes_are_shipped():
    assert set(STANDARD) <= set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_recipe_validates_offline(name, monkeypatch):
    from trl_plus.pipeline.preflight import PreflightError, check_pipeline

    from trl_plus.errors import RecipeProblems

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        recipe = load_recipe(name)  # keys, types, the trainer's config, components, a pipeline's stages
    except RecipeProblems as exc:
        # A trainer recipe's reward model is checked at load: here, a hub id never downloaded
        # is the only problem there may be, and it must be a well-formed hub id.
        assert exc.problems and all(OFFLINE_MISS in message for _, message in exc.problems), exc.problems
        missing = {m.split("hub model '")[1].split("'")[0] for _, m in exc.problems}
        assert missing and all(hub_id_problem(hub_id) is None for hub_id in missing), missing
        return
    hub_ids = _hub_ids(recipe)
    for hub_id in hub_ids:
        assert hub_id_problem(hub_id) is None, hub_id
    if recipe.stages:
        try:
            check_pipeline(recipe)
        except PreflightError as exc:  # only hub ids that were never downloaded here
            assert all(OFFLINE_MISS in message for _, message in exc.problems), exc.problems
            assert {m.split("'")[1] for _, m in exc.problems} <= set(hub_ids)
    if name in STANDARD:
        assert hub_ids  # a standard recipe runs on real hub models and data


@pytest.mark.parametrize("name", STANDARD)
def test_standard_recipes_state_hardware_and_time_and_launch_as_they_say(name, capsys, monkeypatch):
    # as on a machine where its models were downloaded (launch checks that they are there)
    monkeypatch.setattr("trl_plus.model_refs.hub_cached", lambda repo_id, repo_type="model": True)
    header = SHIPPED[name].read_text().split("\n\n")[0]
    assert re.search(r"^# Hardware: .*GPU", header, re.M) and re.search(r"^# Time: .*hour", header, re.M)
    command = next(line.lstrip("# ").strip() for line in header.splitlines() if "trl-plus " in line and name in line)
    argv = shlex.split(command)[1:]
    if argv[0] == "launch":
        assert main(argv + ["--dry-run"]) == 0
        assert f"-m trl_plus train {name}" in capsys.readouterr().out
    else:
        assert argv[:2] == ["compare", name]


def test_zephyr_recipe_is_the_zephyr_dpo_run():
    recipe = load_recipe("zephyr-7b-dpo")
    args = recipe.trainer_args
    assert recipe.model.name_or_path == "alignment-handbook/zephyr-7b-sft-full" and recipe.model.dtype == "bfloat16"
    assert recipe.data.train.path == "HuggingFaceH4/ultrafeedback_binarized" and recipe.data.train.split == "train_prefs"
    assert (args["beta"], args["learning_rate"], args["num_train_epochs"]) == (0.01, 5e-7, 1)
    assert "--accelerate-config deepspeed_zero3" in SHIPPED["zephyr-7b-dpo"].read_text()
    # 8 GPUs x per-device batch x accumulation: the global batch of 128 pairs the header promises
    assert 8 * args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 128


def test_lora_recipe_builds_its_lora_config():
    from peft import LoraConfig

    from trl_plus.loading import peft_config

    recipe = load_recipe("dpo-lora-1b")
    config = peft_config(recipe.peft)
    assert isinstance(config, LoraConfig) and config.r == 16 and config.task_type == "CAUSAL_LM"
    assert "--accelerate-config single_gpu" in SHIPPED["dpo-lora-1b"].read_text()


def test_ppo_recipe_is_tldr_with_the_pythia_models(monkeypatch):
    monkeypatch.setattr("trl_plus.model_refs.hub_cached", lambda repo_id, repo_type="model": True)  # its reward model
    recipe = load_recipe("ppo-tldr-pythia-1b")
    assert recipe.model.name_or_path == "cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr"
    assert recipe.data.train.path == "trl-lib/tldr"
    assert [r.model_dump()["model"] for r in recipe.rewards] == ["cleanrl/EleutherAI_pythia-1b-deduped__reward__tldr"]
    assert recipe.trainer_args["critic_init"] == "reward"


def test_imdb_recipe_sweeps_kl_over_three_seeds():
    from trl_plus.pipeline.config import parse

    config = parse(load_recipe("imdb-sentiment-compare"))
    assert config.stages.seeds == [0, 1, 2] and set(config.methods) == {"ppo_gt", "dpo"}
    assert len(config.stages.ppo_gt.kl_coefs) >= 3 and len(config.stages.dpo.betas) >= 3
    assert config.stages.sft.base == "lvwerra/gpt2-imdb" and not config.stages.sft.train
    assert config.gold[0]["kwargs"]["model"] == "lvwerra/distilbert-imdb"


@pytest.fixture(scope="module")
def tiny_sentiment_classifier(tmp_path_factory):
    """A two-label classifier of random weights, labelled as the IMDb one is."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from trl_plus.tiny import build_tokenizer

    folder = tmp_path_factory.mktemp("classifier")
    tokenizer = build_tokenizer(["a great movie", "an awful movie"], vocab_size=300)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                              max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                              id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_imdb_gold_reward_is_the_classifiers_label_probability(tiny_sentiment_classifier):
    from trl_plus.components import Components
    from trl_plus.errors import RewardSourceError
    from trl_plus.manager import Hooks

    gold = load_recipe("imdb-sentiment-compare").raw["gold"][0]
    spec = {**gold, "kwargs": {**gold["kwargs"], "model": tiny_sentiment_classifier}}
    components = Components(Hooks())
    prompts, completions = ["the film was", "i thought it"], [" great and moving", " dull"]
    positive = components.reward_source(spec, "rewards[0]")(prompts, completions)
    negative = components.reward_source({**spec, "kwargs": {**spec["kwargs"], "label": "NEGATIVE"}},
                                        "rewards[0]")(prompts, completions)
    assert all(0 < p < 1 for p in positive) and [p + n for p, n in zip(positive, negative)] == pytest.approx([1, 1])
    with pytest.raises(RewardSourceError, match="no label 'GOOD'"):
        components.reward_source({**spec, "kwargs": {**spec["kwargs"], "label": "GOOD"}}, "rewards[0]")(prompts, completions)


@pytest.mark.slow
def test_imdb_recipe_shape_runs_on_tiny_local_models(tmp_path, tiny_model_path, one_thread):
    """The IMDb comparison with every hub name replaced by a local stand-in: an SFT model
    used as it is, pairs sampled from it on given prompts and labelled by the gold reward,
    PPO on the gold reward and DPO, evaluated and reported."""
    import json

    import yaml

    from trl_plus.pipeline import run_pipeline
    from trl_plus.recipe import validate_dict

    raw = yaml.safe_load(SHIPPED["imdb-sentiment-compare"].read_text())
    openings = ["the movie was", "i thought this film", "this one is", "the acting was", "what a", "my wife and i"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": f"{p} {i}"}) + "\n" for i in range(6) for p in openings))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in openings))
    toy = str(SHIPPED["tiny-ppo"].parent / "toy_rewards.py")
    raw["gold"] = [{"name": "python", "function": f"{toy}:char_share", "kwargs": {"chars": "e"}, "alias": "gold"}]
    stages = raw["stages"]
    stages.update(seeds=[0, 1], checkpoints=2)
    stages["sft"]["base"] = str(tiny_model_path)
    stages["pairs"].update(prompts=str(tmp_path / "train.jsonl"), max_new_tokens=6, batch_size=36)
    stages["ppo_gt"].update(kl_coefs=[0.05])
    stages["ppo_gt"]["args"].update(max_steps=2, per_device_train_batch_size=8, num_mini_batches=2, max_completion_length=6)
    stages["dpo"].update(betas=[0.1])
    stages["dpo"]["args"].update(max_steps=2, per_device_train_batch_size=8, max_length=32)
    raw["eval"].update(prompts=str(tmp_path / "test.jsonl"), generation={"max_new_tokens": 6, "batch_size": 8},
                       kl={"num_samples": 1})
    out = tmp_path / "run"
    report = run_pipeline(validate_dict(raw, source=tmp_path / "imdb.yaml"), out, progress=False, log=lambda *_: None)

    pairs = [json.loads(l) for l in (out / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and {p["prompt"] for p in pairs} <= {f"{p} {i}" for i in range(6) for p in openings}
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    for run in ("ppo_gt/kl_coef0.05-seed0", "ppo_gt/kl_coef0.05-seed1", "dpo/beta0.1-seed0", "dpo/beta0.1-seed1"):
        assert json.loads((out / run / "done.json").read_text())["global_step"] == 2
    assert "## Verdict" in (report / "report.md").read_text()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["stages.pairs.dataset=org/pairs"], "stages.pairs"),  # both a dataset and prompts to sample from
        (["stages.pairs.prompts=null"], "stages.pairs.dataset"),  # neither (and no corpus)
        (["stages.pairs.max_prompts=0"], "stages.pairs.max_prompts"),
    ],
)
def test_pairs_source_errors_name_the_key(overrides, key):
    from trl_plus.errors import RecipeError

    with pytest.raises(RecipeError) as err:
        load_recipe("imdb-sentiment-compare", overrides)
    assert err.value.key == key
