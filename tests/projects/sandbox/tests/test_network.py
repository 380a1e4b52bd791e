"""The no-network policy. PZ_NETWORK=off: only AF_UNIX and AF_NETLINK
sockets may be created, anything else fails with EACCES; PZ_NETWORK=on: all
of them work (the comparison that shows these tests can fail)."""

import ctypes
import errno
import os
import socket
import subprocess
import sys

import pytest

from conftest import SYS_IO_URING_SETUP, syscall



def off():
    # At run time: the module is imported at warm-up, without PZ_NETWORK.
    return os.environ["PZ_NETWORK"] == "off"


@pytest.mark.parametrize("family", ["AF_INET", "AF_INET6"])
@pytest.mark.parametrize("kind", ["SOCK_STREAM", "SOCK_DGRAM"])
def test_internet_sockets(family, kind):
    def make():
        socket.socket(getattr(socket, family), getattr(socket, kind)).close()

    if not off():
        make()
        return
    with pytest.raises(PermissionError) as e:
        make()
    assert e.value.errno == errno.EACCES


def test_local_sockets_always_work():
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    a, b = socket.socketpair()
    a.close()
    b.close()
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()  # NETLINK_ROUTE
    assert socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)


def test_grandchild():
    r = subprocess.run([sys.executable, "-c", "import socket; socket.socket()"],
                       capture_output=True, text=True, timeout=60)
    if off():
        assert r.returncode == 1 and "PermissionError: [Errno 13]" in r.stderr, r
    else:
        assert r.returncode == 0, r


def test_io_uring():
    params = ctypes.create_string_buffer(120)
    try:
        fd = syscall(SYS_IO_URING_SETUP, 1, ctypes.addressof(params))
    except OSError as e:
        if off():
            assert e.errno == errno.EACCES
        else:
            assert e.errno in (errno.ENOSYS, errno.EPERM)  # not built in, or switched off
        return
    os.close(fd)
    assert not off(), "io_uring can create sockets behind the filter's back"
