"""The shipped offline lm-eval pack: its data, and that it tells a model that learned the
quickstart's grammar from one that did not."""

import importlib.util
import json
from pathlib import Path

import pytest

from trl_plus.eval.benchmarks import expand_tasks, offline_task_dir, offline_tasks, run_lm_eval
from trl_plus.pipeline.corpus import PROMPT_PREFIX, make_corpus

PACK = {
    "trl_plus_review_intensifier": "review_intensifier",
    "trl_plus_review_word_order": "review_word_order",
    "trl_plus_review_word_swap": "review_word_swap",
}


@pytest.fixture(scope="module")
def make_tasks():
    # the generator stays out of the wheel's package data, so read it from the checkout
    script = Path(__file__).resolve().parents[1] / "eval" / "tasks" / "make_tasks.py"
    spec = importlib.util.spec_from_file_location("trl_plus_make_tasks", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def training_reviews(make_tasks):
    return make_tasks.training_reviews()


def shipped(name: str) -> list[dict]:
    return [json.loads(line) for line in (offline_task_dir() / f"{name}.jsonl").read_text().splitlines()]


def test_pack_is_every_yaml_with_its_data():
    import yaml

    assert offline_tasks() == sorted(PACK)
    assert expand_tasks(["trl_plus_offline"]) == offline_tasks()
    for path in offline_task_dir().glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        data = config["dataset_kwargs"]["data_files"]["test"]
        assert data == f"{PACK[config['task']]}.jsonl" and (offline_task_dir() / data).is_file()
        assert config["output_type"] == "multiple_choice"
        assert [m["metric"] for m in config["metric_list"]] == ["acc"]  # acc has an analytic stderr


def test_items_are_not_texts_of_the_quickstart_corpus(make_tasks, training_reviews, plugin_manager):
    from trl_plus.pipeline.config import parse
    from trl_plus.recipe import load_recipe

    corpus = parse(load_recipe("quickstart", [], hooks=plugin_manager)).stages.corpus
    assert make_tasks.TRAIN_CORPUS == (corpus.reviews, corpus.seed)
    texts = set(make_corpus(corpus.reviews, corpus.seed))
    for name in PACK.values():
        assert not any(f"{PROMPT_PREFIX} {item['review']}" in texts for item in shipped(name)), name
    assert set(make_tasks.SEEDS.values()).isdisjoint({corpus.seed, corpus.seed + 1, corpus.seed + 2})
    # the recogniser that vets the corruptions accepts what the grammar writes
    assert all(make_tasks.is_review(text) for text in training_reviews)


def test_shipped_data_is_what_the_generator_writes(make_tasks, training_reviews):
    for name in PACK.values():
        first = make_tasks.render(make_tasks.make_items(name, exclude=training_reviews))
        assert first == make_tasks.render(make_tasks.make_items(name, exclude=training_reviews))
        assert first == (offline_task_dir() / f"{name}.jsonl").read_text(), \
            f"{name}.jsonl is stale: run python eval/tasks/make_tasks.py"


@pytest.mark.parametrize("name", sorted(PACK.values()))
def test_pairs_hold_the_same_words_and_one_is_a_review(make_tasks, name):
    items = shipped(name)
    assert 200 <= len(items) <= 300
    assert len({item["review"] for item in items}) == len(items)
    labels = [item["label"] for item in items]
    # balanced in every consecutive two, so any even lm-eval limit is balanced too
    assert all(sorted(labels[i : i + 2]) == [0, 1] for i in range(0, len(labels) - 1, 2))
    for item in items:
        real, corrupted = item["choices"][item["label"]], item["choices"][1 - item["label"]]
        assert real == item["review"] and corrupted != real
        assert sorted(corrupted.split()) == sorted(real.split())  # same tokens: no length or word-frequency cue
        assert make_tasks.is_review(real) and not make_tasks.is_review(corrupted), item


def test_a_model_that_learned_the_grammar_beats_one_that_did_not():
    import copy

    import torch

    from trl_plus.tiny import build_model, build_tokenizer

    torch.manual_seed(0)
    texts = make_corpus(2000, seed=3)
    tokenizer = build_tokenizer(texts, vocab_size=600)
    model = build_model("causal-lm", tokenizer, seed=0, hidden_size=64, num_layers=2, num_heads=4, max_len=96)
    untrained = copy.deepcopy(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        batch = tokenizer([t + tokenizer.eos_token for t in texts[step * 32 : (step + 1) * 32]],
                          return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.eval()

    def accuracy(lm):
        results = run_lm_eval(lm, ["trl_plus_offline"], tokenizer=tokenizer, limit=40, device="cpu", log_samples=False)
        return {task: results["results"][task]["acc,none"] for task in PACK}

    learned, chance = accuracy(model), accuracy(untrained)
    for task in PACK:
        assert learned[task] >= 0.9, (task, learned, chance)
        assert chance[task] <= 0.75 and learned[task] - chance[task] >= 0.25, (task, learned, chance)
