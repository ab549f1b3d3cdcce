"""Reward sources that answer the wrong thing, or nothing, fail loudly: named by recipe key
and reference, described by type and size (never the payload), and a run that scores
nothing stops instead of saving a model trained on nothing."""

from __future__ import annotations

import pytest

from trl_plus.cli import main
from trl_plus.errors import RecipeError, RewardSourceError

SECRET_PAYLOAD = "payload-text-that-must-not-be-echoed"


def returns_dict(prompts, completions, **kw):
    return {SECRET_PAYLOAD: 1.0, "b": 2.0}


def returns_scalar(prompts, completions, **kw):
    return 0.5


def returns_string(prompts, completions, **kw):
    return SECRET_PAYLOAD


def returns_too_few(prompts, completions, **kw):
    return [1.0] * (len(completions) - 1)


def returns_text_entry(prompts, completions, **kw):
    return [1.0] + [SECRET_PAYLOAD] * (len(completions) - 1)


def returns_none(prompts, completions, **kw):
    return None


def returns_matrix(prompts, completions, **kw):
    import torch

    return torch.zeros(len(completions), 2)


def returns_some_none(prompts, completions, **kw):
    import numpy as np

    return [None, np.float32(2.0), 3]


@pytest.mark.parametrize(
    "fn, what",
    [
        ("returns_dict", "returned a dict with 2 keys instead of a list of 3 scores"),
        ("returns_scalar", "returned a float instead of a list of 3 scores"),
        ("returns_string", f"returned a str of {len(SECRET_PAYLOAD)} characters instead of a list of 3 scores"),
        ("returns_too_few", "returned 2 scores for 3 completions"),
        ("returns_text_entry", "for completion 1 (a str of"),
        ("returns_none", "returned None instead of a list of 3 scores"),
        ("returns_matrix", "returned a Tensor of shape (3, 2) instead of a list of 3 scores"),
    ],
)
def test_bad_answers_name_the_source_and_what_came(plugin_manager, fn, what):
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:{fn}"}])
    with pytest.raises(RewardSourceError) as info:
        mix(["p"] * 3, ["a", "b", "c"])
    message = str(info.value)
    assert f"reward source rewards[0] (python: {__name__}:{fn})" in message
    assert what in message
    if fn != "returns_text_entry":  # one entry is shown shortened; a whole answer never is
        assert SECRET_PAYLOAD not in message


def test_alias_is_named_with_the_reference(plugin_manager):
    spec = {"name": "python", "function": f"{__name__}:returns_scalar", "alias": "judge"}
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:returns_some_none"}, spec])
    with pytest.raises(RewardSourceError, match=rf"rewards\[1\] 'judge' \(python: {__name__}:returns_scalar\)"):
        mix(["p"] * 3, ["a", "b", "c"])


def test_none_entries_are_unscored_and_numbers_of_any_kind_are_scores(plugin_manager):
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:returns_some_none"}])
    assert mix(["p"] * 3, ["a", "b", "c"]) == [None, 2.0, 3.0]


@pytest.mark.parametrize("body, exc", [("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
                                       ("def broken(:\n", "SyntaxError"),
                                       ("raise SystemExit(3)\n", "SystemExit: 3")])
def test_module_raising_at_import_is_named(plugin_manager, tmp_path, body, exc):
    module = tmp_path / "exploding_reward.py"
    module.write_text("import os\n" + body + "def score(prompts, completions):\n    return [1.0] * len(completions)\n")
    ref = f"{module}:score"
    with pytest.raises(RecipeError) as info:
        plugin_manager.components().reward_mix([{"name": "python", "function": ref}])
    message = str(info.value)
    assert f"importing {str(module)!r} for {ref!r} raised {exc}" in message
    if exc.startswith("ZeroDivisionError"):
        assert "exploding_reward.py line 2" in message


# ---------------------------------------------------------------------------------------
# a run that scores nothing stops: PPO on the tiny model, one rollout batch per step
# ---------------------------------------------------------------------------------------


def _ppo(tmp_path, tiny_model_path, steps: int, **kwargs):
    import json
    from pathlib import Path

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import trl_plus

    rows = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny_prefs.jsonl"
    prompts = [json.loads(line)["prompt"] for line in rows.read_text().splitlines() if line][:32]
    config = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("rewards", "reward_funcs")}
    args = trl_plus.PPOConfig(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, num_generations=2,
        max_completion_length=4, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, bf16=False, **config,
    )
    return trl_plus.PPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path), **kwargs,
    )


class Scorer:
    """Answers None for every completion in the batches listed in ``silent`` (1-based)."""

    def __init__(self, silent):
        self.silent, self.batches = silent, 0
        self.__name__ = "sometimes_silent"

    def __call__(self, prompts, completions, **kw):
        self.batches += 1
        silent = self.silent is True or self.batches in self.silent
        return [None if silent else float(len(c)) for c in completions]


def test_run_that_scores_nothing_fails_after_three_batches(tmp_path, tiny_model_path, one_thread):
    scorer = Scorer(silent=True)
    trainer = _ppo(tmp_path, tiny_model_path, steps=6, rewards=[scorer])
    with pytest.raises(RewardSourceError, match=r"no completion was scored in 3 consecutive rollout batches") as info:
        trainer.train()
    assert "rewards[0] 'sometimes_silent'" in str(info.value) and "max_unscored_batches" in str(info.value)
    assert scorer.batches == 3
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_plain_trl_reward_funcs_answering_none_fail_too(tmp_path, tiny_model_path, one_thread):
    def silent(prompts, completions, **kw):
        return [None] * len(completions)

    trainer = _ppo(tmp_path, tiny_model_path, steps=4, reward_funcs=[silent], max_unscored_batches=2)
    with pytest.raises(RewardSourceError, match=r"in 2 consecutive rollout batches.*\(silent\)"):
        trainer.train()


def test_sometimes_unscored_keeps_training_and_zero_disables(tmp_path, tiny_model_path, one_thread):
    scorer = Scorer(silent={1, 2, 4, 5})  # never three in a row
    trainer = _ppo(tmp_path / "a", tiny_model_path, steps=6, rewards=[scorer])
    trainer.train()
    assert scorer.batches == 6 and trainer.state.global_step == 6
    unscored = [row["rollouts/unscored_total"] for row in trainer.state.log_history if "rollouts/unscored_total" in row]
    assert unscored[-1] == 4 * 8  # four silent batches of 8 completions (4 prompts x 2), counted

    off = Scorer(silent=True)
    trainer = _ppo(tmp_path / "b", tiny_model_path, steps=4, rewards=[off], max_unscored_batches=0)
    trainer.train()
    assert off.batches == 4


def test_max_unscored_batches_is_checked():
    import trl_plus

    with pytest.raises(ValueError, match="max_unscored_batches must be an integer >= 0"):
        trl_plus.PPOConfig(output_dir="/tmp/x", max_unscored_batches=-1)


def test_cli_run_that_scores_nothing_exits_1(tmp_path, capsys, one_thread):
    reward = tmp_path / "silent_reward.py"
    reward.write_text("def score(prompts, completions, **kw):\n    return [None] * len(completions)\n")
    out = tmp_path / "out"
    code = main([
        "train", "tiny-ppo", "--output-dir", str(out), "--set", "ppo.max_steps=6", "--set", "ppo.num_mini_batches=1",
        "--set", "ppo.num_ppo_epochs=1", "--set", "ppo.per_device_train_batch_size=8",
        "--set", f"rewards.0.function={reward}:score", "--set", "rewards.0.kwargs={}",
    ])
    err = capsys.readouterr().err
    assert code == 1
    assert "no completion was scored in 3 consecutive rollout batches" in err and "Traceback" not in err
    assert f"python: {reward}:score" in err
    assert not (out / "model.safetensors").exists()


def test_gold_and_judge_sources_are_checked_the_same_way(plugin_manager):
    from trl_plus.eval.harness import _gold_scores

    with pytest.raises(RewardSourceError, match=r"reward source eval\.gold returned a dict with 2 keys instead"):
        _gold_scores(returns_dict, ["p"] * 3, ["a", "b", "c"])
    assert _gold_scores(lambda p, c: [1, None, float("nan")], ["p"] * 3, ["a", "b", "c"]) == [1.0, None, None]
    judge = plugin_manager.components().judge(
        {"name": "reward_source", "source": {"name": "python", "function": f"{__name__}:returns_scalar"}}
    )
    with pytest.raises(RewardSourceError, match=rf"eval\.judges\.source \(python: {__name__}:returns_scalar\) returned a float"):
        judge(["p"], ["a"], ["b"])


# ---------------------------------------------------------------------------------------
# a reward that never returns: its time budget, or a second signal, ends the run by name
# ---------------------------------------------------------------------------------------

HANGING_REWARD = '''
import pathlib, time

CALLS = {"n": 0}


def score(prompts, completions, marker, release, hang_at=1, **kw):
    CALLS["n"] += 1
    if CALLS["n"] >= hang_at:
        pathlib.Path(marker).touch()
        end = time.monotonic() + 20  # bounded: the test releases it sooner
        while time.monotonic() < end and not pathlib.Path(release).exists():
            time.sleep(0.02)
    return [float(len(c)) for c in completions]
'''


@pytest.fixture
def hanging_reward(tmp_path):
    """A python reward file that hangs from its ``hang_at``-th call until the test ends."""
    module = tmp_path / "hanging_reward.py"
    module.write_text(HANGING_REWARD)
    marker, release = tmp_path / "hanging", tmp_path / "release"
    yield module, {"marker": str(marker), "release": str(release)}
    release.touch()


def test_a_python_reward_that_never_returns_ends_at_its_timeout(plugin_manager, hanging_reward):
    import time

    module, kwargs = hanging_reward
    spec = {"name": "python", "function": f"{module}:score", "kwargs": kwargs, "timeout": 0.3, "alias": "slowpoke"}
    mix = plugin_manager.components().reward_mix([spec])
    start = time.monotonic()
    with pytest.raises(RewardSourceError) as info:
        mix(["p"], ["x"])
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert message.startswith("reward source rewards[0] 'slowpoke': python reward ")
    assert "did not return within 0.3 s (its timeout)" in message and "'timeout'" in message


@pytest.mark.parametrize("value", [0, -1, "10", True, float("inf")])
def test_a_python_reward_timeout_is_checked(plugin_manager, value):
    with pytest.raises(RecipeError, match="timeout"):
        plugin_manager.components().reward_source({"name": "python", "function": f"{__name__}:returns_some_none",
                                                   "timeout": value})


SWALLOWING_REWARD = '''
import signal, threading, time


def uses_alarm(prompts, completions, **kw):  # as math checkers bound their parsing: main thread only
    signal.signal(signal.SIGALRM, lambda *a: None)
    signal.alarm(30)
    signal.alarm(0)
    return [1.0] * len(completions)


def swallows(prompts, completions, **kw):
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            threading.Event().wait(5)  # a blocking wait, and every Exception swallowed
        except Exception:
            pass
    return [1.0] * len(completions)
'''


def test_the_timeout_stops_blocking_waits_and_leaves_the_reward_its_main_thread(plugin_manager, tmp_path):
    import threading
    import time

    module = tmp_path / "swallowing_reward.py"
    module.write_text(SWALLOWING_REWARD)
    alarm = plugin_manager.components().reward_source({"name": "python", "function": f"{module}:uses_alarm", "timeout": 5})
    assert alarm(["p"], ["x"]) == [1.0]  # signal.alarm works: the call runs in the main thread
    stuck = plugin_manager.components().reward_source({"name": "python", "function": f"{module}:swallows", "timeout": 0.3})
    start = time.monotonic()
    with pytest.raises(RewardSourceError, match="did not return within 0.3 s"):
        stuck(["p"], ["x"])
    assert time.monotonic() - start < 3
    errors = []  # from another thread (no signals there): a worker thread, abandoned at the deadline
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(RewardSourceError, stuck, ["p"], ["x"])))
    thread.start()
    thread.join(5)
    assert errors and "did not return within 0.3 s" in str(errors[0].value)


def test_no_timeout_and_the_caller_state_reach_the_reward(plugin_manager):
    import torch

    spec = {"name": "python", "function": f"{__name__}:grad_enabled", "timeout": None}
    source = plugin_manager.components().reward_source(spec)
    with torch.no_grad():  # grad mode is per thread: the reward sees the caller's
        assert source(["p"], ["x"]) == [0.0]
    assert source(["p"], ["x"]) == [1.0]
    bounded = plugin_manager.components().reward_source({**spec, "timeout": 5})
    seen = []

    def off_main_thread():  # there the call runs in a worker thread, given the caller's grad mode
        with torch.no_grad():
            seen.append(bounded(["p"], ["x"]))

    import threading

    thread = threading.Thread(target=off_main_thread)
    thread.start()
    thread.join(10)
    assert seen == [[0.0]]


def grad_enabled(prompts, completions, **kw):
    import torch

    return [float(torch.is_grad_enabled())] * len(completions)


def calls_sys_exit(prompts, completions, **kw):
    import sys

    sys.exit(3)


def test_a_reward_calling_sys_exit_is_an_error_not_an_exit(plugin_manager):
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:calls_sys_exit"}])
    with pytest.raises(RewardSourceError, match=r"python reward .*calls_sys_exit called sys\.exit\(3\)"):
        mix(["p"], ["x"])


def _hang_args(tmp_path, module, kwargs, **sets):
    reward = "rewards.0={name: python, function: '%s:score', alias: stuck, kwargs: {marker: '%s', release: '%s', " \
             "hang_at: 3}%s}" % (module, kwargs["marker"], kwargs["release"],
                                 "".join(f", {k}: {v}" for k, v in sets.items()))
    return ["train", "tiny-ppo", "--output-dir", str(tmp_path / "out"), "--set", "ppo.max_steps=6",
            "--set", "ppo.num_mini_batches=1", "--set", "ppo.num_ppo_epochs=1", "--set", "ppo.per_device_train_batch_size=8",
            "--set", "ppo.save_steps=1", "--set", reward]


def test_cli_reward_timeout_ends_the_run_and_keeps_the_last_checkpoint(tmp_path, capsys, hanging_reward, one_thread):
    module, kwargs = hanging_reward
    code = main(_hang_args(tmp_path, module, kwargs, timeout=1))
    err = capsys.readouterr().err
    assert code == 1, err[-2000:]
    assert "reward source rewards[0] 'stuck': python reward" in err and "did not return within 1 s" in err
    import re

    # (a library logger's handler may still hold an earlier test's closed stream: its noise is not ours)
    assert "Traceback" not in re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", err, flags=re.S)
    out = tmp_path / "out"
    assert (out / "checkpoint-2" / "trainer_state.json").exists()  # the two finished steps' checkpoints stay
    assert not (out / "model.safetensors").exists()


def test_a_second_sigterm_while_a_reward_hangs_names_it_and_exits_143(tmp_path, capsys, hanging_reward, one_thread):
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    module, kwargs = hanging_reward
    sent = []

    def send_twice():
        marker = Path(kwargs["marker"])
        end = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < end:
            time.sleep(0.02)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # training's handler must be in place
            return
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGTERM)
            sent.append(time.monotonic())
            time.sleep(0.3)

    helper = threading.Thread(target=send_twice, daemon=True)
    helper.start()
    code = main(_hang_args(tmp_path, module, kwargs, timeout=60))
    helper.join(5)
    err = capsys.readouterr().err
    assert len(sent) == 2, err[-2000:]
    assert code == 143, err[-2000:]
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert "stopped at once by a second SIGTERM at step 2, without saving (reward source rewards[0] 'stuck' (python: " in err
    assert "was still running (" in err and f"the last complete checkpoint is {checkpoint}" in err
    assert time.monotonic() - sent[-1] < 30  # at once, not at the reward's own end
    assert (checkpoint / "trainer_state.json").exists() and not (tmp_path / "out" / "model.safetensors").exists()


def test_a_signal_while_a_reward_hangs_outside_training_names_it(plugin_manager, hanging_reward):
    """Without training's handlers (an evaluation, a library caller): Ctrl-C, or SIGTERM's
    default exit, while a source hangs still names it."""
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    from trl_plus.reward_checks import SourceInterrupted

    module, kwargs = hanging_reward
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{module}:score", "kwargs": kwargs}])

    def exit_143(signum, frame):
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, exit_143)
    try:
        def send():
            end = time.monotonic() + 30
            while not Path(kwargs["marker"]).exists() and time.monotonic() < end:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=send, daemon=True).start()
        with pytest.raises(SourceInterrupted) as info:
            mix(["p"], ["x"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert info.value.exit_code == 143
    assert str(info.value).startswith(f"SIGTERM while reward source rewards[0] (python: {module}:score) was still running")


# ---------------------------------------------------------------------------------------
# booleans are not scores
# ---------------------------------------------------------------------------------------


def returns_bools(prompts, completions, **kw):
    return [True, 1.0, None][: len(completions)]


def returns_bool_array(prompts, completions, **kw):
    import numpy as np

    return np.array([False] * len(completions))


def returns_bool_tensor(prompts, completions, **kw):
    import torch

    return torch.ones(len(completions), dtype=torch.bool)


def returns_numpy_bool_entries(prompts, completions, **kw):
    import numpy as np

    return [np.bool_(True)] * len(completions)


@pytest.mark.parametrize("fn, shown", [("returns_bools", "True"), ("returns_bool_array", "False"),
                                       ("returns_bool_tensor", "True"), ("returns_numpy_bool_entries", "np.True_")])
def test_boolean_scores_are_refused(plugin_manager, fn, shown):
    mix = plugin_manager.components().reward_mix([{"name": "python", "function": f"{__name__}:{fn}"}])
    with pytest.raises(RewardSourceError) as info:
        mix(["p"] * 3, ["a", "b", "c"])
    message = str(info.value)
    assert f"returned {shown}" in message and "for completion 0" in message
    assert "a yes/no is not one: answer 1.0 or 0.0" in message


def test_boolean_scores_from_http_and_gold_are_refused(plugin_manager, json_endpoint):
    from trl_plus.eval.harness import _gold_scores

    srv = json_endpoint(lambda body: (200, {"scores": [True, 0.5]}))
    mix = plugin_manager.components().reward_mix([{"name": "http", "url": srv.url, "retries": 0}])
    with pytest.raises(RewardSourceError, match=r"returned True for completion 0 \(a bool\)"):
        mix(["p", "q"], ["a", "b"])
    with pytest.raises(RewardSourceError, match=r"eval\.gold returned True for completion 0"):
        _gold_scores(lambda p, c: [True, 1.0], ["p"] * 2, ["a", "b"])
