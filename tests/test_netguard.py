"""The suite runs with the network blocked; loopback stays usable for the demo server tests."""
import socket
import subprocess
import sys

import pytest

from sitecustomize import NetworkBlocked


def test_outside_connection_is_blocked():
    with socket.socket() as sock, pytest.raises(NetworkBlocked, match="network access blocked"):
        sock.connect(("93.184.216.34", 80))


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=2):
            pass


def test_subprocesses_are_guarded(subprocess_env):
    code = "import socket; socket.socket().connect(('1.1.1.1', 443))"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True)
    assert out.returncode != 0 and "network access blocked" in out.stderr
