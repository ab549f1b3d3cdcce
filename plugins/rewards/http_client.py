"""The JSON-over-HTTP client shared by the HTTP reward source and the HTTP judge.

What a failure looks like, the same for both (every message names the endpoint with its
credentials removed, and never holds the token):

- connection refused or no route: retried; then "connection refused (is the server running?)";
- no answer within ``timeout``: retried; then "timed out after N s";
- 401 / 403: never retried; the message says so and names the token's environment variable;
- 429 and 5xx: retried with exponential backoff (``backoff * 2**k`` seconds), waiting at least
  what ``Retry-After`` asks, each wait capped at ``max_wait``; at most ``retries`` retries,
  and the last message says how many attempts were made;
- a redirect or another 4xx: not retried (asking again gets the same answer);
- a 200 whose body is not JSON, or not what the caller expects: retried (a proxy's error
  page during a restart looks like that), then named.

Each thread gets its own ``requests.Session``, so one client serves concurrent batches.
"""

from __future__ import annotations

import base64
import email.utils
import math
import os
import re
import threading
import time
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from trl_plus.errors import ComponentError, RecipeError
from trl_plus.redact import SECRET_PARAM, redact_url

_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: a valid header value


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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
        raise RecipeError(f"must start with http:// or https://, got {redact_url(url)!r}", "url")
    if not host:
        raise RecipeError(f"url has no host: {redact_url(url)!r}", "url")
    return url


def read_token(token_env: str | None) -> str | None:
    """The bearer token from the environment variable ``token_env`` (checked at start-up)."""
    if not token_env:
        return None
    if not isinstance(token_env, str):
        raise RecipeError(f"must be the name of an environment variable, got a {type(token_env).__name__}", "token_env")
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


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _causes(exc: BaseException):
    """``exc`` and what it wraps (urllib3 keeps the socket error in ``reason`` or ``args``)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen or len(seen) > 20:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args) if isinstance(x, BaseException)]


def _connect_failure(exc: BaseException) -> str:
    causes = list(_causes(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return "connection refused (is the server running, and on that port?)"
    if any(type(e).__name__ in ("NameResolutionError", "gaierror") for e in causes):
        return "the host name does not resolve"
    if any(type(e).__name__ in ("RemoteDisconnected", "ProtocolError", "ConnectionResetError") for e in causes):
        return "the server closed the connection without answering"
    if any(type(e).__name__ in ("SSLError", "SSLCertVerificationError") for e in causes):
        return "the TLS handshake failed (certificate?)"
    errors = [e for e in causes if isinstance(e, OSError) and e.strerror]
    return f"could not connect ({errors[-1].strerror})" if errors else "could not connect"


class BadAnswer(Exception):
    """Raised by a caller's ``parse`` when a 200 answer is not what it expects (retried)."""


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.wait = reason, wait


class HttpClient:
    """POSTs JSON to one endpoint, with the retry rules of this module.

    :param what: how messages name the endpoint's role (``"HTTP reward source"``).
    :param error: the error class raised (a ``ComponentError``); it gets ``fatal = True``
        when asking again cannot help (401/403, other 4xx, a redirect), so a caller that
        tolerates failed batches still stops on those.
    """

    def __init__(
        self,
        url: str,
        *,
        what: str = "HTTP endpoint",
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        token_env: str | None = None,
        error: type[ComponentError] = ComponentError,
    ):
        self.url = check_url(url)
        self.shown = redact_url(url)
        self.what = what
        self.timeout = float(checked_number(timeout, "timeout", 0, above=True))
        self.retries = checked_number(retries, "retries", 0, integer=True)
        self.backoff = float(checked_number(backoff, "backoff", 0))
        self.max_wait = float(checked_number(max_wait, "max_wait", 0))
        self.token_env = token_env
        self._token = read_token(token_env)  # checked now, not at the first batch
        # ``user:password@`` is sent as Basic auth, unless a bearer token is given: then it wins.
        self._post_url = _without_userinfo(url) if self._token else url
        self._error = error
        self._local = threading.local()
        self.attempts = 0  # requests sent, retries included (read by tests and reports)
        self._count = threading.Lock()

    def __repr__(self) -> str:  # never shows the token or URL credentials
        return f"HttpClient(url={self.shown!r})"

    @property
    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session

    def _scrub(self, text: str) -> str:
        """Text from the server (an error body may echo the request), with every secret removed."""
        text = text.replace(self.url, self.shown)
        parts = urlsplit(self.url)
        secrets = [self._token, parts.password, parts.username if parts.password else None]
        if parts.username or parts.password:  # as the Basic auth header carries them
            basic = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            secrets.append(base64.b64encode(basic.encode()).decode())
        secrets += [v for k, v in parse_qsl(parts.query) if SECRET_PARAM.search(k)]
        for secret in secrets:
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def fail(self, reason: str, fatal: bool = False) -> ComponentError:
        exc = self._error(f"{self.what} {self.shown}: {reason}")
        exc.fatal = fatal
        return exc

    def _delay(self, retry: int, asked: float | None) -> float:
        wait = self.backoff * 2 ** (retry - 1)
        if asked is not None:
            wait = max(wait, asked)
        return min(wait, self.max_wait)

    def post(self, payload, parse=None):
        """POST ``payload``; ``parse(body)`` (may raise ``BadAnswer``) of the first good answer."""
        reason, asked = "", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, asked))
            try:
                return self._attempt(payload, parse)
            except _Retry as retry:
                reason, asked = retry.reason, retry.wait
        n = self.retries + 1
        retries = "1 retry" if self.retries == 1 else f"{self.retries} retries"
        tries = "1 attempt (retries: 0)" if n == 1 else f"{n} attempts (1 try + {retries})"
        raise self.fail(f"{reason}; gave up after {tries}")

    def _attempt(self, payload, parse):
        import requests

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        with self._count:
            self.attempts += 1
        try:
            resp = self._session.post(
                self._post_url, json=payload, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.exceptions.ConnectTimeout:
            raise _Retry(f"connecting timed out after {self.timeout:g} s") from None
        except requests.exceptions.Timeout:
            raise _Retry(f"timed out after {self.timeout:g} s waiting for an answer") from None
        except requests.exceptions.ConnectionError as exc:
            raise _Retry(_connect_failure(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise self.fail(f"the request could not be sent ({type(exc).__name__})", fatal=True) from None
        status = resp.status_code
        label = f"{status} {resp.reason}".strip() if resp.reason else str(status)
        if status in (401, 403):
            hint = (
                f"check the token in the environment variable {self.token_env!r} (token_env)"
                if self.token_env
                else "the endpoint wants a token: set token_env to the name of an environment variable holding it"
            )
            raise self.fail(f"answered {label}; not retried: {hint}", fatal=True)
        if status == 429 or status >= 500:
            raise _Retry(f"answered {label}", _retry_after(resp.headers.get("Retry-After")))
        if 300 <= status < 400:
            location = resp.headers.get("Location")
            where = f" to {redact_url(location)}" if location else ""
            raise self.fail(
                f"answered {label} (a redirect{where}); not followed: put the final address in url", fatal=True
            )
        if not 200 <= status < 300:
            detail = self._scrub(resp.text[:200]).strip()
            raise self.fail(f"answered {label}; not retried" + (f": {detail!r}" if detail else ""), fatal=True)
        try:
            body = resp.json()
        except ValueError:
            kind = resp.headers.get("Content-Type", "no content type")
            raise _Retry(f"answered invalid JSON ({kind}, {len(resp.content)} bytes)") from None
        if parse is None:
            return body
        try:
            return parse(body)
        except BadAnswer as exc:
            raise _Retry(f"answered {exc}") from None


def shape_of(value) -> str:
    """What a JSON value is, for a message: its type and size, never its content."""
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:5]) + (", ..." if len(value) > 5 else "")
        return f"an object with keys {keys}" if value else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return "null" if value is None else f"a {type(value).__name__}"
