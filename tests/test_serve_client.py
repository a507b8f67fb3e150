"""The strict HTTP client of the serving path (skingpt4/chat/http_client.py) against hostile servers: every bad
answer is one line, a trickling server cannot outlast the total deadline, nothing goes through a proxy and no
redirect is followed."""
import gzip
import json
import time

import pytest

from fake_openai_server import HostileServer, http_response
from skingpt4.chat.http_client import ServerAddress, ServerError, StrictClient


def client(url: str, timeout: float = 5.0, max_bytes: int = 16 * 1024 * 1024) -> StrictClient:
    return StrictClient(ServerAddress.parse(url), timeout=timeout, max_bytes=max_bytes)


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


CASES = {
    "malformed JSON": (http_response(b'{"choices": [{"text": "hi"'), "not valid JSON"),
    "not JSON": (http_response(b"<html>busy</html>", headers={"Content-Type": "text/html"}), "not valid JSON"),
    "not an object": (http_response(b'["a list"]'), "not an object"),
    "not UTF-8": (http_response(b'{"a": "\xff\xfe"}'), "not UTF-8"),
    "NaN": (http_response(b'{"choices": [{"text": "x", "score": NaN}]}'), "not valid JSON"),
    "Infinity": (http_response(b'{"x": -Infinity}'), "not valid JSON"),
    "nested 40 deep": (http_response(b'{"x": ' + nested(40) + b"}"), "nested deeper than 32"),
    "nested 100000 deep": (http_response(nested(100_000)), "nested deeper than 32"),
    "gzip": (http_response(gzip.compress(b'{"choices": []}'), headers={"Content-Encoding": "gzip"}),
             "Content-Encoding gzip"),
    "truncated": (http_response(b'{"choices": [', length=5000), "before the whole answer arrived"),
    "huge announced": (http_response(b"{}", length=150 * 1024 * 1024), "more than the limit"),
    "redirect to a private address": (http_response(b"", status="302 Found",
                                                    headers={"Location": "http://10.0.0.1/v1/models"}),
                                      "redirects are not followed"),
    "server error": (http_response(b'{"error": {"message": "CUDA out of\\nmemory"}}', status="500 Internal"),
                     "HTTP 500): CUDA out of memory"),
    "not HTTP": (b"garbage\r\n\r\n", "broke off the answer"),
    "closed at once": (b"", "broke off the answer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_answers_are_one_line_errors(case):
    response, expected = CASES[case]
    server = HostileServer(response)
    try:
        with pytest.raises(ServerError) as err:
            client(server.url).get("/models")
    finally:
        server.close()
    message = str(err.value)
    assert expected in message and "\n" not in message and len(message) < 500, message


def test_unbounded_body_stops_at_the_cap():
    body = b'{"x": "' + b"a" * 3_000_000 + b'"}'
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    server = HostileServer(chunked)
    try:
        with pytest.raises(ServerError, match="larger than the limit of 1000000 bytes"):
            client(server.url, max_bytes=1_000_000).get("/models")
        assert client(server.url).get("/models")["x"].startswith("aaa")  # under the default 16 MB cap: accepted
    finally:
        server.close()


def test_a_trickling_server_cannot_outlast_the_deadline():
    """One byte every 0.1 s (each read succeeds quickly, so a per-read timeout never fires): the 1.5 s total
    deadline ends the request."""
    server = HostileServer(http_response(b'{"data": [' + b" " * 400 + b"]}"), trickle=0.1)
    started = time.monotonic()
    try:
        with pytest.raises(ServerError, match="within --timeout 1.5 s"):
            client(server.url, timeout=1.5).get("/models")
    finally:
        server.close()
    assert time.monotonic() - started < 4


def test_no_proxy_even_when_the_environment_names_one(monkeypatch):
    proxy = HostileServer(http_response(b'{"data": [{"id": "from-the-proxy"}]}'))
    real = HostileServer(http_response(b'{"data": [{"id": "served"}]}'))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url.rsplit("/", 1)[0])
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    try:
        assert client(real.url).get("/models") == {"data": [{"id": "served"}]}
        assert proxy.connections == 0 and real.connections == 1
    finally:
        proxy.close()
        real.close()


def test_unreachable_and_bad_addresses():
    with pytest.raises(ServerError, match="cannot reach the server at http://127.0.0.1:9/v1"):
        client("http://127.0.0.1:9/v1").get("/models")
    for bad in ("127.0.0.1:8000", "ftp://host/v1", "http://user:pw@host/v1", "http://host:99999/v1", "http:///v1"):
        with pytest.raises(ServerError, match="--server"):
            ServerAddress.parse(bad)
    assert ServerAddress.parse("http://[::1]:8000/v1/").url == "http://[::1]:8000/v1"


def test_a_good_answer_is_accepted():
    payload = {"choices": [{"text": "ok", "token_ids": [1, 2]}], "nested": [[[[1]]]]}
    server = HostileServer(http_response(json.dumps(payload).encode()))
    try:
        assert client(server.url).post("/completions", {"model": "m"}) == payload
    finally:
        server.close()
