"""``PPOConfig``: ``trl.RLOOConfig`` plus the fields PPO adds (critic, GAE, KL estimator)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RLOOConfig

__all__ = ["PPOConfig", "KL_ESTIMATORS"]

KL_ESTIMATORS = ("k1", "k3")


@dataclass
class PPOConfig(RLOOConfig):
    r"""Configuration for ``trl_plus.PPOTrainer``: every ``trl.RLOOConfig`` field, plus PPO's own.

    Fields RLOO already has keep their RLOO meaning and name:

    - ``beta``: the KL coefficient in the per-token reward (``kl_coef`` in the logs) when
      no KL schedule is given; a schedule replaces it at every rollout. 0 (as in RLOO) turns
      the KL penalty and the reference model off; a KL schedule needs beta > 0 (a reference).
    - ``epsilon`` / ``epsilon_high``: the policy ratio clip range.
    - ``num_iterations``: PPO epochs over each rollout batch (``num_ppo_epochs`` sets it).
    - ``steps_per_generation``: micro-batches per rollout batch (``num_mini_batches`` sets it).
    - ``normalize_advantages``: advantage whitening (on by default here).
    - ``disable_dropout``: on by default here (RLOO's default is off): the rollout's log-probs
      and values must be computed by the same function the update differentiates, or the
      first ratio is not 1.

    Parameters of the critic (value function):

    - ``critic_init``: ``"policy"`` (the policy's backbone with a fresh value head),
      ``"reward"`` (the recipe's reward model), a path to a sequence-classification model, or
      a ``critic/`` folder a run saved (full, or a LoRA run's value head and adapter).
    - ``critic_learning_rate``: its learning rate (default: ``learning_rate``).
    - ``critic_warmup_steps``: the first this many optimizer steps train the critic alone, on
      fresh rollouts, before the policy moves (its parameters do not change during them);
      equal to ``max_steps`` it is a value-only pre-training run (``ppo_warmup``).
    - ``critic_warmup_learning_rate``: the critic's learning rate during the warm-up
      (default: ``critic_learning_rate``, else ``learning_rate``).
    - ``critic_adapter_r``: with LoRA (a ``peft:`` section) and ``critic_init: policy``, the
      rank of the critic's own low-rank adapter on the shared, adapter-disabled base (its input
      embedding and the policy's LoRA target modules); 0: a value head on the frozen base
      alone (``peft_support.SharedBaseCritic``).
    - ``vf_coef``, ``cliprange_value``: weight and clip range of the value loss.

    Parameters of the advantage:

    - ``gamma``, ``lam``: discount and GAE lambda.
    - ``kl_estimator``: ``"k1"`` (log-ratio) or ``"k3"`` per-token KL in the reward.
    - ``whiten_rewards``: scale per-token rewards to unit variance per rollout batch.
    - ``missing_eos_penalty``: subtracted from the score of completions without EOS.

    Parameters of the reward check:

    - ``max_unscored_batches``: the run stops with an error after this many consecutive
      rollout batches in which no completion got a score (every reward source answered
      None: a broken scorer trains on nothing); 0 turns the check off.
    """

    normalize_advantages: bool = field(
        default=True,
        metadata={"help": "Whiten the GAE advantages over each rollout batch (mean 0, std 1 over completion tokens)."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Turn dropout off in the policy, reference and critic, so the rollout's log-probs and values "
            "match what the update computes (the first PPO ratio is 1)."
        },
    )
    num_ppo_epochs: int | None = field(
        default=None,
        metadata={"help": "PPO epochs over each rollout batch. Sets `num_iterations`; leave one of the two unset."},
    )
    num_mini_batches: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps (minibatches) per rollout batch per epoch. Sets `steps_per_generation` to "
            "`num_mini_batches * gradient_accumulation_steps`; leave `steps_per_generation` unset."
        },
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    cliprange_value: float | None = field(
        default=0.2,
        metadata={"help": "Clip range of the value prediction around its rollout value; null turns clipping off."},
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of the per-token rewards."})
    lam: float = field(default=0.95, metadata={"help": "Lambda of generalised advantage estimation (GAE)."})
    kl_estimator: str = field(
        default="k1",
        metadata={"help": "Per-token KL estimator in the reward: 'k1' (log-ratio) or 'k3' ((r-1) - log r, >= 0)."},
    )
    whiten_rewards: bool = field(
        default=False,
        metadata={"help": "Scale the per-token rewards to unit variance over each rollout batch (mean kept)."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of a completion that ends without an EOS token."},
    )
    max_unscored_batches: int = field(
        default=3,
        metadata={
            "help": "Stop with an error after this many consecutive rollout batches in which no completion got a "
            "score (every reward source answered None); 0 turns the check off."
        },
    )
    critic_init: str = field(
        default="policy",
        metadata={
            "help": "Where the critic starts: 'policy' (policy backbone, zero value head), 'reward' (the "
            "recipe's reward model), or a path/hub id of a sequence-classification model."
        },
    )
    critic_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the critic's parameter group; defaults to `learning_rate`."},
    )
    critic_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Train the critic alone (value loss only, on fresh rollouts) for this many optimizer steps "
            "before the policy moves; equal to `max_steps`: a value-only pre-training run."
        },
    )
    critic_warmup_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "The critic's learning rate during the warm-up; defaults to `critic_learning_rate`, "
            "else `learning_rate`."
        },
    )
    critic_adapter_r: int = field(
        default=8,
        metadata={
            "help": "With LoRA and critic_init 'policy': rank of the critic's own low-rank adapter on the shared "
            "base (input embedding and the policy's LoRA target modules); 0: a value head alone."
        },
    )

    def __post_init__(self):
        if self.num_ppo_epochs is not None:
            if self.num_ppo_epochs < 1:
                raise ValueError(f"num_ppo_epochs must be >= 1, got {self.num_ppo_epochs}")
            if self.num_iterations not in (1, self.num_ppo_epochs):
                raise ValueError(
                    f"num_ppo_epochs ({self.num_ppo_epochs}) and num_iterations ({self.num_iterations}) are the same "
                    "setting; give one of them"
                )
            self.num_iterations = self.num_ppo_epochs
        if self.num_mini_batches is not None:
            if self.num_mini_batches < 1:
                raise ValueError(f"num_mini_batches must be >= 1, got {self.num_mini_batches}")
            if self.steps_per_generation is not None or self.generation_batch_size is not None:
                raise ValueError(
                    "num_mini_batches sets steps_per_generation; do not also give steps_per_generation or "
                    "generation_batch_size"
                )
            self.steps_per_generation = self.num_mini_batches * self.gradient_accumulation_steps
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        if not self.beta >= 0:
            raise ValueError(f"beta (the KL coefficient) must be >= 0, got {self.beta}")
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef}")
        if self.cliprange_value is not None and self.cliprange_value <= 0:
            raise ValueError(f"cliprange_value must be > 0 or null, got {self.cliprange_value}")
        if self.critic_learning_rate is not None and self.critic_learning_rate <= 0:
            raise ValueError(f"critic_learning_rate must be > 0, got {self.critic_learning_rate}")
        for name in ("critic_warmup_steps", "critic_adapter_r"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.critic_warmup_learning_rate is not None and self.critic_warmup_learning_rate <= 0:
            raise ValueError(f"critic_warmup_learning_rate must be > 0, got {self.critic_warmup_learning_rate}")
        if self.critic_warmup_steps and self.vf_coef == 0:
            raise ValueError(
                f"critic_warmup_steps ({self.critic_warmup_steps}) trains the critic on the value loss alone, "
                "which vf_coef 0 turns off: set vf_coef > 0 or critic_warmup_steps 0"
            )
        if isinstance(self.max_unscored_batches, bool) or not isinstance(self.max_unscored_batches, int) \
                or self.max_unscored_batches < 0:
            raise ValueError(f"max_unscored_batches must be an integer >= 0 (0: no check), got {self.max_unscored_batches!r}")
        if not self.critic_init:
            raise ValueError("critic_init must be 'policy', 'reward' or a model path")
        super().__post_init__()
