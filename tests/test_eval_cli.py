"""lm-eval offline pack against a direct simple_evaluate call, and ``trl-plus eval`` end to end."""

import json

import pytest

from trl_plus.cli import main


def test_offline_pack_equals_direct_simple_evaluate(tiny_model_path, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from trl_plus.eval.benchmarks import materialise_offline_pack, offline_tasks, run_lm_eval

    ours = run_lm_eval(str(tiny_model_path), ["trl_plus_offline"], batch_size=8, limit=12, device="cpu")
    assert set(ours["results"]) == set(offline_tasks()) and len(offline_tasks()) == 3
    direct = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(tiny_model_path), "device": "cpu", "dtype": "float32"},
        tasks=offline_tasks(), batch_size=8, limit=12,
        task_manager=TaskManager(include_path=str(materialise_offline_pack(tmp_path / "pack"))),
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0, bootstrap_iters=1000,
    )
    for task, metrics in direct["results"].items():
        for key, value in metrics.items():
            if isinstance(value, float):
                assert ours["results"][task][key] == pytest.approx(value), (task, key)
    # per-item results kept for item-by-item comparison
    assert len(ours["samples"]["trl_plus_review_word_order"]) == 12
    assert {"doc_id", "target", "acc"} <= set(ours["samples"]["trl_plus_review_word_order"][0])


def test_cli_eval_writes_every_number(tmp_path, capsys, monkeypatch):
    from trl_plus.tiny import save_tiny

    a = save_tiny(tmp_path / "out_a", "causal-lm", seed=0)
    b = save_tiny(tmp_path / "out_b", "causal-lm", seed=5)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"review : the movie {w}"}) + "\n"
                               for w in ["was", "is", "felt", "seemed", "looked", "sounded"] * 3))
    monkeypatch.setenv("HF_TOKEN_FOR_TEST", "hf_do_not_leak_123")
    out = tmp_path / "eval"
    code = main([
        "eval", str(a), "--reference", str(b), "--prompts", str(prompts),
        "--judge", "reward_model:model=tiny:reward-model", "--tasks", "trl_plus_offline", "--lm-eval-limit", "8",
        "--out", str(out), "--max-new-tokens", "6", "--kl-samples", "2", "--quiet",
    ])
    assert code == 0
    text = (out / "eval.json").read_text()
    results = json.loads(text)
    w = results["win_rates"]["reward_model"]
    for key in ("win_rate", "win_rate_ci", "lc_win_rate", "lc_win_rate_ci", "soft_win_rate", "tie_rate", "failed"):
        assert key in w
    assert w["win_rate_ci"][0] <= w["win_rate"] <= w["win_rate_ci"][1]
    assert results["kl"]["kl"] is not None and results["kl"]["stderr"] > 0
    assert set(results["lm_eval"]["results"]) == {
        "trl_plus_review_word_order", "trl_plus_review_word_swap", "trl_plus_review_intensifier"}
    manifest = results["manifest"]
    assert manifest["versions"]["trl-plus"] and manifest["versions"]["transformers"]
    assert manifest["judges"] == [{"name": "reward_model", "model": "tiny:reward-model"}]
    assert "hf_do_not_leak_123" not in text
    assert "win rate" in capsys.readouterr().out


def test_cli_unknown_judge_exits_2_with_suggestion(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "x", "reference": "y"}) + "\n")
    code = main(["eval", "tiny:causal-lm", "--prompts", str(prompts), "--judge", "reward_modl", "--out", str(tmp_path)])
    assert code == 2
    assert "Did you mean: reward_model" in capsys.readouterr().err


def test_cli_eval_from_recipe_section(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"review : it {w}", "chosen": " great .", "rejected": " bad ."}) + "\n"
                            for w in ["was", "is", "felt", "seemed"]))
    recipe.write_text(
        "trainer: dpo\nmodel: {name_or_path: tiny:causal-lm}\ndata: {train: {path: prefs.jsonl}}\n"
        "eval:\n  prompts: prefs.jsonl\n  reference_column: chosen\n  judges: [{name: reward_model, model: tiny:reward-model}]\n"
        "  generation: {max_new_tokens: 4}\n  kl: {enabled: false}\n"
    )
    code = main(["eval", "tiny:causal-lm", "--recipe", str(recipe), "--reference-column", "rejected",
                 "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 0
    results = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert results["win_rates"]["reward_model"]["pairs"] == 4
    assert results["manifest"]["recipe_hash"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("judges:", "judgez:"))
    assert main(["eval", "tiny:causal-lm", "--recipe", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "eval.judgez" in capsys.readouterr().err


def test_lm_eval_outside_a_git_folder_prints_nothing_of_git(tiny_model_path, tmp_path, monkeypatch, capfd):
    """lm-eval runs ``git describe`` in the working folder for a field trl-plus never keeps;
    outside a git folder that printed "fatal: not a git repository" once per model."""
    from trl_plus.eval.benchmarks import run_lm_eval

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    out = run_lm_eval(str(tiny_model_path), ["trl_plus_review_word_swap"], batch_size=8, limit=4, device="cpu")
    assert out["results"]["trl_plus_review_word_swap"]
    captured = capfd.readouterr()
    assert "not a git repository" not in captured.err + captured.out
