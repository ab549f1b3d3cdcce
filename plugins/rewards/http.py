"""Reward source: an HTTP endpoint. POST {"prompts": [...], "completions": [...]},
answer {"scores": [...]} (or a bare list). The bearer token comes from an environment
variable and never appears in errors or logs."""

from __future__ import annotations

import os

import trl_plus
from trl_plus.errors import RecipeError, RewardSourceError

RETRY_STATUSES = (429, 500, 502, 503, 504)


def make_session(retries: int, backoff: float):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # POST too: scoring is idempotent
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def check_url(url) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise RecipeError(f"must be an http:// or https:// URL with a host, got {url!r}", "url")
    return url


def bearer_headers(token_env: str | None) -> dict:
    if not token_env:
        return {}
    token = os.environ.get(token_env)
    if not token:
        raise RecipeError(f"environment variable {token_env!r} (token_env) is not set", "token_env")
    return {"Authorization": f"Bearer {token}"}


class HttpSource:
    """Scores batches by POSTing JSON to ``url``; retried with backoff on errors and timeouts."""

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        token_env: str | None = None,
        batch_size: int = 64,
    ):
        self.url, self.timeout, self.batch_size = check_url(url), timeout, batch_size
        self._headers = bearer_headers(token_env)  # checked at start-up, not at the first batch
        self._session = make_session(retries, backoff)
        self.retries = retries

    def __repr__(self) -> str:  # never shows the token
        return f"HttpSource(url={self.url!r})"

    def _post(self, payload: dict):
        import requests

        try:
            resp = self._session.post(self.url, json=payload, headers=self._headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RewardSourceError(
                f"HTTP reward source {self.url} failed after {self.retries} retries: {type(exc).__name__}"
            ) from None
        if resp.status_code != 200:
            raise RewardSourceError(
                f"HTTP reward source {self.url} answered {resp.status_code} after {self.retries} retries"
            )
        try:
            return resp.json()
        except ValueError:
            raise RewardSourceError(f"HTTP reward source {self.url} answered with invalid JSON") from None

    def __call__(self, prompts, completions, **columns):
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            body = self._post(
                {"prompts": prompts[start : start + self.batch_size], "completions": completions[start : start + self.batch_size]}
            )
            batch = body.get("scores") if isinstance(body, dict) else body
            if not isinstance(batch, list):
                raise RewardSourceError(f"HTTP reward source {self.url} answered without a 'scores' list")
            scores.extend(batch)
        return scores


@trl_plus.hookimpl
def trl_plus_register_reward_sources(register):
    register.add("http", HttpSource)
