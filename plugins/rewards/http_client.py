"""The JSON-over-HTTP client shared by the HTTP reward source and the HTTP judge.

What a failure looks like, the same for both (every message names the endpoint with its
credentials removed, and never holds the token):

- connection refused or no route: retried; then "connection refused (is the server running?)";
- ``timeout`` bounds each whole request: connecting, the status line and headers, and the
  body. Past it the connection is shut and the attempt retried; the message says where it
  was: "connecting timed out", "timed out ... waiting for an answer" (no headers yet),
  "stalled after its headers" (no body), "its body stalled" (part of it came, then
  nothing), "its body came too slowly" (a trickle); never "could not connect";
- an answer over ``max_response_bytes`` (default 10 MiB) is not read into memory: never
  retried, the message names the limit (a ``Content-Length`` over it is refused unread);
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
import json
import math
import threading
import time
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from trl_plus.errors import ComponentError
from trl_plus.plugins.rewards.http_options import DEFAULT_MAX_RESPONSE_BYTES, check_url, checked_number, read_token
from trl_plus.plugins.rewards.http_transport import Watchdog, body_chunks, in_flight, new_session
from trl_plus.redact import SECRET_PARAM, redact_url


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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


def _size(n: int) -> str:
    """``10 MiB``, ``400.0 MB``-style sizes for messages (binary units, bytes below 1 KiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


class HttpClient:
    """POSTs JSON to one endpoint, with the retry rules of this module.

    :param what: how messages name the endpoint's role (``"HTTP reward source"``).
    :param timeout: seconds one whole request may take: connecting, the answer's headers
        and its body (a server that trickles its answer is cut off too).
    :param max_response_bytes: the largest answer read (its body, decompressed); a larger
        one is refused, unread where its ``Content-Length`` says so, never retried.
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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        error: type[ComponentError] = ComponentError,
    ):
        self.url = check_url(url)
        self.shown = redact_url(url)
        self.what = what
        self.timeout = float(checked_number(timeout, "timeout", 0, above=True))
        self.retries = checked_number(retries, "retries", 0, integer=True)
        self.backoff = float(checked_number(backoff, "backoff", 0))
        self.max_wait = float(checked_number(max_wait, "max_wait", 0))
        self.max_response_bytes = checked_number(max_response_bytes, "max_response_bytes", 1, integer=True)
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
            session = self._local.session = new_session()
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
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        with self._count:
            self.attempts += 1
        watch = in_flight.watch = Watchdog(self.timeout)
        resp = None
        try:
            resp = self._send(payload, headers, watch)
            return self._answer(resp, parse, watch)
        finally:
            watch.stop()
            in_flight.watch = None
            if resp is not None:
                resp.close()  # a body not read to its end closes the connection: it is not reused

    def _send(self, payload, headers, watch):
        """POST and wait for the status line and headers (the body is read by ``_body``)."""
        import requests

        try:
            return self._session.post(
                self._post_url, json=payload, headers=headers, timeout=(self.timeout, self.timeout),
                allow_redirects=False, stream=True,
            )
        except requests.exceptions.ConnectTimeout:
            raise _Retry(f"connecting timed out after {self.timeout:g} s") from None
        except requests.exceptions.Timeout:
            raise _Retry(f"timed out after {self.timeout:g} s waiting for an answer (connected; no status line "
                         "and headers came)") from None
        except requests.exceptions.ConnectionError as exc:
            if watch.fired:  # the watchdog shut it: the server was trickling its headers
                raise _Retry(f"timed out after {self.timeout:g} s waiting for an answer (connected; its status line "
                             "and headers were still incomplete)") from None
            raise _Retry(_connect_failure(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise self.fail(f"the request could not be sent ({type(exc).__name__})", fatal=True) from None

    def _answer(self, resp, parse, watch):
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
            text = self._body(resp, label, watch, limit=400, whole=False).decode("utf-8", "replace")
            detail = self._scrub(text[:200]).strip()
            raise self.fail(f"answered {label}; not retried" + (f": {detail!r}" if detail else ""), fatal=True)
        raw = self._body(resp, label, watch)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            kind = resp.headers.get("Content-Type", "no content type")
            why = "JSON nested too deeply" if isinstance(exc, RecursionError) else "invalid JSON"
            raise _Retry(f"answered {why} ({kind}, {len(raw)} bytes)") from None
        if parse is None:
            return body
        try:
            return parse(body)
        except BadAnswer as exc:
            raise _Retry(f"answered {exc}") from None

    def _body(self, resp, label: str, watch: Watchdog, limit: int | None = None, whole: bool = True) -> bytes:
        """The answer's body, read within the request's deadline and up to ``limit`` bytes
        (``max_response_bytes``): past the limit, an error (``whole``) or the first
        ``limit`` bytes (an error page, shown shortened)."""
        import http.client

        import requests
        import urllib3

        limit = self.max_response_bytes if limit is None else limit
        cap = f"max_response_bytes = {self.max_response_bytes} ({_size(self.max_response_bytes)})"
        declared = resp.headers.get("Content-Length", "")
        declared = int(declared) if declared.strip().isdigit() else None
        if whole and declared is not None and declared > limit:
            raise self.fail(
                f"answered {label} with a body of {_size(declared)} (its Content-Length), over {cap}; not read, "
                "not retried: raise max_response_bytes if answers this big are right", fatal=True,
            )
        chunks, got = [], 0
        headers_at = last = time.monotonic()
        broke, cut = None, False
        try:
            for chunk in body_chunks(resp):
                if chunk:
                    chunks.append(chunk)
                    got += len(chunk)
                    last = time.monotonic()
                if got > limit:
                    if not whole:
                        return b"".join(chunks)[:limit]
                    raise self.fail(
                        f"answered {label} with a body over {cap} (stopped reading after {_size(got)}); not retried: "
                        "raise max_response_bytes if answers this big are right", fatal=True,
                    )
                if watch.expired():  # without a watchdog (a SOCKS proxy): the deadline, checked between reads
                    cut = True
                    break
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError, ValueError) as exc:
            broke = exc
        complete = broke is None and declared is not None and got >= declared
        if cut or (watch.fired and not complete):
            now = time.monotonic()
            of = f" of {declared}" if declared is not None else ""
            bound = f"the timeout of {self.timeout:g} s bounds the whole request, body included"
            if got == 0:
                raise _Retry(f"answered {label}, then stalled after its headers: no byte of the body came ({bound})")
            if now - last >= 0.5 * (now - headers_at):
                raise _Retry(f"answered {label}, then its body stalled: {got}{of} bytes came, then nothing for "
                             f"{now - last:.1f} s ({bound})")
            raise _Retry(f"answered {label}, but its body came too slowly: {got}{of} bytes in {now - headers_at:.1f} s "
                         f"({bound})")
        if broke is not None:
            raise _Retry(f"answered {label}, then the connection broke while it sent the body ({got} bytes came: "
                         f"{type(broke).__name__})")
        return b"".join(chunks)


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
