"""Reward source: an HTTP endpoint. POST {"prompts": [...], "completions": [...]},
answer {"scores": [...]} (or a bare list), one number (or null: no opinion) per completion.

Timeouts, retries and what each failure says: ``http_client`` (the options it checks:
``http_options``). The bearer token comes from the environment variable ``token_env`` and
never appears in errors or logs.
"""

from __future__ import annotations

import trl_plus
from trl_plus.errors import RewardSourceError
from trl_plus.plugins.rewards.http_client import BadAnswer, HttpClient, shape_of
from trl_plus.plugins.rewards.http_options import DEFAULT_MAX_RESPONSE_BYTES, checked_number


class HttpSource:
    """Scores batches of ``batch_size`` by POSTing JSON to ``url``.

    :param timeout: seconds one request may take, whole: connecting, the answer's headers
        and its body (an answer that trickles in is cut off at it, then retried).
    :param retries: how many times a batch is sent again after a timeout, a refused
        connection, a 429/5xx or an unusable answer (never after a 401/403).
    :param backoff: the first wait before a retry, doubled at each further one.
    :param max_wait: the longest wait before one retry, a server's ``Retry-After`` included.
    :param token_env: name of the environment variable holding a bearer token.
    :param max_response_bytes: the largest answer read, in bytes (default 10 MiB); a larger
        one stops the run with a message naming this key (it is never read into memory).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        token_env: str | None = None,
        batch_size: int = 64,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        checked_number(batch_size, "batch_size", 1, integer=True)
        self.client = HttpClient(
            url, what="HTTP reward source", timeout=timeout, retries=retries, backoff=backoff,
            max_wait=max_wait, token_env=token_env, max_response_bytes=max_response_bytes, error=RewardSourceError,
        )
        self.batch_size = batch_size
        self.trl_plus_ref = f"http: {self.client.shown}"  # how errors name this source

    @property
    def url(self) -> str:
        return self.client.shown

    def __repr__(self) -> str:  # never shows the token
        return f"HttpSource(url={self.client.shown!r})"

    def __call__(self, prompts, completions, **columns):
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            n = len(prompts[start : start + self.batch_size])

            def parse(body, n=n):
                batch = body.get("scores") if isinstance(body, dict) else body
                if not isinstance(batch, list):
                    raise BadAnswer(f"{shape_of(body)}, not a 'scores' list")
                if len(batch) != n:
                    raise BadAnswer(f"{len(batch)} scores for {n} completions")
                return batch

            payload = {"prompts": prompts[start : start + n], "completions": completions[start : start + n]}
            scores.extend(self.client.post(payload, parse))
        return scores


@trl_plus.hookimpl
def trl_plus_register_reward_sources(register):
    register.add("http", HttpSource)
