"""Serving beyond loopback: who may bind where, and a brake on token guessing.

A service bound to another address than loopback carries tokens and scenes' pixels over the
network, so it needs TLS (``--tls-cert``/``--tls-key``) or an explicit ``--insecure-http`` (a
trusted network, or TLS terminated by a proxy in front). Failed authentications are counted per
client address; past ``limit`` in ``period`` seconds that client gets 429 until they age out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Optional

from fastapi import HTTPException

from ..errors import IncompatibleOptions

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_binding(host: str, allow_remote: bool, tls_cert: Optional[Path], tls_key: Optional[Path],
                  insecure_http: bool) -> None:
    """Raise IncompatibleOptions unless binding ``host`` with these flags is safe or acknowledged."""
    if (tls_cert is None) != (tls_key is None):
        raise IncompatibleOptions("--tls-cert and --tls-key go together: give both (PEM files)")
    for path in (tls_cert, tls_key):
        if path is not None and not Path(path).is_file():
            raise IncompatibleOptions(f"TLS file {str(path)!r} does not exist: give the PEM certificate and key")
    if host in LOOPBACK:
        return
    if not allow_remote:
        raise IncompatibleOptions(f"refusing to bind {host}: the service is local by default; pass "
                                  "--allow-remote to expose it (every request still needs the token)")
    if tls_cert is None and not insecure_http:
        raise IncompatibleOptions(f"--allow-remote on {host} sends the token and the scene's pixels over the "
                                  "network: give --tls-cert and --tls-key, or pass --insecure-http on a "
                                  "trusted network or behind a TLS proxy")


class FailedAuthLimit:
    """Per-client count of failed authentications in a sliding window of ``period`` seconds."""

    def __init__(self, limit: int = 10, period: float = 60.0):
        self.limit, self.period = limit, period
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque:
        times = self._failures.get(client, deque())
        while times and times[0] < now - self.period:
            times.popleft()
        return times

    def check(self, client: str) -> None:
        """429 if ``client`` failed too often lately (even with a right token now: no oracle)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if len(times) >= self.limit:
                wait = int(times[0] + self.period - now) + 1
                raise HTTPException(429, f"too many failed authentications from {client}: wait {wait} s and "
                                         "check the token (rs-geo-edit serve --print-token)",
                                    headers={"Retry-After": str(wait)})

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 10_000:  # bound the memory a scan of many addresses can take
                for other in [c for c, t in self._failures.items() if not self._recent(c, now)]:
                    del self._failures[other]
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times
