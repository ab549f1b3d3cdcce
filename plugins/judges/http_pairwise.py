"""Judge: an LLM (or any service) behind an HTTP endpoint, asked in both orders.

Request: POST ``{"prompts": [...], "completions_a": [...], "completions_b": [...]}``;
answer ``{"preferences": [...]}`` (or a bare list), one entry per pair: the probability
that A is better (a number in [0, 1]) or one of ``"A"``, ``"B"``, ``"tie"``. Each batch is
sent twice, the second time with A and B swapped; when the two answers disagree on the
winner the pair is a tie, so a judge that favours a position cancels out. A batch that
times out, errors or answers garbage is retried; after the last retry its pairs are
failed (None) and the failure is counted. The bearer token comes from the environment
variable ``token_env``.
"""

from __future__ import annotations

import math

import trl_plus
from trl_plus.errors import ComponentError
from trl_plus.plugins.rewards.http_client import BadAnswer, HttpClient, shape_of
from trl_plus.plugins.rewards.http_options import DEFAULT_MAX_RESPONSE_BYTES, checked_number

LABELS = {"a": 1.0, "b": 0.0, "tie": 0.5}


def parse_preference(value) -> float | None:
    """A probability that A wins, from a number in [0, 1] or "A"/"B"/"tie"; None if garbage."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        return v if math.isfinite(v) and 0.0 <= v <= 1.0 else None
    if isinstance(value, str):
        return LABELS.get(value.strip().lower())
    return None


def combine(p_ab: float | None, p_ba: float | None) -> float | None:
    """One preference from both orders: the mean of p(A|A first) and 1 - p(B|B first);
    a tie (0.5) when the orders pick different winners."""
    if p_ab is None or p_ba is None:
        return None
    forward, backward = p_ab, 1.0 - p_ba
    if (forward - 0.5) * (backward - 0.5) < 0:
        return 0.5
    return (forward + backward) / 2


class HttpPairwiseJudge:
    """Options as for the ``http`` reward source (``http_client``: ``timeout`` bounds each
    whole request, ``max_response_bytes`` each answer), plus ``swap``.

    A batch that still fails after its retries fails its pairs (None) and is counted in
    ``failures`` (the reason, never the token); a 401/403, another 4xx or a redirect stops
    the evaluation, since every batch would fail the same way.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        token_env: str | None = None,
        batch_size: int = 16,
        swap: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        checked_number(batch_size, "batch_size", 1, integer=True)
        self.client = HttpClient(
            url, what="HTTP judge", timeout=timeout, retries=retries, backoff=backoff, max_wait=max_wait,
            token_env=token_env, max_response_bytes=max_response_bytes, error=ComponentError,
        )
        self.batch_size, self.swap = batch_size, bool(swap)
        self.failures: list[str] = []  # why batches failed (never the token)

    @property
    def url(self) -> str:
        return self.client.shown

    def __repr__(self) -> str:
        return f"HttpPairwiseJudge(url={self.client.shown!r})"

    def _ask(self, prompts, first, second) -> list[float | None]:
        def parse(body):
            prefs = body.get("preferences") if isinstance(body, dict) else body
            if not isinstance(prefs, list) or len(prefs) != len(prompts):
                raise BadAnswer(f"{shape_of(body)}, not a list of {len(prompts)} preferences (one per pair)")
            parsed = [parse_preference(v) for v in prefs]
            if all(v is None for v in parsed):
                raise BadAnswer("no usable preference (a number in [0, 1], 'A', 'B' or 'tie')")
            return parsed

        payload = {"prompts": prompts, "completions_a": first, "completions_b": second}
        try:
            return self.client.post(payload, parse)
        except ComponentError as exc:
            if getattr(exc, "fatal", False):
                raise
            self.failures.append(f"{len(prompts)} pairs failed: {exc}")
            return [None] * len(prompts)

    def __call__(self, prompts, completions_a, completions_b):
        out: list[float | None] = []
        for s in range(0, len(prompts), self.batch_size):
            p, a, b = (list(x[s : s + self.batch_size]) for x in (prompts, completions_a, completions_b))
            forward = self._ask(p, a, b)
            if not self.swap:
                out.extend(forward)
                continue
            backward = self._ask(p, b, a)
            out.extend(combine(f, r) for f, r in zip(forward, backward))
        return out


@trl_plus.hookimpl
def trl_plus_register_judges(register):
    register.add("http_pairwise", HttpPairwiseJudge)
