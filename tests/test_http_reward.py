"""The built-in HTTP reward source against a server on 127.0.0.1: batching, auth, retries."""

import http.server
import json
import threading

import pytest

from trl_plus.errors import RecipeError, RewardSourceError

TOKEN = "s3cret-token-value"


class ScoringServer:
    """Scores completions by length; fails the first ``failures`` requests with 503."""

    def __init__(self, failures: int = 0, status: int = 503):
        self.requests, self.failures, self.status = [], failures, status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.headers.get("Authorization"), body))
                if len(outer.requests) <= outer.failures:
                    self.send_response(outer.status)
                    self.end_headers()
                    return
                payload = json.dumps({"scores": [float(len(c)) for c in body["completions"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/score"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(**kw):
        servers.append(ScoringServer(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def build(plugin_manager, **kw):
    return plugin_manager.components().reward_source({"name": "http", **kw})


def test_batches_and_sends_the_bearer_token(plugin_manager, server, monkeypatch):
    monkeypatch.setenv("MY_RM_TOKEN", TOKEN)
    s = server()
    source = build(plugin_manager, url=s.url, token_env="MY_RM_TOKEN", batch_size=2)
    assert source(["p"] * 3, ["a", "bbb", "cc"]) == [1.0, 3.0, 2.0]
    assert [len(body["completions"]) for _, body in s.requests] == [2, 1]
    assert all(auth == f"Bearer {TOKEN}" for auth, _ in s.requests)
    assert TOKEN not in repr(source)


def test_retries_then_succeeds(plugin_manager, server):
    s = server(failures=2)
    source = build(plugin_manager, url=s.url, retries=3, backoff=0.01)
    assert source(["p"], ["abcd"]) == [4.0]
    assert len(s.requests) == 3


def test_gives_up_with_an_error_naming_the_source_and_not_the_token(plugin_manager, server, monkeypatch):
    monkeypatch.setenv("MY_RM_TOKEN", TOKEN)
    s = server(failures=100, status=500)
    mix = plugin_manager.components().reward_mix(
        [{"name": "http", "url": s.url, "retries": 2, "backoff": 0.01, "token_env": "MY_RM_TOKEN", "alias": "remote"}]
    )
    with pytest.raises(RewardSourceError) as exc:
        mix(["p"], ["x"])
    assert s.url in str(exc.value) and "500" in str(exc.value) and TOKEN not in str(exc.value)
    assert len(s.requests) == 3  # the first try and two retries


def test_missing_token_variable_fails_at_start_up(plugin_manager, monkeypatch):
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    with pytest.raises(RecipeError, match="'NOT_SET_TOKEN'"):
        build(plugin_manager, url="http://127.0.0.1:9/score", token_env="NOT_SET_TOKEN")
    with pytest.raises(RecipeError, match="http:// or https://"):
        build(plugin_manager, url="ftp://example/score")
