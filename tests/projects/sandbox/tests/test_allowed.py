"""What a test suite legitimately does, which the sandbox must leave alone."""

import asyncio
import ctypes
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from conftest import ptrace_attach_detach

PR_GET_DUMPABLE = 3


def _square(x):
    return x * x


def _sleep_forever():
    time.sleep(600)


def test_subprocess():
    r = subprocess.run([sys.executable, "-c", "print('hi')"], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout) == (0, "hi\n")


def test_popen_send_signal_terminate_kill():
    for how, sig in (("send_signal", signal.SIGUSR1), ("terminate", signal.SIGTERM),
                     ("kill", signal.SIGKILL)):
        p = subprocess.Popen(["sleep", "600"])
        if how == "send_signal":
            p.send_signal(sig)
        else:
            getattr(p, how)()
        assert p.wait(timeout=60) == -sig, how


def test_signals_to_self_and_own_group():
    got = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(0, signal.SIGUSR1)
        os.killpg(os.getpgrp(), signal.SIGUSR1)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == [signal.SIGUSR1] * 4


def test_threads():
    out = []
    threads = [threading.Thread(target=lambda i=i: out.append(i * i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [i * i for i in range(8)]


def test_multiprocessing_pool_and_terminate():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(_square, range(10)) == [x * x for x in range(10)]
    p = multiprocessing.get_context("fork").Process(target=_sleep_forever)
    p.start()
    p.terminate()
    p.join(60)
    assert p.exitcode == -signal.SIGTERM


def test_loopback_tcp_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=60) as c:
            conn, _ = srv.accept()
            with conn:
                c.sendall(b"ping")
                assert conn.recv(4) == b"ping"


def test_unix_socketpair():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"


def test_asyncio_subprocess():
    async def main():
        p = await asyncio.create_subprocess_exec(sys.executable, "-c", "print(6*7)",
                                                 stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        return p.returncode, out

    assert asyncio.run(main()) == (0, b"42\n")


def test_pidfd_of_own_child():
    p = subprocess.Popen(["sleep", "600"])
    try:
        fd = os.pidfd_open(p.pid)
        os.close(fd)
    finally:
        p.kill()
        p.wait(60)


def test_ptrace_own_child():
    p = subprocess.Popen(["sleep", "600"])
    try:
        ptrace_attach_detach(p.pid)
    finally:
        p.kill()
        p.wait(60)


def test_run_is_debuggable():
    # A debugger (gdb, py-spy) of the user's can attach to the test process.
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
    with open("/proc/self/mem", "rb"):
        pass
