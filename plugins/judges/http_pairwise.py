"""Judge: an LLM (or any service) behind an HTTP endpoint, asked in both orders.

Request: POST ``{"prompts": [...], "completions_a": [...], "completions_b": [...]}``;
answer ``{"preferences": [...]}`` (or a bare list), one entry per pair: the probability
that A is better (a number in [0, 1]) or one of ``"A"``, ``"B"``, ``"tie"``. Each batch is
sent twice, the second time with A and B swapped; when the two answers disagree on the
winner the pair is a tie, so a judge that favours a position cancels out. A batch that
times out, errors or answers garbage is retried; after the last retry its pairs are
failed (None). The bearer token comes from the environment variable ``token_env``.
"""

from __future__ import annotations

import math
import time

import trl_plus
from trl_plus.errors import RecipeError
from trl_plus.plugins.rewards.http import RETRY_STATUSES, bearer_headers, check_url, make_session

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
    def __init__(
        self,
        url: str,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        token_env: str | None = None,
        batch_size: int = 16,
        swap: bool = True,
    ):
        check_url(url)
        if not isinstance(retries, int) or retries < 0:
            raise RecipeError(f"retries must be an integer >= 0, got {retries!r}")
        self.url, self.timeout, self.retries, self.backoff = url, float(timeout), retries, float(backoff)
        self.batch_size, self.swap = int(batch_size), bool(swap)
        self._headers = bearer_headers(token_env)  # checked now, not at the first batch
        self._session = make_session(0, 0)  # retries are counted here, garbage answers included
        self.failures: list[str] = []  # why batches failed (never the token)

    def __repr__(self) -> str:
        return f"HttpPairwiseJudge(url={self.url!r})"

    def _ask(self, prompts, first, second) -> list[float | None]:
        import requests

        payload = {"prompts": prompts, "completions_a": first, "completions_b": second}
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = self._session.post(self.url, json=payload, headers=self._headers, timeout=self.timeout)
            except requests.RequestException as exc:
                reason = type(exc).__name__
                continue
            if resp.status_code != 200:
                reason = f"HTTP {resp.status_code}"
                if resp.status_code in RETRY_STATUSES or resp.status_code >= 500:
                    continue
                break  # 4xx: asking again will not help
            try:
                body = resp.json()
            except ValueError:
                reason = "invalid JSON"
                continue
            prefs = body.get("preferences") if isinstance(body, dict) else body
            if not isinstance(prefs, list) or len(prefs) != len(prompts):
                reason = "no list of one preference per pair"
                continue
            parsed = [parse_preference(v) for v in prefs]
            if all(v is None for v in parsed):
                reason = "no usable preference in the answer"
                continue
            return parsed
        self.failures.append(f"{len(prompts)} pairs failed after {self.retries} retries: {reason}")
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
