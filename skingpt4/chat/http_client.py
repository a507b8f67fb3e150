"""A strict JSON-over-HTTP client for the serving path (docs/scaling.md, "The client"): the server is trusted
with answers, not with the client's process.

* One total deadline per request (a watchdog closes the socket when it passes), not a per-read timeout: a server
  that trickles one byte a second cannot hold a request past `timeout`.
* A cap on the response size (Content-Length checked first, the body read in chunks up to the cap).
* No proxy, ever: the photo's embeddings go to the given address only (stdlib http.client reads no
  http_proxy / https_proxy environment variables, unlike urllib and requests).
* No redirects (a 3xx is an error naming the target), no compression (`Accept-Encoding: identity`; a
  Content-Encoding in the answer is an error).
* JSON only: NaN / Infinity, nesting deeper than 32 levels, non-UTF-8, a truncated or non-JSON body are errors.
Every failure is a `ServerError` with a one-line message.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from skingpt4.common.config import ConfigError

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32
CHUNK = 64 * 1024


class ServerError(ConfigError):
    """The server could not be reached, or answered something the client does not accept; one line."""


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class ServerAddress:
    scheme: str
    host: str
    port: int
    base_path: str  # e.g. "/v1"

    @classmethod
    def parse(cls, url: str, example: str = "http://127.0.0.1:8000/v1") -> "ServerAddress":
        try:
            parsed = urllib.parse.urlsplit(url)
            port = parsed.port
        except ValueError as err:
            raise ServerError(f"--server {url}: {err}; give the server's API base, e.g. {example}") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServerError(f"--server {url}: give the server's API base, e.g. {example}")
        if parsed.username or parsed.password or parsed.query or parsed.fragment:
            raise ServerError(f"--server {url}: no user, password, query or fragment in the address, e.g. {example}")
        return cls(parsed.scheme, parsed.hostname, port or (443 if parsed.scheme == "https" else 80),
                   parsed.path.rstrip("/"))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _depth(value, limit: int) -> int:
    """Nesting depth of a parsed JSON value (iterative, stops past `limit`)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(body: bytes, where: str) -> dict:
    """The body as a JSON object, or a ServerError (non-UTF-8, not JSON, NaN/Infinity, too deep, not an object)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ServerError(f"{where} answered with a body that is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ServerError(f"{where} answered with JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as err:
        raise ServerError(f"{where} answered with a body that is not valid JSON ({one_line(err, 120)}): "
                          f"{one_line(text[:120])!r}") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ServerError(f"{where} answered with JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise ServerError(f"{where} answered with JSON that is not an object: {one_line(text[:120])!r}")
    return value


class StrictClient:
    """JSON requests to one server (`ServerAddress`), each bounded by `timeout` seconds in total."""

    def __init__(self, address: ServerAddress, timeout: float = 600.0, max_bytes: int = MAX_RESPONSE_BYTES,
                 start_hint: str = ""):
        if not timeout > 0:
            raise ServerError(f"--timeout must be > 0 seconds, got {timeout}")
        self.address, self.timeout, self.max_bytes, self.start_hint = address, float(timeout), max_bytes, start_hint

    def get(self, path: str) -> dict:
        return self.request("GET", path, None)

    def post(self, path: str, payload: dict) -> dict:
        return self.request("POST", path, json.dumps(payload, allow_nan=False).encode())

    def request(self, method: str, path: str, body: Optional[bytes]) -> dict:
        url = self.address.url + path
        deadline = time.monotonic() + self.timeout
        cls = http.client.HTTPSConnection if self.address.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.address.host, self.address.port, timeout=self.timeout)
        expired = threading.Event()

        def watchdog():  # the total deadline: unblocks any read or connect in progress
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(self.timeout, watchdog)
        timer.daemon = True
        timer.start()
        try:
            try:
                conn.connect()
            except OSError as err:
                if expired.is_set():
                    raise ServerError(f"no connection to {url} within --timeout {self.timeout:g} s") from None
                raise ServerError(f"cannot reach the server at {self.address.url} ({one_line(err, 120)}); "
                                  f"{self.start_hint or 'is it running?'}") from None
            headers = {"Accept": "application/json", "Accept-Encoding": "identity", "Connection": "close"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, self.address.base_path + path, body=body, headers=headers)
            response = conn.getresponse()
            data = self._read(response, url, deadline)
        except ServerError:
            raise
        except (OSError, http.client.HTTPException) as err:
            if expired.is_set() or time.monotonic() >= deadline:
                raise ServerError(f"no complete answer from {url} within --timeout {self.timeout:g} s") from None
            if isinstance(err, http.client.IncompleteRead):
                raise ServerError(f"{url} closed the connection before the whole answer arrived "
                                  f"({len(err.partial)} bytes of {len(err.partial) + (err.expected or 0)})") from None
            raise ServerError(f"{url} broke off the answer ({type(err).__name__}: {one_line(err, 120)})") from None
        finally:
            timer.cancel()
            conn.close()
        where = f"the server at {url}"
        if 300 <= response.status < 400:
            raise ServerError(f"{where} answered with a redirect (HTTP {response.status} to "
                              f"{one_line(response.getheader('Location') or '?', 120)}); redirects are not followed: "
                              "give the server's own address")
        if response.status != 200:
            detail = data.decode("utf-8", "replace")
            try:
                parsed = json.loads(detail)
                detail = (parsed.get("error") or {}).get("message") or parsed.get("message") or detail
            except (ValueError, AttributeError):
                pass
            raise ServerError(f"{where} refused the request (HTTP {response.status}): {one_line(detail, 200)}")
        return parse_json(data, where)

    def _read(self, response: http.client.HTTPResponse, url: str, deadline: float) -> bytes:
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise ServerError(f"the server at {url} answered with Content-Encoding {one_line(encoding, 40)}; "
                              "only uncompressed answers are accepted")
        length = response.getheader("Content-Length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ServerError(f"the server at {url} sent a bad Content-Length {one_line(length, 40)!r}") from None
            if declared > self.max_bytes:
                raise ServerError(f"the server at {url} announced a {declared}-byte answer, more than the limit of "
                                  f"{self.max_bytes} bytes")
        chunks, size = [], 0
        while True:
            if time.monotonic() >= deadline:
                raise ServerError(f"no complete answer from {url} within --timeout {self.timeout:g} s")
            chunk = response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_bytes:
                raise ServerError(f"the answer from {url} is larger than the limit of {self.max_bytes} bytes")
            chunks.append(chunk)
        if time.monotonic() >= deadline:  # the watchdog closed the socket: what came is not the whole answer
            raise ServerError(f"no complete answer from {url} within --timeout {self.timeout:g} s")
        if length is not None and size < int(length):
            raise ServerError(f"{url} closed the connection before the whole answer arrived ({size} bytes of "
                              f"{length})")
        return b"".join(chunks)
