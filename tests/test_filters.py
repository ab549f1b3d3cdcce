"""Every built-in data filter, and the counts of the filter report."""

import pytest
from datasets import Dataset

from trl_plus.errors import ComponentError, RecipeError

ROWS = [
    {"prompt": "review : the movie was", "chosen": " great .", "rejected": " awful ."},
    {"prompt": "review : the movie was", "chosen": " great .", "rejected": " awful ."},  # exact duplicate
    {"prompt": "Review :  the movie WAS", "chosen": " great .", "rejected": " awful ."},  # normalised duplicate
    {"prompt": "review : the plot is", "chosen": " dull .", "rejected": " dull ."},  # identical pair
    {"prompt": "review : the story is", "chosen": " good , " * 20, "rejected": " bad ."},  # long chosen
    {"prompt": "question :", "chosen": " fine .", "rejected": " poor ."},
]


def chain(plugin_manager, specs, tokenizer=None):
    return plugin_manager.components(tokenizer=tokenizer).filter_chain(specs)


def batch():
    return {k: [r[k] for r in ROWS] for k in ROWS[0]}


def test_dedup_exact_and_normalised(plugin_manager):
    assert chain(plugin_manager, ["dedup"]).mask(batch()) == [True, False, True, True, True, True]
    assert chain(plugin_manager, [{"name": "dedup", "normalize": True}]).mask(batch()) == [
        True, False, False, True, True, True,
    ]


def test_dedup_remembers_across_batches(plugin_manager):
    c = chain(plugin_manager, ["dedup"])
    first = {k: v[:1] for k, v in batch().items()}
    assert c.mask(first) == [True]
    assert c.mask(first) == [False]


def test_distinct_pair(plugin_manager):
    assert chain(plugin_manager, ["distinct_pair"]).mask(batch()) == [True, True, True, False, True, True]


def test_length_bounds(plugin_manager, tiny_tokenizer):
    def n(text):
        return len(tiny_tokenizer(text, add_special_tokens=False).input_ids)

    c = chain(plugin_manager, [{"name": "length", "max_completion_tokens": 10}], tiny_tokenizer)
    assert c.mask(batch()) == [True, True, True, True, False, True]  # only the 20x " good ," is long
    prompt_bound = n("question :")
    assert prompt_bound < min(n(r["prompt"]) for r in ROWS[:-1])
    c = chain(plugin_manager, [{"name": "length", "max_prompt_tokens": prompt_bound}], tiny_tokenizer)
    assert c.mask(batch()) == [False] * 5 + [True]
    low = n(" bad .") + 1
    c = chain(plugin_manager, [{"name": "length", "min_completion_tokens": low}], tiny_tokenizer)
    expected = [n(r["chosen"]) >= low and n(r["rejected"]) >= low for r in ROWS]
    assert c.mask(batch()) == expected and expected[4] is False


def test_length_counts_are_the_tokenizers_own(tiny_tokenizer):
    from trl_plus.plugins.filters.length import _Lengths

    texts = ["", "a", " the film was great", "ünïcödé and emoji 🎬 " * 5, "x" * 300]
    counts = _Lengths(tiny_tokenizer, texts, screen=False).n
    assert list(counts) == [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert counts[-1] > counts[2] > 0


def test_length_needs_a_tokenizer(plugin_manager):
    with pytest.raises(RecipeError, match="tokenizer"):
        chain(plugin_manager, [{"name": "length", "max_prompt_tokens": 3}])


def test_regex_keep_and_drop(plugin_manager):
    keep = chain(plugin_manager, [{"name": "regex", "column": "prompt", "pattern": "^question"}]).mask(batch())
    assert keep == [False, False, False, False, False, True]
    drop = chain(plugin_manager, [{"name": "regex", "column": "prompt", "pattern": "^question", "keep": False}])
    assert drop.mask(batch()) == [True, True, True, True, True, False]
    with pytest.raises(RecipeError, match="invalid pattern"):
        chain(plugin_manager, [{"name": "regex", "column": "prompt", "pattern": "("}])


def margin_reward(prompts, completions):
    lexicon = {"great": 1.0, "good": 1.0, "fine": 0.5, "awful": -1.0, "bad": -1.0, "poor": -0.5, "dull": -1.0}
    return [sum(lexicon.get(w, 0.0) for w in c.split()) for c in completions]


def test_min_reward_margin(plugin_manager):
    spec = {"name": "python", "function": f"{__name__}:margin_reward"}
    c = chain(plugin_manager, [{"name": "min_reward_margin", "source": spec, "margin": 1.5}])
    # margins: 2, 2, 2, 0, 20-1, 1.0
    assert c.mask(batch()) == [True, True, True, False, True, False]


def test_rollout_filters(plugin_manager):
    c = chain(plugin_manager, [{"name": "reward_range", "min": 0.0, "max": 1.0}])
    assert c.mask({"reward": [0.5, None, float("nan"), -0.1, 1.0, 2.0]}) == [True, False, False, False, True, False]
    v = chain(plugin_manager, [{"name": "reward_variance", "min_std": 0.01}])
    assert v.mask({"reward": [1.0, 1.0, 1.0]}) == [False, False, False]
    assert v.mask({"reward": [1.0, 0.0, 1.0]}) == [True, True, True]


def test_report_counts_and_examples(plugin_manager, tiny_tokenizer):
    c = chain(
        plugin_manager,
        [{"name": "dedup", "normalize": True}, "distinct_pair", {"name": "length", "max_completion_tokens": 10}],
        tiny_tokenizer,
    )
    out = c.apply_to_dataset(Dataset.from_list(ROWS))
    assert len(out) == 2
    report = c.report()
    assert (report["rows_in"], report["rows_out"]) == (6, 2)
    assert [(f["name"], f["rows_in"], f["dropped"]) for f in report["filters"]] == [
        ("dedup", 6, 2), ("distinct_pair", 4, 1), ("length", 3, 1),
    ]
    assert report["filters"][1]["examples"][0]["chosen"] == " dull ."
    assert all(len(f["examples"]) == min(f["dropped"], 3) for f in report["filters"])


def test_filter_errors_name_the_filter(plugin_manager):
    def broken(batch):
        return [True]

    broken.__name__ = "broken"
    with pytest.raises(ComponentError, match="'broken' returned 1 decisions for 6 rows"):
        chain(plugin_manager, [broken]).mask(batch())
    with pytest.raises(ComponentError, match="'distinct_pair' needs column 'chosen'"):
        chain(plugin_manager, ["distinct_pair"]).mask({"prompt": ["a"]})
