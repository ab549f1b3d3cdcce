"""The options the HTTP reward source and the HTTP judge share, checked when the component is
built (before the first batch): the address, the bearer token's environment variable, and
the numbers (timeout, retries, sizes). Every message shows a value that looks like a
credential by its shape only, and an address with its credentials removed.
"""

from __future__ import annotations

import math
import os
import re
from urllib.parse import urlsplit

from trl_plus.errors import RecipeError
from trl_plus.redact import looks_like_secret, redact_url, shape

_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: a valid header value
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_MAX_RESPONSE_BYTES = 10 * 2**20  # 10 MiB: thousands of scores; a larger answer is a broken server


def _shown_value(value: str) -> str:
    """A value a message quotes: by its shape if it looks like a credential, an address redacted."""
    return shape(value) if looks_like_secret(value) else redact_url(value)


def check_url(url) -> str:
    """``url`` if it is an ``http://`` or ``https://`` address with a host; a RecipeError otherwise."""
    if not isinstance(url, str):
        raise RecipeError(f"must be an http:// or https:// address, got a {type(url).__name__}", "url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https"):
        raise RecipeError(f"must start with http:// or https://, got {_shown_value(url)!r}", "url")
    if not host:
        raise RecipeError(f"url has no host: {redact_url(url)!r}", "url")
    return url


def read_token(token_env: str | None) -> str | None:
    """The bearer token from the environment variable ``token_env`` (checked at start-up)."""
    if not token_env:
        return None
    if not isinstance(token_env, str):
        raise RecipeError(f"must be the name of an environment variable, got a {type(token_env).__name__}", "token_env")
    if not _ENV_NAME.match(token_env) or looks_like_secret(token_env):
        raise RecipeError(
            f"must be the NAME of the environment variable that holds the token, not the token itself: got "
            f"{shape(token_env)!r}. Put the token in a variable (export SCORER_TOKEN=...) and write "
            "token_env: SCORER_TOKEN", "token_env",
        )
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise RecipeError(f"environment variable {token_env!r} (token_env) is not set", "token_env")
    if not _TOKEN_CHARS.match(token):
        raise RecipeError(
            f"environment variable {token_env!r} (token_env) holds spaces or control characters: "
            "a bearer token is one word of printable characters"
        )
    return token


def checked_number(value, name: str, minimum: float, integer: bool = False, above: bool = False):
    """``value`` if it is a finite number (an integer with ``integer``) >= ``minimum`` (> with
    ``above``); a RecipeError naming ``name`` otherwise."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < minimum or (above and value == minimum):
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum:g}" if above else f">= {minimum:g}"
        raise RecipeError(f"{name} must be {kind} {bound}, got {value!r}")
    return value
