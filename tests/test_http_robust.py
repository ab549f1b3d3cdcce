"""The HTTP client behind the ``http`` reward source and the ``http_pairwise`` judge, against
a local server: every failure says what happened, retries only what can get better,
backs off, never shows credentials, and keeps scores in order under concurrent load."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from trl_plus.errors import ComponentError, RecipeError, RewardSourceError

FAST = {"backoff": 0.01, "timeout": 2.0}


def source(plugin_manager, url, **kw):
    return plugin_manager.components().reward_source({"name": "http", "url": url, **{**FAST, **kw}})


def judge(plugin_manager, url, **kw):
    return plugin_manager.components().judge({"name": "http_pairwise", "url": url, **{**FAST, **kw}})


def lengths(body):
    return 200, {"scores": [float(len(c)) for c in body["completions"]]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_says_connection_refused(plugin_manager):
    url = f"http://127.0.0.1:{free_port()}/score"
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, url, retries=1)(["p"], ["x"])
    message = str(info.value)
    assert "connection refused" in message and url in message
    assert "gave up after 2 attempts (1 try + 1 retry)" in message


def test_slow_server_times_out_after_n_seconds(plugin_manager, json_endpoint):
    srv = json_endpoint(lambda body: (time.sleep(1.0), lengths(body))[1])
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, srv.url, timeout=0.2, retries=0)(["p"], ["x"])
    message = str(info.value)
    assert "timed out after 0.2 s" in message and "ConnectionError" not in message
    assert "gave up after 1 attempt" in message


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried_and_name_the_token_variable(plugin_manager, json_endpoint, monkeypatch, status):
    monkeypatch.setenv("SCORER_TOKEN", "tok-123456")
    srv = json_endpoint(lambda body: (status, {"error": "bad token"}))
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, srv.url, retries=3, token_env="SCORER_TOKEN")(["p"], ["x"])
    message = str(info.value)
    assert len(srv.requests) == 1
    assert f"answered {status}" in message and "not retried" in message and "retries" not in message
    assert "'SCORER_TOKEN' (token_env)" in message and "tok-123456" not in message


def test_auth_error_without_token_says_to_set_token_env(plugin_manager, json_endpoint):
    srv = json_endpoint(lambda body: (401, b""))
    with pytest.raises(RewardSourceError, match="not retried: the endpoint wants a token: set token_env"):
        source(plugin_manager, srv.url)(["p"], ["x"])


def _gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def test_5xx_is_retried_with_exponential_backoff_then_counts_attempts(plugin_manager, json_endpoint):
    times = []
    srv = json_endpoint(lambda body: (times.append(time.monotonic()), (503, b"busy"))[1])
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, srv.url, retries=3, backoff=0.1)(["p"], ["x"])
    message = str(info.value)
    assert "answered 503 Service Unavailable; gave up after 4 attempts (1 try + 3 retries)" in message
    gaps = _gaps(times)
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (0.1, 0.2, 0.4)):
        assert expected * 0.9 <= gap < expected + 0.5, gaps


def test_429_honours_retry_after_and_max_wait_bounds_it(plugin_manager, json_endpoint):
    times = []

    def busy_once(body):
        times.append(time.monotonic())
        return (429, b"", {"Retry-After": "1"}) if len(times) == 1 else lengths(body)

    srv = json_endpoint(busy_once)
    assert source(plugin_manager, srv.url, retries=2)(["p"], ["abc"]) == [3.0]
    assert len(srv.requests) == 2 and _gaps(times)[0] >= 0.95  # backoff alone would be 0.01 s

    times.clear()
    capped = json_endpoint(lambda body: (times.append(time.monotonic()), (429, b"", {"Retry-After": "3600"}))[1])
    with pytest.raises(RewardSourceError, match="answered 429 Too Many Requests; gave up after 2 attempts"):
        source(plugin_manager, capped.url, retries=1, max_wait=0.2)(["p"], ["x"])
    assert 0.15 <= _gaps(times)[0] < 1.0


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"<html>oops</html>", "answered invalid JSON (application/json, 17 bytes)"),
        ({"scores": [1.0]}, "answered 1 scores for 2 completions"),
        ({"result": [1.0, 2.0]}, "answered an object with keys 'result', not a 'scores' list"),
    ],
)
def test_malformed_answers_are_retried_then_named(plugin_manager, json_endpoint, payload, expected):
    srv = json_endpoint(lambda body: (200, payload))
    mix = plugin_manager.components().reward_mix([{"name": "http", "url": srv.url, "retries": 1, **FAST}])
    with pytest.raises(RewardSourceError) as info:
        mix(["p", "q"], ["x", "y"])
    message = str(info.value)
    assert message.startswith("reward source rewards[0]: HTTP reward source " + srv.url)
    assert expected in message and "gave up after 2 attempts" in message
    assert len(srv.requests) == 2


def test_other_client_errors_and_redirects_are_not_retried(plugin_manager, json_endpoint):
    srv = json_endpoint(lambda body: (404, {"detail": "no such route"}))
    with pytest.raises(RewardSourceError, match=r"answered 404 Not Found; not retried: .*no such route"):
        source(plugin_manager, srv.url, retries=3)(["p"], ["x"])
    assert len(srv.requests) == 1
    moved = json_endpoint(lambda body: (307, b"", {"Location": "http://127.0.0.1:1/new?api_key=zzz999"}))
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, moved.url, retries=3)(["p"], ["x"])
    assert "not followed" in str(info.value) and "zzz999" not in str(info.value)
    assert len(moved.requests) == 1


def test_url_credentials_and_token_params_never_shown(plugin_manager, json_endpoint, monkeypatch):
    monkeypatch.setenv("SCORER_TOKEN", "tok-abcdef")
    # The server's error page echoes the request: the client scrubs it before showing it.
    echo = json_endpoint(
        lambda body: (400, f"bad request to {echo.last_path} with {echo.requests[-1][0]['Authorization']}".encode())
    )
    port = echo.url.split(":")[2].rstrip("/")
    url = f"http://alice:hunter2pw@127.0.0.1:{port}/score?api_key=k3y-value&access_token=t0ken-value&model=m1"
    built = source(plugin_manager, url, token_env="SCORER_TOKEN")
    with pytest.raises(RewardSourceError) as info:
        built(["p"], ["x"])
    message = str(info.value) + repr(built)
    for secret in ("alice", "hunter2pw", "k3y-value", "t0ken-value", "tok-abcdef"):
        assert secret not in message, secret
    assert f"http://***@127.0.0.1:{port}/score?api_key=***&access_token=***&model=m1" in message
    assert echo.requests[0][0]["Authorization"] == "Bearer tok-abcdef"  # sent, just never shown; it wins
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, url)(["p"], ["x"])  # no token: the URL's credentials go as Basic auth
    assert echo.requests[1][0]["Authorization"].startswith("Basic ")
    assert "hunter2pw" not in str(info.value) and echo.requests[1][0]["Authorization"][6:] not in str(info.value)

    down = f"http://bob:s3cretpw@127.0.0.1:{free_port()}/?token=zzz-tok"
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, down, retries=0)(["p"], ["x"])
    assert "connection refused" in str(info.value)
    assert "s3cretpw" not in str(info.value) and "zzz-tok" not in str(info.value) and "bob" not in str(info.value)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ftp://user:pw123@example.com/score", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("127.0.0.1:8000/score", "must start with http:// or https://"),
        ("http:///score", "url has no host"),
        (8000, "got (a int|8000)"),  # the factory's check, or the keyword type check before it
    ],
)
@pytest.mark.parametrize("kind", ["http", "http_pairwise"])
def test_non_http_urls_are_refused_when_built(plugin_manager, url, expected, kind):
    build = source if kind == "http" else judge
    with pytest.raises(RecipeError, match=expected) as info:
        build(plugin_manager, url)
    assert "pw123" not in str(info.value)


@pytest.mark.parametrize("key, value", [("timeout", 0), ("retries", -1), ("retries", 1.5), ("backoff", -1.0),
                                        ("batch_size", 0)])
def test_bad_client_options_are_recipe_errors(plugin_manager, key, value):
    with pytest.raises(RecipeError, match=key):
        source(plugin_manager, "http://127.0.0.1:9/", **{key: value})


def test_token_with_a_newline_is_refused_without_echoing_it(plugin_manager, monkeypatch):
    monkeypatch.setenv("SCORER_TOKEN", "abc def-secret")
    with pytest.raises(RecipeError, match="'SCORER_TOKEN'") as info:
        source(plugin_manager, "http://127.0.0.1:9/", token_env="SCORER_TOKEN")
    assert "def-secret" not in str(info.value)


# ---------------------------------------------------------------------------------------
# the judge: transient failures are counted, configuration errors stop the evaluation
# ---------------------------------------------------------------------------------------


def test_judge_auth_error_stops_and_is_not_retried(plugin_manager, json_endpoint, monkeypatch):
    monkeypatch.setenv("JUDGE_TOKEN", "jt-000111")
    srv = json_endpoint(lambda body: (401, b""))
    j = judge(plugin_manager, srv.url, token_env="JUDGE_TOKEN", retries=3)
    with pytest.raises(ComponentError, match=r"HTTP judge .*answered 401 Unauthorized; not retried: .*'JUDGE_TOKEN'"):
        j(["p"], ["a"], ["b"])
    assert len(srv.requests) == 1


def test_judge_failures_are_counted_in_the_results(plugin_manager, json_endpoint, caplog):
    from trl_plus.eval.judging import judge_failures, run_judge

    down = judge(plugin_manager, f"http://127.0.0.1:{free_port()}/", retries=1, swap=False, batch_size=1)
    probs = run_judge(down, "http_pairwise", ["p1", "p2"], ["a", "b"], ["c", "d"], progress=False, batch_size=1)
    assert probs == [None, None]
    with caplog.at_level("WARNING"):
        summary = judge_failures(down, "http_pairwise", probs)
    assert summary["judge_failures"] == 2
    assert all("connection refused" in r and "gave up after 2 attempts" in r for r in summary["failure_reasons"])
    assert "failed on 2 of 2 pairs" in caplog.text


# ---------------------------------------------------------------------------------------
# load: 64 concurrent batches through one source, some 503s injected
# ---------------------------------------------------------------------------------------


def test_64_concurrent_batches_keep_every_score_in_order(plugin_manager, json_endpoint):
    lock = threading.Lock()
    seen: dict[str, int] = {}  # requests per sub-batch, by its first completion

    def respond(body):
        key = body["completions"][0]
        batch = int(key.split(":")[0])
        with lock:
            seen[key] = seen.get(key, 0) + 1
            first = seen[key] == 1
        if batch % 5 == 0 and key.endswith(":0") and first:  # the first request of every fifth batch fails once
            return 503, b"", {"Retry-After": "0"}
        time.sleep(0.002 * (batch % 7))  # answers come back out of order
        return 200, {"scores": [float(c.split(":")[0]) * 1000 + float(c.split(":")[1]) for c in body["completions"]]}

    srv = json_endpoint(respond)
    shared = source(plugin_manager, srv.url, retries=2, timeout=20.0, batch_size=4)
    results: dict[int, list] = {}
    errors = []

    def run(batch):
        completions = [f"{batch}:{i}" for i in range(10)]  # 3 requests of 4, 4 and 2
        try:
            results[batch] = shared(["p"] * 10, completions)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    for batch in range(64):
        assert results[batch] == [batch * 1000.0 + i for i in range(10)], batch
    retried = {f"{b}:0" for b in range(64) if b % 5 == 0}
    expected = {f"{b}:{start}": 2 if f"{b}:{start}" in retried else 1 for b in range(64) for start in (0, 4, 8)}
    assert seen == expected  # each sub-batch once, the failed ones exactly twice
    assert len(srv.requests) == shared.client.attempts == 64 * 3 + len(retried)


# ---------------------------------------------------------------------------------------
# timeout bounds the whole request; answers are capped in size. A raw server on 127.0.0.1
# that answers as a test says, byte by byte if need be; every loop of it is bounded.
# ---------------------------------------------------------------------------------------


class RawServer:
    """``behave(conn, stop)`` writes the answer to each request (read whole first)."""

    def __init__(self, behave):
        self.stop = threading.Event()
        self.sent = 0  # body bytes written, all requests together
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/"
        self._behave = behave
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.requests += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        with conn:
            conn.settimeout(5)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536) or b"\r\n\r\n"
                head, _, body = data.partition(b"\r\n\r\n")
                length = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
                while len(body) < int(length[0] if length else 0):
                    body += conn.recv(65536)
                self._behave(self, conn)
            except OSError:  # the client hung up: that is what these tests want
                pass

    def send(self, conn, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self):
        self.stop.set()
        self._sock.close()


@pytest.fixture
def raw_server():
    servers = []

    def start(behave) -> RawServer:
        servers.append(RawServer(behave))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


SCORES = b'{"scores": [1.0]}'


def head(length: int | None = len(SCORES), extra: bytes = b"") -> bytes:
    size = b"Content-Length: %d\r\n" % length if length is not None else b"Connection: close\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + size + extra + b"\r\n"


def trickle(srv, conn, data: bytes, every: float) -> None:
    for byte in data:
        if srv.stop.wait(every):
            return
        srv.send(conn, bytes([byte]))


def _timed_failure(plugin_manager, url, timeout=1.0, **kw):
    built = source(plugin_manager, url, timeout=timeout, **{"retries": 0, **kw})
    start = time.monotonic()
    with pytest.raises(RewardSourceError) as info:
        built(["p"], ["x"])
    return str(info.value), time.monotonic() - start


def test_a_body_that_drips_is_cut_off_at_timeout(plugin_manager, raw_server):
    srv = raw_server(lambda srv, conn: (conn.sendall(head()), trickle(srv, conn, SCORES, 0.2)))
    message, took = _timed_failure(plugin_manager, srv.url)
    assert took < 2.0  # 1 byte per 0.2 s would take 3.4 s: timeout (1 s) bounds the whole request
    assert "answered 200 OK, but its body came too slowly: " in message and f"of {len(SCORES)} bytes in" in message
    assert "the timeout of 1 s bounds the whole request, body included" in message
    assert "could not connect" not in message


def test_a_server_that_stalls_after_its_headers_says_so(plugin_manager, raw_server):
    srv = raw_server(lambda srv, conn: (conn.sendall(head()), srv.stop.wait(10)))
    message, took = _timed_failure(plugin_manager, srv.url, timeout=0.5)
    assert took < 1.5
    assert "answered 200 OK, then stalled after its headers: no byte of the body came" in message
    assert "could not connect" not in message


def test_a_body_that_stalls_midway_says_how_much_came(plugin_manager, raw_server):
    srv = raw_server(lambda srv, conn: (conn.sendall(head() + SCORES[:5]), srv.stop.wait(10)))
    message, took = _timed_failure(plugin_manager, srv.url, timeout=0.5)
    assert took < 1.5
    assert f"then its body stalled: 5 of {len(SCORES)} bytes came, then nothing for" in message


def test_trickled_headers_are_cut_off_too(plugin_manager, raw_server):
    srv = raw_server(lambda srv, conn: trickle(srv, conn, head(extra=b"X-Pad: " + b"a" * 100 + b"\r\n"), 0.05))
    message, took = _timed_failure(plugin_manager, srv.url, timeout=0.5)
    assert took < 1.5
    assert "timed out after 0.5 s waiting for an answer (connected; its status line and headers were still incomplete)" \
        in message


def big_answer(total: int, declared: bool):
    def behave(srv, conn):
        srv.send(conn, head(total if declared else None))
        piece = b"[" + b"1," * 32767 + b"1]"
        while srv.sent < total and not srv.stop.is_set():
            srv.send(conn, piece)
    return behave


@pytest.mark.parametrize("declared", [True, False])
def test_an_answer_over_max_response_bytes_is_refused_unread(plugin_manager, raw_server, declared):
    total = 400 * 2**20
    srv = raw_server(big_answer(total, declared))
    message, took = _timed_failure(plugin_manager, srv.url, timeout=10, retries=3)
    assert srv.requests == 1  # never retried: the same answer would come again
    assert "over max_response_bytes = 10485760 (10 MiB)" in message and "not retried: raise max_response_bytes" in message
    if declared:
        assert "a body of 400 MiB (its Content-Length)" in message and "not read" in message
    else:
        assert "stopped reading after 10." in message
    assert srv.sent < 100 * 2**20  # the client hung up long before the 400 MiB


def test_max_response_bytes_is_the_recipes_and_counts_the_body_decompressed(plugin_manager, raw_server):
    import gzip

    answer = b'{"scores": [2.0], "pad": "' + b" " * 5000 + b'"}'
    fine = raw_server(lambda srv, conn: srv.send(conn, head(len(answer)) + answer))
    assert source(plugin_manager, fine.url, max_response_bytes=len(answer))(["p"], ["x"]) == [2.0]
    message, _ = _timed_failure(plugin_manager, fine.url, max_response_bytes=len(answer) - 1)
    assert f"over max_response_bytes = {len(answer) - 1} (4.9 KiB)" in message

    bomb = gzip.compress(b'{"scores": [1.0], "pad": "' + b" " * (50 * 2**20) + b'"}')  # 50 KiB that inflate to 50 MiB
    zipped = raw_server(lambda srv, conn: srv.send(conn, head(len(bomb), b"Content-Encoding: gzip\r\n") + bomb))
    message, _ = _timed_failure(plugin_manager, zipped.url)
    assert len(bomb) < 2**20 and "with a body over max_response_bytes = 10485760 (10 MiB)" in message

    with pytest.raises(RecipeError, match="max_response_bytes"):
        source(plugin_manager, fine.url, max_response_bytes=0)


def test_the_judge_has_the_same_bounds(plugin_manager, raw_server):
    srv = raw_server(big_answer(400 * 2**20, True))
    j = judge(plugin_manager, srv.url, retries=2, swap=False)
    with pytest.raises(ComponentError, match=r"HTTP judge .*over max_response_bytes = 10485760 \(10 MiB\)"):
        j(["p"], ["a"], ["b"])  # never retried, and it stops the evaluation (every batch would fail the same way)
    assert srv.requests == 1


def test_an_answer_nested_too_deeply_is_named_and_retried(plugin_manager, json_endpoint):
    srv = json_endpoint(lambda body: (200, b"[" * 200_000 + b"]" * 200_000))
    with pytest.raises(RewardSourceError) as info:
        source(plugin_manager, srv.url, retries=1)(["p"], ["x"])
    message = str(info.value)
    assert "answered JSON nested too deeply (application/json, 400000 bytes); gave up after 2 attempts" in message
    assert "RecursionError" not in message
