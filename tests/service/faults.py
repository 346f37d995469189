"""Real network faults for the client tests: a TCP proxy that loses answers, and a scripted
HTTP server that answers with chosen statuses."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LoopbackProxy", "LosingProxy", "read_request", "scripted_server"]


class LoopbackProxy:
    """Accepts loopback TCP connections on a free port, each served by `_serve` in a thread of its
    own, in front of a server on `target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()


class LosingProxy(LoopbackProxy):
    """Forwards loopback TCP connections to `target_port`. For the first `lose` requests whose
    first line starts with `lose_prefix`, it forwards the request, waits for the server's answer,
    and then closes the client's connection without passing the answer on: the server did the
    work, the client saw the connection drop (a lost response)."""

    def __init__(self, target_port: int, *, lose: int, lose_prefix: bytes) -> None:
        self.to_lose = lose
        self.lose_prefix = lose_prefix
        self.lost = 0
        super().__init__(target_port)

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        try:
            first = read_request(client)
            with self.lock:
                lose = first.startswith(self.lose_prefix) and self.lost < self.to_lose
                self.lost += lose
            upstream.sendall(first)
            if lose:
                upstream.settimeout(30)
                upstream.recv(65536)  # the server answered: the work is done; drop the answer
                return
            _pipe_both_ways(client, upstream)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


def read_request(connection: socket.socket) -> bytes:
    """One whole HTTP request (head and Content-Length body): clients send them in pieces."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _pipe_both_ways(a: socket.socket, b: socket.socket) -> None:
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            return
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    back = threading.Thread(target=pump, args=(b, a), daemon=True)
    back.start()
    pump(a, b)
    back.join(timeout=30)


@contextmanager
def scripted_server(statuses: list[int], headers: dict[str, str] | None = None) -> Iterator[Any]:
    """An HTTP server answering each request with the next status of `statuses` (the last one
    repeats) and a JSON body {"message": ...}; `.requests` lists (method, path) as they came."""
    requests: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            requests.append((self.command, self.path))
            status = statuses[min(len(requests), len(statuses)) - 1]
            body = json.dumps({"message": f"scripted {status}", "id": "j1", "status": "queued"}).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.requests = requests  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
