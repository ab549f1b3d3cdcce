"""Toy reward sources for the tiny PPO recipe and tests: dense, cheap, learnable from scratch."""

from __future__ import annotations


def char_share(prompts, completions, chars: str = "e", **columns):
    """Share of the completion's non-space characters that are one of ``chars`` (0 for an empty completion)."""
    out = []
    for text in completions:
        visible = [c for c in text if not c.isspace()]
        out.append(sum(c in chars for c in visible) / len(visible) if visible else 0.0)
    return out
