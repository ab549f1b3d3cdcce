"""The connection under the HTTP client: a ``requests.Session`` per thread whose connections a
watchdog can shut at the request's deadline, and the body read as it arrives.

A per-read timeout never fires on a server that trickles its answer a byte at a time; the
watchdog bounds the whole request instead: at the deadline it shuts the connection's
socket, so a read blocked on it returns at once.
"""

from __future__ import annotations

import socket
import threading
import time

# The request in flight in this thread, so that the connection pool can tell its watchdog
# which connection it is using (one request at a time per thread: the session is per thread).
in_flight = threading.local()


class Watchdog:
    """Ends one request when its ``timeout`` is up, whatever it is waiting for: at the
    deadline the connection's socket is shut down, so a read blocked on it returns at once
    (a server that trickles its headers or body one byte at a time never trips a per-read
    timeout). ``fired`` tells the request why its connection broke."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self.conn = None  # the pool's connection, set by _TrackingPool
        self.fired = False
        self._lock = threading.Lock()
        self._over = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._over:
                return
            self.fired = True
            sock = getattr(self.conn, "sock", None)
        if sock is None:
            return
        try:  # the plain socket's shutdown: a TLS socket's would also drop its TLS state under the reader
            socket.socket.shutdown(sock, socket.SHUT_RDWR) if isinstance(sock, socket.socket) else sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError, ValueError):
            pass

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self.deadline

    def stop(self) -> None:
        with self._lock:
            self._over = True
        self._timer.cancel()


_POOLS: dict | None = None


def _tracking_pools() -> dict:
    """urllib3 connection pools that hand the connection of each request to its watchdog."""
    global _POOLS
    if _POOLS is None:
        from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

        class Tracking:
            def _get_conn(self, *args, **kwargs):
                conn = super()._get_conn(*args, **kwargs)
                watch = getattr(in_flight, "watch", None)
                if watch is not None:
                    watch.conn = conn
                return conn

        _POOLS = {"http": type("TrackingHTTPConnectionPool", (Tracking, HTTPConnectionPool), {}),
                  "https": type("TrackingHTTPSConnectionPool", (Tracking, HTTPSConnectionPool), {})}
    return _POOLS


def new_session():
    """A ``requests.Session`` whose connections the watchdogs can shut (through an HTTP proxy
    too; behind a SOCKS proxy only the per-read timeout and the deadline between reads apply)."""
    import requests
    from requests.adapters import HTTPAdapter

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = _tracking_pools()

        def proxy_manager_for(self, proxy, **kwargs):
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = _tracking_pools()
            return manager

    session = requests.Session()
    adapter = Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def body_chunks(resp, size: int = 64 * 1024):
    """The body as it arrives, decompressed, in pieces of at most ``size``: each read returns
    what the socket holds (``read1``), so a trickle is seen as one; older urllib3 without
    ``read1``: ``iter_content`` (which waits for whole pieces: the watchdog still ends it)."""
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:
        yield from resp.iter_content(chunk_size=size)
        return
    while True:
        chunk = read1(size, decode_content=True)
        if not chunk:
            return
        yield chunk
