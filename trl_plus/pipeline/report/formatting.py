"""How the report names the methods and writes its numbers: the display names, the
number formats the templates use as filters, and the small joins of its sentences."""

from __future__ import annotations

import math

NAMES = {"ppo": "PPO (reward model)", "ppo_gt": "PPO (gold reward)", "dpo": "DPO", "sft": "SFT",
         "best_of_n": "best-of-n (SFT + reward model)", "rloo": "RLOO", "grpo": "GRPO", "online_dpo": "online DPO"}
# (an arm of any other trainer kind is shown by its kind's name)
RL_METHODS = ("ppo", "ppo_gt")


def _fmt(x, digits: int = 3) -> str:
    if not isinstance(x, (int, float)) or (isinstance(x, float) and math.isnan(x)):
        return "n/a"  # None, or a key the template found missing
    return f"{x:.{digits}f}"


def _ci(ci, digits: int = 3) -> str:
    return f"[{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]" if ci else "n/a"


def _signed(x, digits: int = 3) -> str:
    return f"{x:+.{digits}f}" if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)) else "n/a"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _listed(items: list[str], shown: int = 6) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")
