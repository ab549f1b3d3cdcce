"""The comparison pipeline: recipe validation, the generated task, the verdict's statistics,
and a reduced quickstart end to end (artefacts, report, resume after a failure)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trl_plus.cli import main
from trl_plus.errors import RecipeError
from trl_plus.pipeline import corpus
from trl_plus.pipeline.config import parse
from trl_plus.recipe import load_recipe

# A quickstart small enough for a test: every stage runs, on a few hundred rows.
SMALL = [
    "stages.seeds=[0,1]",
    "stages.checkpoints=2",
    "stages.corpus.reviews=1200",
    "stages.corpus.prompts=160",
    "stages.corpus.eval_prompts=24",
    "stages.corpus.val_prompts=16",
    "stages.sft.model.hidden_size=32",
    "stages.sft.model.num_layers=1",
    "stages.sft.args.per_device_train_batch_size=64",
    "stages.pairs.max_new_tokens=12",
    "stages.reward.args.num_train_epochs=1",
    "stages.ppo.kl_coefs=[0.05]",
    "stages.ppo.args.max_steps=4",
    "stages.ppo.args.per_device_train_batch_size=8",
    "stages.ppo.args.max_completion_length=12",
    "stages.dpo.args.max_steps=4",
    "eval.generation.max_new_tokens=12",
    "eval.kl.num_samples=1",
    "eval.lm_eval.limit=8",
]


# -- recipe validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("stages.dpo.betaz=[0.1]", "stages.dpo.betaz"),
        ("stages.dpo.betas=[-1]", "stages.dpo.betas"),
        ("stages.dpo.args.bta=0.1", "stages.dpo.args.bta"),
        ("stages.dpo.args.beta=0.1", "stages.dpo.args.beta"),
        ("stages.seeds=[0,0]", "stages.seeds"),
        ("stages.reward=null", "stages.ppo"),
        ("stages.ppo.kl_targets=[2.0]", "stages.ppo"),
        ("report.colour=red", "report.colour"),
    ],
)
def test_pipeline_config_errors_name_the_key(override, key, capsys):
    # loading the recipe already fails (so `trl-plus validate` catches it), naming the key
    with pytest.raises(RecipeError) as err:
        load_recipe("quickstart", [override])
    assert err.value.key == key
    assert main(["validate", "quickstart", "--set", override]) == 2
    assert f"error: {key}:" in capsys.readouterr().err


def test_pipeline_recipe_lists_every_problem_at_once(capsys):
    mistakes = ["stages.dpo.betaz=[0.1]", "report.colour=red", "stages.ppo.args.bta=0.1", "stages.seeds=[0,0]",
                "stages.sft.args.learning_rate=-1"]
    args = ["validate", "quickstart"] + [a for m in mistakes for a in ("--set", m)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "5 problems" in err, err
    for key in ("stages.dpo.betaz", "report.colour", "stages.ppo.args.bta", "stages.seeds", "stages.sft.args.learning_rate"):
        assert f"  {key}:" in err, (key, err)


def test_quickstart_recipe_is_valid_and_runs_two_seeds_per_method():
    cfg = parse(load_recipe("quickstart"))
    assert len(cfg.stages.seeds) >= 2
    assert set(cfg.methods) >= {"ppo", "dpo"}
    assert cfg.stages.checkpoints >= 2


def test_train_refuses_a_pipeline_recipe(capsys):
    from trl_plus.cli import main

    assert main(["train", "quickstart"]) == 2
    assert "trl-plus compare" in capsys.readouterr().err


# -- the generated task -----------------------------------------------------------------


def test_corpus_is_deterministic_and_balanced():
    a, b = corpus.make_corpus(400, seed=3), corpus.make_corpus(400, seed=3)
    assert a == b and a != corpus.make_corpus(400, seed=4)
    scores = [corpus.sentiment(t) for t in a]
    assert abs(sum(scores) / len(scores)) < 0.05  # neither sentiment dominates
    assert max(scores) > 0.1 and min(scores) < -0.1
    assert len(corpus.POSITIVE_WORDS) == len(corpus.NEGATIVE_WORDS) == 40


def test_gold_reward_is_lexicon_sentiment():
    assert corpus.gold_reward(["p"] * 3, [" great and moving .", " dull .", " the plot was long ."]) == [
        pytest.approx(2 / 3), -1.0, 0.0]
    # prompts carry no sentiment: the completion decides the reward
    assert all(corpus.sentiment(p) == 0 for p in corpus.make_prompts(200, seed=0))


# -- held-out prompts ---------------------------------------------------------------------


def test_eval_prompts_share_no_string_with_training():
    cfg = corpus
    train = set(cfg.make_prompts(2000, seed=1))
    val, test = cfg.make_eval_prompts(128, 256, seed=2)
    assert len(set(val)) == 128 and len(set(test)) == 256  # distinct openings
    assert not set(val) & set(test)
    assert not (set(val) | set(test)) & train
    assert all(cfg.is_eval_opening(p) for p in val + test) and not any(cfg.is_eval_opening(p) for p in train)
    # no review of the SFT corpus starts with a held-out opening: the SFT model never saw one
    held = set(val) | set(test)
    texts = cfg.make_corpus(8000, seed=0)
    assert not any(t.startswith(p + " ") for t in texts for p in held if t[:24] == p[:24])


def test_eval_prompts_are_the_quickstart_defaults():
    cfg = parse(load_recipe("quickstart"))
    assert cfg.stages.corpus.val_prompts > 0 and cfg.stages.corpus.eval_prompts > 0
    assert len(cfg.stages.seeds) >= 3


# -- end to end -------------------------------------------------------------------------


def _mtimes(root: Path, stages) -> dict:
    return {s: (root / s / "done.json").stat().st_mtime_ns for s in stages}


@pytest.mark.slow
def test_reduced_quickstart_end_to_end_and_resume(tmp_path, monkeypatch, capsys, one_thread):
    import trl_plus.pipeline.policy as policy_module  # trains every policy run (trainers.from_recipe)
    from trl_plus.cli import main

    out = tmp_path / "run"
    args = ["quickstart", "--out", str(out), "--no-progress"] + [a for s in SMALL for a in ("--set", s)]

    # 1. DPO fails on its first run: everything before it is finished and marked.
    real = policy_module.train_from_recipe
    monkeypatch.setattr(policy_module, "train_from_recipe", lambda recipe, *a, **k: (
        (_ for _ in ()).throw(RuntimeError("boom")) if recipe.trainer == "dpo" else real(recipe, *a, **k)))
    with pytest.raises(RuntimeError, match="boom"):
        main(args)
    finished = ["corpus", "sft", "pairs", "reward", "ppo/kl_coef0.05-seed0", "ppo/kl_coef0.05-seed1"]
    before = _mtimes(out, finished)
    assert not (out / "dpo" / "beta0.1-seed0" / "done.json").exists()

    # 2. The re-run skips what is done and finishes the rest.
    monkeypatch.setattr(policy_module, "train_from_recipe", real)
    from trl_plus.manager import Hooks

    loads: list[str] = []
    load_model = Hooks.load_model
    monkeypatch.setattr(Hooks, "load_model", lambda self, name, *a, **k: loads.append(str(name)) or load_model(self, name, *a, **k))
    assert main(args) == 0
    # the eval stage loads each checkpoint once, for its test, validation and proxy passes
    checkpoint_loads = [n for n in loads if "/checkpoint-" in n]
    assert checkpoint_loads and len(checkpoint_loads) == len(set(checkpoint_loads))
    console = capsys.readouterr().out
    assert _mtimes(out, finished) == before
    for stage in finished:
        assert f"{stage}" in console and "skipped" in console

    # Every run saved its checkpoints and every checkpoint was evaluated.
    for run in ("ppo/kl_coef0.05-seed0", "ppo/kl_coef0.05-seed1", "dpo/beta0.1-seed0", "dpo/beta0.1-seed1"):
        assert (out / run / "trainer_state.json").exists()
        evals = sorted((out / "eval" / run).glob("step-*/eval.json"))
        assert len(evals) >= 2, run
        result = json.loads(evals[-1].read_text())
        assert result["gold_reward"]["mean"] is not None and result["kl"]["kl"] is not None
        assert "reward_source" in json.dumps(result["manifest"]["judges"])  # judged by the gold reward, not the RM
        assert "reward_model" not in json.dumps(result["manifest"]["judges"])
    pairs = [json.loads(l) for l in (out / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    reward = json.loads((out / "reward" / "done.json").read_text())
    # accuracy on pairs the reward model never trained on (a tiny RM here: no bar to clear)
    assert reward["heldout_pairs"] == int(len(pairs) * 0.1) and 0 <= reward["pair_accuracy"] <= 1

    # Held-out prompts: validation chooses, test reports; neither shares a string with training.
    val = [json.loads(l)["prompt"] for l in (out / "corpus" / "val_prompts.jsonl").read_text().splitlines()]
    test = [json.loads(l)["prompt"] for l in (out / "corpus" / "eval_prompts.jsonl").read_text().splitlines()]
    train = {json.loads(l)["prompt"] for l in (out / "corpus" / "prompts.jsonl").read_text().splitlines()}
    assert len(val) == 16 and len(test) == 24 and not (set(val) | set(test)) & train and not set(val) & set(test)
    step = sorted((out / "eval" / "dpo" / "beta0.1-seed0").glob("step-*"))[-1]
    assert json.loads((step / "val" / "eval.json").read_text())["prompts"]["count"] == 16
    seeds = json.loads((step / "eval.json").read_text())["manifest"]["seeds"]
    assert seeds["candidate"] != seeds["reference"]  # candidate and reference draw independent samples
    assert json.loads((out / "eval" / "ppo" / "kl_coef0.05-seed0" / "step-4" / "proxy.json").read_text())["mean"] is not None

    # The report: markdown, self-contained HTML, plots, data.
    report = out / "report"
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for section in ("## Verdict", "## Reward vs KL frontier", "## Win rate", "## Best-of-n baseline",
                    "## Reward over-optimisation", "## Power", "## Preference data quality", "## lm-eval",
                    "## Training curves", "## Cost"):
        assert section in md
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    for png in ("frontier", "win_rates", "training", "cost", "preference_quality"):
        assert (report / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((report / "report.json").read_text())
    gold = data["comparisons"][0]["gold"]
    assert (data["comparisons"][0]["a"], data["comparisons"][0]["b"]) == ("ppo", "dpo")
    assert gold["seeds"] == {"ppo": 2, "dpo": 2}
    assert gold["status"] in ("significant", "not significant", "insufficient") and gold["text"]
    assert data["verdict"][0].lower() == gold["text"].lower()
    assert [q["n"] for q in data["best_of_n"]["points"]] == [1, 2, 4, 8, 16]
    assert data["best_of_n"]["points"][0]["kl"] == 0.0
    assert data["preference_quality"]["pairs"] == len(pairs)
    assert data["preference_quality"]["rm_gold_agreement"]["pairs"] > 0
    assert data["lm_eval"] and any(r["delta"] is not None for r in data["lm_eval"])
    stages = {r["stage"] for r in data["costs"]}
    assert {"sft", "pairs", "reward", "eval"} <= stages
    assert all(r["wall_time_s"] > 0 and r["peak_rss_mb"] > 0 for r in data["costs"])

    # 3. `trl-plus report` re-renders from the run folder alone.
    (report / "report.html").unlink()
    assert main(["report", str(out), "--title", "again"]) == 0
    assert "again" in (report / "report.html").read_text()


def test_run_folder_markers_keep_partial_work_only_for_the_same_configuration(tmp_path):
    from trl_plus.pipeline.rundir import RunDir

    run = RunDir(tmp_path)
    with pytest.raises(RuntimeError):  # interrupted after a checkpoint was written
        with run.step("ppo/a", "fp1", keep_partial=True) as (folder, info):
            (folder / "checkpoint-2").mkdir()
            raise RuntimeError("interrupted")
    assert not run.is_done("ppo/a", "fp1")
    with run.step("ppo/a", "fp1", keep_partial=True) as (folder, info):
        assert (folder / "checkpoint-2").exists()  # same configuration: resume from it
        info["tokens"] = 7
    assert run.is_done("ppo/a", "fp1") and not run.is_done("ppo/a", "fp2")
    assert run.marker("ppo/a")["tokens"] == 7 and run.marker("ppo/a")["wall_time_s"] >= 0
    with run.step("ppo/a", "fp2", keep_partial=True) as (folder, info):
        assert not (folder / "checkpoint-2").exists()  # changed configuration: start over
