"""Blocks every network connection except loopback and Unix sockets, in this interpreter and (through
PYTHONPATH) in the subprocesses tests start. Imported at start-up by Python when this folder is on PYTHONPATH."""
import ipaddress
import socket

_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


class NetworkBlocked(OSError):
    pass


def _allowed(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", "", "0.0.0.0"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name that would need DNS


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _allowed(address):
        raise NetworkBlocked(f"network access blocked in tests: connection to {address!r}")


def _guarded_connect(self, address):
    _check(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    _check(self, args[-1])
    return _sendto(self, data, *args)


def install():
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.socket.sendto = _guarded_sendto


install()
