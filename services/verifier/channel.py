"""A JSON message channel over a pair of pipe file descriptors (used by pool and worker)."""

from __future__ import annotations

import json
from multiprocessing.connection import Connection
from typing import Any


class Channel:
    """Send and receive JSON values over two one-way pipes; never pickle."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = Connection(read_fd, writable=False)
        self._writer = Connection(write_fd, readable=False)

    def send(self, value: Any) -> None:
        self._writer.send_bytes(json.dumps(value).encode())

    def recv(self) -> Any:
        return json.loads(self._reader.recv_bytes())

    def poll(self, timeout_s: float) -> bool:
        """True when a message (or end of file) is ready within ``timeout_s``."""
        return self._reader.poll(timeout_s)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
