"""Secrets out of everything trl-plus shows or writes: URL credentials and token parameters.

Tokens themselves never enter a recipe (they are read from the environment variable a
recipe names, ``token_env``); what a user may still write inline is an address with
``user:password@`` or ``?api_key=...``, and that is what is redacted here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters whose value is a secret (``?token=...``, ``?api_key=...``, ``?sig=...``).
SECRET_PARAM = re.compile(r"token|key|secret|passw|auth|sig|credential|session", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` as it may be shown: ``user:password@`` and secret query values become ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"***@{host}" if "@" in parts.netloc else host
        query = urlencode(
            [(k, "***" if SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
            safe="*",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except (ValueError, TypeError):
        return "<an address that cannot be parsed>"


def redact_urls(value: Any) -> Any:
    """A copy of a recipe, spec or result with every http(s) address in it redacted."""
    if isinstance(value, str):
        return redact_url(value) if value.startswith(("http://", "https://")) else value
    if isinstance(value, Mapping):
        return {k: redact_urls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_urls(v) for v in value]
    return value
