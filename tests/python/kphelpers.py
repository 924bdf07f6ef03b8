"""Helpers shared by the Key Protect SDK suite (imported by conftest.py and the tests)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A tag that makes every name created by this run unique.
RUN_ID = uuid.uuid4().hex[:8]


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: The media type Key Protect answers collection bodies (errors included) with.
COLLECTION_MEDIA_TYPE = "application/vnd.ibm.collection+json"


def body_of(result):
    """The decoded body of what the SDK hands back. IBM's SDK core decodes only `application/json`;
    for Key Protect's collections (`application/vnd.ibm.collection+json`) it hands back the raw
    `requests.Response`, and its users call `.json()` on it, as here."""
    if result is None or isinstance(result, (dict, list)):
        return result
    return result.json()


def body(obj) -> io.BytesIO:
    """A request body the way the SDK expects it: a file-like object holding JSON."""
    return io.BytesIO(json.dumps(obj).encode())


class Secrets:
    """Every secret the tests saw (DEK plaintexts, key material), to search for leaks later."""

    def __init__(self) -> None:
        self._items: list[tuple[str, bytes]] = []

    def add(self, what: str, data: bytes) -> bytes:
        assert isinstance(data, bytes) and len(data) >= 8, f"{what}: too short to search for"
        self._items.append((what, data))
        return data

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def secret_forms(data: bytes) -> list[tuple[str, bytes]]:
    """The encodings in which a secret could show up in a log or a database file."""
    std = base64.b64encode(data).rstrip(b"=")
    url = base64.urlsafe_b64encode(data).rstrip(b"=")
    forms = [
        ("raw", data),
        ("base64", std),
        ("base64url", url),
        ("hex", data.hex().encode()),
        ("HEX", data.hex().upper().encode()),
        # Rust's Debug output of a byte slice or Vec<u8>: [1, 2, 3]
        ("rust-debug", ("[" + ", ".join(str(b) for b in data) + "]").encode()),
        ("decimal-list", ",".join(str(b) for b in data).encode()),
    ]
    seen, out = set(), []
    for name, form in forms:
        if form not in seen:
            seen.add(form)
            out.append((name, form))
    return out


def find_leaks(secrets: Iterable[tuple[str, bytes]], files: Iterable[Path]) -> list[str]:
    leaks = []
    blobs = []
    for path in files:
        try:
            blobs.append((path, path.read_bytes()))
        except FileNotFoundError:
            continue
    for what, data in secrets:
        for form_name, form in secret_forms(data):
            for path, blob in blobs:
                if form in blob:
                    leaks.append(f"{what} ({form_name}) found in {path}")
    return leaks


class RoundRobinProxy:
    """A TCP load balancer on loopback: each new connection goes to the next backend in turn
    (the next one again if that one refuses), bytes copied both ways untouched."""

    def __init__(self, backends: list[str]):
        import socket
        import threading

        self._backends = backends
        self._next = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self):
        import socket

        with self._lock:
            first = self._next
            self._next += 1
        for attempt in range(len(self._backends)):
            host, port = self._backends[(first + attempt) % len(self._backends)].rsplit(":", 1)
            try:
                return socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                continue
        return None

    def _accept(self):
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            backend = self._connect()
            if backend is None:
                client.close()
                continue
            backend.settimeout(None)
            finished = []
            for source, sink in ((client, backend), (backend, client)):
                threading.Thread(target=self._pipe, args=(source, sink, finished), daemon=True).start()

    @staticmethod
    def _pipe(source, sink, finished):
        import socket

        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                try:
                    sink.sendall(data)
                except OSError:
                    # The far end stopped reading (a server refusing an oversized body
                    # answers, then closes): keep draining this side so the sender is not
                    # stuck, and leave the other direction alone, which may still carry
                    # that answer.
                    while source.recv(65536):
                        pass
                    break
        except OSError:
            pass
        finally:
            # Pass the end on in this direction only, like a TCP half-close.
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finished.append(source)
            if len(finished) == 2:
                source.close()
                sink.close()

    def close(self):
        self._closed = True
        self._listener.close()
