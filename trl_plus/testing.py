"""Pytest fixtures for plugin authors (and for trl-plus itself).

Installed as a pytest plugin (entry point ``pytest11``), so these fixtures are available
in any test suite once trl-plus is installed:

- ``plugin_manager``: a fresh :class:`trl_plus.Hooks` with entry-point autoload off;
- ``register_plugin``: ``register_plugin(obj, name=None)`` registers a plugin on that
  manager for one test and unregisters it afterwards;
- ``tiny_tokenizer``, ``tiny_model_path``, ``tiny_causal_lm``, ``tiny_reward_model_path``,
  ``tiny_reward_model``: models and a tokenizer built from scratch offline in seconds
  (saved under a temporary folder, so they also load by path);
- ``tiny_preference_dataset``: a small learnable preference dataset;
- ``json_endpoint``: ``json_endpoint(respond)`` serves JSON on 127.0.0.1 (a free port)
  for testing HTTP reward sources and judges; see :class:`JsonEndpoint`.

Nothing heavy is imported until a fixture is used. Set ``HF_HUB_OFFLINE=1`` in your
``conftest.py`` before anything imports ``datasets`` or ``transformers``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import pytest


@pytest.fixture
def plugin_manager():
    from .manager import Hooks, get_plugin_manager

    return Hooks(get_plugin_manager(autoload=False, blocked=[]))


@pytest.fixture
def register_plugin(plugin_manager):
    registered = []

    def register(plugin, name: str | None = None):
        name = plugin_manager.pm.register(plugin, name=name)
        registered.append(plugin)
        plugin_manager.pm.check_pending()
        return name

    yield register
    for plugin in registered:
        if plugin_manager.pm.is_registered(plugin):
            plugin_manager.pm.unregister(plugin)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from .tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-causal-lm"), "causal-lm", seed=0)


@pytest.fixture(scope="session")
def tiny_reward_model_path(tmp_path_factory):
    from .tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-reward-model"), "reward-model", seed=1)


@pytest.fixture
def tiny_tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture
def tiny_causal_lm(tiny_model_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_path)


@pytest.fixture
def tiny_reward_model(tiny_reward_model_path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_path, num_labels=1)


def preference_rows() -> list[dict]:
    """The rows of the shipped toy preference set (positive chosen, negative rejected)."""
    text = resources.files("trl_plus.recipes").joinpath("data/tiny_prefs.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def tiny_preference_dataset():
    from datasets import Dataset

    return Dataset.from_list(preference_rows())


class JsonEndpoint:
    """An HTTP endpoint on 127.0.0.1 (a free port) that answers as a test says.

    ``respond(body) -> (status, payload)`` or ``(status, payload, headers)`` is called for
    every POST with the decoded JSON body (the raw text when it is not JSON); ``payload`` is
    sent as JSON, or as it is when it is ``bytes``; ``headers`` (a dict) are added to the
    answer (``Retry-After``). A ``respond`` that sleeps makes a slow endpoint (timeouts).
    Every request is kept in ``requests`` as ``(headers, body)``; ``path`` of the last
    request (with its query) in ``last_path``. Up to 128 connections wait to be accepted,
    so a load test's concurrent clients are not refused.
    """

    def __init__(self, respond):
        self.requests: list[tuple[dict, object]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                endpoint.requests.append((dict(self.headers), body))
                endpoint.last_path = self.path
                status, payload, *extra = respond(body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in (extra[0] if extra else {}).items():
                        self.send_header(key, str(value))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128
            daemon_threads = True

        self.last_path = ""
        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def json_endpoint():
    endpoints: list[JsonEndpoint] = []

    def start(respond) -> JsonEndpoint:
        endpoints.append(JsonEndpoint(respond))
        return endpoints[-1]

    yield start
    for endpoint in endpoints:
        endpoint.close()
