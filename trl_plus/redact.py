"""Secrets out of everything trl-plus shows or writes: URL credentials, query values, and
any value that looks like a credential.

Tokens themselves never enter a recipe (they are read from the environment variable a
recipe names, ``token_env``); what a user may still write inline is an address with
``user:password@`` or ``?api_key=...``, or a token pasted where a name or a number was
expected (``--set rewards.0.token_env=$MY_TOKEN``). So:

- :func:`redact_url` (messages): ``user:password@`` goes, and so does every query value
  whose name suggests a credential (:data:`SECRET_PARAM`) or whose value looks like one;
- :func:`redact_urls` (saved files: a run's ``recipe.yaml``, ``eval.json`` manifests,
  pipeline markers): every query value goes, whatever its name; a value that looks like a
  credential, or sits under a key named like one, is shown by its shape only;
- :func:`hide_secrets` (every ``TrlPlusError`` message): addresses as in :func:`redact_url`,
  and any word that looks like a credential replaced by its :func:`shape`
  (``'sk-l…(44 chars)'``), so a message can still say what kind of value was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameter names whose value is a secret (``?token=``, ``?api_key=``, ``?sig=``,
# ``?jwt=``, ``?bearer=``, ``?pass=``, ``?code=`` (OAuth), ``?X-Amz-Credential=``, ...).
# Matching more than needed only hides a harmless value from a message.
SECRET_PARAM = re.compile(
    r"token|key|secret|pass|pwd|auth|sig|cred|session|sid|jwt|bearer|code|cookie|otp|nonce|ticket|hmac|salt"
    r"|private|access|refresh|assertion|saml|hash",
    re.IGNORECASE,
)
# Recipe keys whose (text) value is a credential written inline: ``password: ...``,
# ``api_key: ...``. ``token_env`` and other ``*_env`` keys name a variable: never hidden.
# (Not ``eos_token``, ``pad_token``, ``max_tokens``: a tokenizer's words, not secrets.)
SECRET_KEY = re.compile(
    r"^tokens?$|(^|[_\-.])((api|access|auth|bearer|hf|github|refresh|session|secret|id)_?tokens?|api_?keys?"
    r"|access_?keys?|secret(_?key)?|client_secret|passw(or)?d|pass|pwd|passphrase|jwt|bearer|auth(orization)?"
    r"|credentials?|cookie|session(_?id)?|private_?key)$",
    re.IGNORECASE,
)

# Prefixes of well-known credential formats (API keys of OpenAI, Anthropic, Stripe, Hugging
# Face, GitHub, GitLab, Slack, AWS, Google, npm, PyPI, SendGrid, Replicate, Groq...) and JWTs.
_KNOWN_PREFIX = re.compile(
    r"^(sk|pk|rk)[-_]|^(hf|ghp|gho|ghu|ghs|ghr|npm|shpat|shpss|r8|gsk|whsec|dop_v1|xai)_|^github_pat_|^glpat-"
    r"|^xox[abposr]-|^AIza|^ya29\.|^pypi-|^eyJ[\w-]*\.|^SG\.|^dapi[0-9a-f]",
)
_AWS_KEY_ID = re.compile(r"^(AKIA|ASIA)[0-9A-Z]{16}$")
_HEX = re.compile(r"^([0-9a-f]+|[0-9A-F]+)$")  # digests and ids: shown (a run's hash is not a secret)
# A word as messages and values are split: a run of token characters. ``/`` and ``:``
# split words, so paths and ``module:attr`` are checked part by part.
_WORD = re.compile(r"[A-Za-z0-9_\-.~+=]{12,}")
_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>`]+", re.IGNORECASE)


def _kind(c: str) -> int:
    return 0 if c.isdigit() else 1 if c.isupper() else 2


def _random_looking(text: str, min_len: int, classes: int) -> bool:
    """At least ``min_len`` letters and digits, of at least ``classes`` kinds (digits,
    upper case, lower case), switching kind often, as random keys do (a CamelCase name
    switches at word starts only, a model name at its few numbers)."""
    chars = [c for c in text if c.isascii() and c.isalnum()]
    if len(chars) < min_len or _HEX.match("".join(chars)):
        return False
    counts = [0, 0, 0]
    for c in chars:
        counts[_kind(c)] += 1
    if sum(n >= 1 for n in counts) < classes:
        return False
    switches = sum(_kind(a) != _kind(b) for a, b in zip(chars, chars[1:]))
    return switches >= 0.4 * (len(chars) - 1)


def looks_like_secret(value: Any) -> bool:
    """Whether ``value`` (a string) looks like a credential: a well-known key format, or a
    long random-looking word (upper and lower case letters and digits mixed, as API keys
    and base64 tokens are; hex digests, UUIDs, names and paths are not taken for one)."""
    if not isinstance(value, str) or len(value) < 12:
        return False
    if _AWS_KEY_ID.match(value):
        return True
    known = _KNOWN_PREFIX.search(value)
    if known and _random_looking(value[known.end():], 12, 2):
        return True
    if _random_looking(value, 32, 2):  # base64 or base62, separators and all
        return True
    return any(_random_looking(part, 16, 3) for part in re.split(r"[-_.~+=]", value))


def shape(value: str, dots: str = "…") -> str:
    """How a secret-looking value is shown: its length, after its first four characters
    when it is long enough (16 or more) for those to give nothing away. Saved files use
    ``dots="..."`` (plain ASCII, as YAML writes it unescaped)."""
    return f"{value[:4] if len(value) >= 16 else ''}{dots}({len(value)} chars)"


def _hide_words(text: str) -> str:
    return _WORD.sub(lambda m: shape(m.group()) if looks_like_secret(m.group()) else m.group(), text)


def redact_url(url: str, all_query: bool = False) -> str:
    """``url`` as it may be shown: ``user:password@`` becomes ``***@``, a query value whose
    name suggests a credential (every query value with ``all_query``) becomes ``***``, and
    so does a path part, query name or value that looks like a credential (a webhook's
    token in its path); a ``#fragment`` with a value (OAuth puts tokens there) is dropped."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        netloc = f"***@{host}" if "@" in parts.netloc else host
        query = []
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            hidden = v and (all_query or SECRET_PARAM.search(k) or looks_like_secret(v))
            query.append(("***" if looks_like_secret(k) else k, "***" if hidden else v))
        path = "/".join("***" if looks_like_secret(p) else p for p in parts.path.split("/"))
        fragment = "" if "=" in parts.fragment or looks_like_secret(parts.fragment) else parts.fragment
        return urlunsplit((parts.scheme, netloc, path, urlencode(query, safe="*"), fragment))
    except (ValueError, TypeError):
        return "<an address that cannot be parsed>"


def hide_secrets(text: str) -> str:
    """``text`` (a message) with every address redacted as by :func:`redact_url` and every
    word that looks like a credential replaced by its :func:`shape`."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_IN_TEXT.sub(lambda m: _redact_url_in_text(m.group()), text)
    return _hide_words(text)


def _redact_url_in_text(url: str, all_query: bool = False) -> str:
    tail = ""
    while url and url[-1] in ".,;:)]}":  # punctuation after an address in a sentence
        url, tail = url[:-1], url[-1] + tail
    return redact_url(url, all_query) + tail


def redact_urls(value: Any, all_query: bool = True) -> Any:
    """A copy of a recipe, spec or result as it may be saved: every http(s) address
    redacted (all its query values hidden, unless ``all_query`` is False), every text that
    looks like a credential, or sits under a key named like one (``password``, ``api_key``;
    never a ``*_env`` key, which names a variable), shown by its shape."""
    if isinstance(value, str):
        if value.lower().startswith(("http://", "https://")):
            return redact_url(value, all_query=all_query)
        if looks_like_secret(value):
            return shape(value, "...")
        if "://" in value:  # an address inside a text (a judge given as "http_pairwise:url=...")
            return _URL_IN_TEXT.sub(lambda m: _redact_url_in_text(m.group(), all_query), value)
        return value
    if isinstance(value, Mapping):
        return {k: _saved_value(k, v, all_query) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_urls(v, all_query) for v in value]
    return value


def _saved_value(key: Any, value: Any, all_query: bool) -> Any:
    if isinstance(key, str) and isinstance(value, str) and value and SECRET_KEY.search(key) \
            and not key.lower().endswith("_env"):
        return shape(value, "...")
    return redact_urls(value, all_query)
