"""PPO with ``use_vllm`` (colocate and server) against a stand-in for vLLM.

vLLM cannot be installed on these machines. The stand-in is plugged in where TRL's vLLM
backend (``trl.generation.vllm_generation``) reaches vLLM: the ``LLM`` engine (colocate)
and the server client (server; its real ``generate`` builds the request and parses the
answer, only the HTTP post is faked). RLOO's and PPO's own vLLM code paths run: weight
sync before each rollout, generation, padding, scoring. The stand-in answers as vLLM
does: one list of token ids per completion, no padding, at most ``max_tokens`` long,
ending with EOS where it stopped there and without one where it ran out of tokens.
"""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import pytest
import torch

from test_ppo_trainer import make_trainer  # the tiny PPO setup every trainer test uses

import trl_plus
from trl_plus.errors import RecipeError, TrlPlusError

MAX_LEN = 6
TEMPERATURE = 0.7
EOS_PENALTY = 0.5
# (length, ends with EOS) of successive completions; None: as long as allowed (max_tokens).
PLAN = [(3, True), (None, False), (1, True), (None, True), (4, True), (2, True), (None, False)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


class StandIn:
    """What vLLM would sample: random ordinary tokens, lengths and endings from ``plan``."""

    def __init__(self, tokenizer, plan=PLAN, eos_inside=False):
        self.eos = tokenizer.eos_token_id
        special = set(tokenizer.all_special_ids)
        self.ordinary = [i for i in range(len(tokenizer)) if i not in special]
        self.plan, self.eos_inside = plan, eos_inside
        self.rng = random.Random(0)
        self.prompts, self.completions, self.sampling, self.syncs = [], [], [], []
        self.engines = 0  # vLLM engines started (colocate) or servers connected to

    def complete(self, prompt_ids, max_tokens):
        length, ends_in_eos = self.plan[len(self.completions) % len(self.plan)]
        length = min(length or max_tokens, max_tokens)
        ids = [self.rng.choice(self.ordinary) for _ in range(length - ends_in_eos)] + [self.eos] * ends_in_eos
        if self.eos_inside and length > 2:  # a server that does not stop at the trainer's EOS
            ids[0] = self.eos
        self.prompts.append(list(prompt_ids))
        self.completions.append(ids)
        return list(ids)


def install_stand_in(monkeypatch, standin):
    """Make TRL's vLLM backend find 'vLLM' and talk to the stand-in, in both modes."""
    from trl.generation import vllm_client, vllm_generation

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LoadWeights:  # llm_engine.model_executor.driver_worker.model_runner.model
        def __init__(self):
            self.current = {}

        def load_weights(self, weights):
            for name, tensor in weights:
                self.current[name] = tensor.detach().clone()

    class LLM:  # colocate: the engine in the training process
        def __init__(self, model, **kwargs):
            standin.engines += 1
            self.model = LoadWeights()
            self.llm_engine = SimpleNamespace(
                model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=self.model)))
            )

        def reset_prefix_cache(self):  # the end of a weight sync
            standin.syncs.append(self.model.current)
            self.model.current = {}

        def generate(self, prompts, sampling_params, use_tqdm=True):
            standin.sampling.append(dict(vars(sampling_params)))
            return [
                SimpleNamespace(
                    prompt_token_ids=p["prompt_token_ids"],
                    outputs=[SimpleNamespace(token_ids=standin.complete(p["prompt_token_ids"], sampling_params.max_tokens),
                                             logprobs=None)
                             for _ in range(sampling_params.n)],
                )
                for p in prompts
            ]

    class Client:  # server: TRL's client, with the server's HTTP answers made up here
        generate = vllm_client.VLLMClient.generate

        def __init__(self, base_url=None, group_port=None, connection_timeout=None):
            standin.engines += 1
            self.base_url, self.model = base_url, "stand-in"

        def init_communicator(self, device=None):
            pass

        def _post(self, url, json):
            assert url.endswith("/v1/completions") and json["return_token_ids"]
            standin.sampling.append({k: v for k, v in json.items() if k != "prompt"})
            choices = [
                {"prompt_token_ids": prompt, "token_ids": standin.complete(prompt, json["max_tokens"]), "logprobs": None}
                for prompt in json["prompt"]
                for _ in range(json["n"])
            ]
            return {"choices": choices}

        def update_named_params(self, metadata, named_params):
            pushed = {name: tensor.detach().clone() for name, tensor in named_params}
            assert [m[0] for m in metadata] == list(pushed)
            standin.syncs.append(pushed)

        def reset_prefix_cache(self):
            pass

    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(vllm_generation, "LLM", LLM, raising=False)
    monkeypatch.setattr(vllm_generation, "SamplingParams", SamplingParams, raising=False)
    monkeypatch.setattr(vllm_generation, "VLLMClient", Client)
    # Colocate mode sets the distributed environment variables; give them back afterwards.
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "localhost", "MASTER_PORT": "29533"}.items():
        monkeypatch.setenv(name, value)


def text_length_reward(prompts, completions, **columns):
    return [len(text) / 10 for text in completions]


class Spy(trl_plus.PPOTrainer):
    """Keeps each rollout as PPO hands it to the loss, with the weights it was computed with."""

    rollouts: list

    def _generate_and_score_completions(self, inputs):
        policy = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        critic = {k: v.detach().clone() for k, v in self.critic.state_dict().items()}
        out = super()._generate_and_score_completions(inputs)
        tensors = {k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)}
        self.rollouts.append({"out": tensors, "policy": policy, "critic": critic, "captured": self._last_captured})
        return out

    def _check_captured(self, captured, out, mode):
        old, ref = super()._check_captured(captured, out, mode)
        self._last_captured = (old.clone(), ref.clone())
        return old, ref


class ScoredRecorder:
    def __init__(self):
        self.batches = []

    @trl_plus.hookimpl
    def trl_plus_rollout_scored(self, trainer, step, prompts, completions, rewards):
        self.batches.append((list(completions), list(rewards["reward"])))


def build(tmp_path, tiny_model_path, mode, steps=3, **kwargs):
    Spy.rollouts = []
    return make_trainer(
        tmp_path, tiny_model_path, steps=steps, trainer_cls=Spy, rewards=[text_length_reward],
        per_device_train_batch_size=8, num_generations=2, max_completion_length=MAX_LEN, temperature=TEMPERATURE,
        missing_eos_penalty=EOS_PENALTY, use_vllm=True, vllm_mode=mode, **kwargs,
    )


def completion_logps(model, prompt, completion):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / TEMPERATURE
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def critic_values(critic, prompt, completion):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        values = critic(ids, torch.ones_like(ids))[0].float()
    return values[len(prompt) - 1 : len(prompt) - 1 + len(completion)]


@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_rollouts_line_up_with_what_vllm_returned(tmp_path, tiny_model_path, tiny_tokenizer, mode, monkeypatch,
                                                  plugin_manager, register_plugin):
    from transformers import AutoModelForCausalLM

    standin = StandIn(tiny_tokenizer)
    install_stand_in(monkeypatch, standin)
    scored = ScoredRecorder()
    register_plugin(scored)
    trainer = build(tmp_path, tiny_model_path, mode, plugin_manager=plugin_manager)
    policy_names = [name for name, _ in trainer.model.named_parameters()]
    initial_policy = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    initial_critic = {k: v.detach().clone() for k, v in trainer.critic.state_dict().items()}
    trainer.train()

    assert standin.engines == 1
    # What vLLM was asked for: the trainer's length, temperature and number of samples.
    n_per_call = 1 if mode == "colocate" else 2
    assert all(s["max_tokens"] == MAX_LEN and s["temperature"] == TEMPERATURE and s["n"] == n_per_call for s in standin.sampling)
    assert len(trainer.rollouts) == 3 and len(standin.completions) == 3 * 8
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    policy, critic = copy.deepcopy(reference), copy.deepcopy(trainer.critic).eval()
    pad, eos = tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id
    seen_lengths, seen_endings = set(), set()
    for r, rollout in enumerate(trainer.rollouts):
        out = rollout["out"]
        returned = standin.completions[8 * r : 8 * (r + 1)]
        asked = standin.prompts[8 * r : 8 * (r + 1)]
        assert out["completion_ids"].shape[1] == max(len(ids) for ids in returned)
        policy.load_state_dict(rollout["policy"])
        critic.load_state_dict(rollout["critic"])
        old, ref = rollout["captured"]
        for i, ids in enumerate(returned):
            n = len(ids)
            seen_lengths.add(n)
            seen_endings.add(ids[-1] == eos)
            prompt = out["prompt_ids"][i][out["prompt_mask"][i].bool()].tolist()
            assert prompt == asked[i]  # each completion sits beside the prompt it was generated from
            # The trained-on ids are vLLM's, right-padded; the mask covers exactly them (EOS included).
            assert out["completion_ids"][i, :n].tolist() == ids
            assert (out["completion_ids"][i, n:] == pad).all()
            assert out["completion_mask"][i].tolist() == [1] * n + [0] * (out["completion_mask"].shape[1] - n)
            assert out["loss_mask"][i].tolist() == out["completion_mask"][i].tolist()
            # Old log-probs: the policy's at rollout time, of these tokens; reference: the initial policy's.
            torch.testing.assert_close(out["old_per_token_logps"][i, :n], completion_logps(policy, prompt, ids), atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(old[i, :n], completion_logps(policy, prompt, ids), atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(ref[i, :n], completion_logps(reference, prompt, ids), atol=2e-4, rtol=1e-4)
            # One value per completion token, from the state that predicts it; none on padding.
            torch.testing.assert_close(out["old_values"][i, :n], critic_values(critic, prompt, ids), atol=2e-4, rtol=1e-4)
            assert (out["old_values"][i, n:] == 0).all() and (out["advantages"][i, n:] == 0).all()
            assert (out["returns"][i, n:] == 0).all()
        # The reward scored the decoded text of those ids; a completion without EOS paid the penalty.
        completions, rewards = scored.batches[r]
        assert completions == tiny_tokenizer.batch_decode(returned, skip_special_tokens=True)
        expected = [len(text) / 10 - (0 if ids[-1] == eos else EOS_PENALTY) for text, ids in zip(completions, returned)]
        assert rewards == pytest.approx(expected, abs=1e-6)
    assert {1, MAX_LEN} <= seen_lengths and len(seen_lengths) >= 4 and seen_endings == {True, False}
    assert any(o["out"]["old_values"].abs().sum() > 0 for o in trainer.rollouts[1:])  # the critic learned, values checked live

    # Before each rollout vLLM got the policy's weights of that moment, under its own names, and nothing of the critic.
    assert len(standin.syncs) == 3
    for pushed, rollout in zip(standin.syncs, trainer.rollouts):
        assert list(pushed) == policy_names
        assert all(torch.equal(pushed[name], rollout["policy"][name]) for name in pushed)
    # A few PPO steps moved the policy and the critic.
    final_policy, final_critic = trainer.model.state_dict(), trainer.critic.state_dict()
    assert any(not torch.equal(final_policy[k], v) for k, v in initial_policy.items())
    assert any(not torch.equal(final_critic[k], v) for k, v in initial_critic.items())
    assert not all(torch.equal(standin.syncs[0][k], standin.syncs[-1][k]) for k in policy_names)


def test_completion_going_on_after_eos_is_refused(tmp_path, tiny_model_path, tiny_tokenizer, monkeypatch):
    standin = StandIn(tiny_tokenizer, eos_inside=True)
    install_stand_in(monkeypatch, standin)
    trainer = build(tmp_path, tiny_model_path, "server", steps=1)
    with pytest.raises(TrlPlusError, match="go on after an EOS token"):
        trainer.train()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"vllm_mode": "remote"}, "ppo.vllm_mode"),
        ({"generation_kwargs": {"n": 4}}, "ppo.generation_kwargs.n"),
        ({"generation_kwargs": {"max_tokens": 64}}, "ppo.generation_kwargs.max_tokens"),
        ({"generation_kwargs": {"ignore_eos": True}}, "ppo.generation_kwargs.ignore_eos"),
        ({"generation_kwargs": {"temperature": 1.3}}, "ppo.generation_kwargs.temperature"),
    ],
)
def test_unsupported_vllm_setups_are_refused_before_anything_is_built(tmp_path, tiny_model_path, tiny_tokenizer,
                                                                       monkeypatch, settings, key):
    standin = StandIn(tiny_tokenizer)
    install_stand_in(monkeypatch, standin)
    settings = {"vllm_mode": "colocate", **settings}
    with pytest.raises(RecipeError) as caught:
        build(tmp_path, tiny_model_path, **{"mode": settings.pop("vllm_mode")}, **settings)
    assert caught.value.key == key and str(caught.value).startswith(f"{key}: ")
    assert standin.engines == 0 and standin.syncs == [] and standin.sampling == []


def test_use_vllm_without_vllm_installed_is_refused(tmp_path, tiny_model_path):
    from trl.generation import vllm_generation

    if vllm_generation.is_vllm_available():
        pytest.skip("vLLM is installed here")
    with pytest.raises(RecipeError, match="vLLM is not installed") as caught:
        build(tmp_path, tiny_model_path, "colocate")
    assert caught.value.key == "ppo.use_vllm"


def test_settings_without_use_vllm_are_not_checked():
    from trl_plus.trainers.ppo_vllm import refuse_unsupported_vllm

    refuse_unsupported_vllm(trl_plus.PPOConfig(output_dir="unused", bf16=False, vllm_mode="remote", generation_kwargs={"n": 4}))
