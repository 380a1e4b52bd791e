"""What a test must not do to the supervisor and the zygote. PZ_EXPECT says
what the run is to see: "denied" under the sandbox, "allowed" without it
(which shows these tests can fail). The pids come from `status --json`."""

import ctypes
import errno
import fcntl
import os
import resource
import signal
import struct
import subprocess
import sys
import threading

import pytest

from conftest import (F_SETOWN, F_SETOWN_EX, F_OWNER_PID, IoVec, PIDFD_THREAD, SYS_PROCESS_VM_READV,
                      SYS_PROCESS_VM_WRITEV, SYS_RT_SIGQUEUEINFO, SYS_TGKILL, SYS_TKILL,
                      ptrace_attach_detach, syscall, zygote_threads)



# Read at run time: this module is imported at warm-up, in the zygote, and the
# child reuses it with the run's environment.
def _env(name):
    return os.environ[name]


def allowed():
    return _env("PZ_EXPECT") == "allowed"


def zygote():
    return int(_env("PZ_ZYGOTE_PID"))


def supervisor():
    return int(_env("PZ_SUPERVISOR_PID"))


def _vm(nr, pid):
    """One byte from/to address 0 of pid: EFAULT proves the permission
    check passed without touching the target's memory."""
    buf = ctypes.create_string_buffer(1)
    local = IoVec(ctypes.addressof(buf), 1)
    remote = IoVec(0, 1)
    try:
        syscall(nr, pid, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)
    except OSError as e:
        if e.errno != errno.EFAULT:
            raise


def _sigqueue0(pid):
    info = bytearray(128)
    struct.pack_into("iii", info, 0, 0, 0, -1)  # signo 0, errno 0, si_code SI_QUEUE
    struct.pack_into("ii", info, 16, os.getpid(), os.getuid())
    buf = (ctypes.c_char * 128).from_buffer(info)
    syscall(SYS_RT_SIGQUEUEINFO, pid, 0, ctypes.addressof(buf))


def _pidfd_open(pid):
    flags = PIDFD_THREAD if pid not in (zygote(), supervisor()) else 0
    os.close(os.pidfd_open(pid, flags))


def _pidfd_send_signal(pid):
    fd = os.open("/proc/%d" % pid, os.O_DIRECTORY)  # a pidfd the filter cannot see
    try:
        signal.pidfd_send_signal(fd, 0)
    finally:
        os.close(fd)


def _setown(pid):
    r, w = os.pipe()  # no O_ASYNC: nothing is ever sent
    try:
        fcntl.fcntl(r, F_SETOWN, pid)
    finally:
        os.close(r)
        os.close(w)


def _setown_ex(pid):
    r, w = os.pipe()
    try:
        fcntl.fcntl(r, F_SETOWN_EX, struct.pack("ii", F_OWNER_PID, pid))
    finally:
        os.close(r)
        os.close(w)


def _proc_mem(pid):
    with open("/proc/%d/mem" % pid, "r+b"):
        pass


OPS = {
    "kill": lambda pid: os.kill(pid, 0),
    "killpg": lambda pid: os.killpg(os.getpgid(pid), 0),
    "tkill": lambda pid: syscall(SYS_TKILL, pid, 0),
    "tgkill": lambda pid: syscall(SYS_TGKILL, pid, pid, 0),
    "sigqueue": _sigqueue0,
    "pidfd_open": _pidfd_open,
    "pidfd_send_signal": _pidfd_send_signal,
    "ptrace": ptrace_attach_detach,
    "process_vm_readv": lambda pid: _vm(SYS_PROCESS_VM_READV, pid),
    "process_vm_writev": lambda pid: _vm(SYS_PROCESS_VM_WRITEV, pid),
    "proc_mem_write": _proc_mem,
    "prlimit": lambda pid: resource.prlimit(pid, resource.RLIMIT_CPU),
    "f_setown": _setown,
    "f_setown_pgrp": lambda pid: _setown(-os.getpgid(pid)),
    "f_setown_ex": _setown_ex,
}
THREAD_OPS = ["kill", "tkill", "sigqueue", "pidfd_open", "ptrace", "process_vm_writev",
              "prlimit", "f_setown"]


def _check(op, pid):
    if allowed():
        OPS[op](pid)
        return
    with pytest.raises(PermissionError) as e:
        OPS[op](pid)
    # The filter's EPERM, or EACCES from the kernel for /proc/PID/mem.
    want = errno.EACCES if op == "proc_mem_write" else errno.EPERM
    assert e.value.errno == want


@pytest.mark.parametrize("op", sorted(OPS))
def test_zygote(op):
    _check(op, zygote())


@pytest.mark.parametrize("op", sorted(OPS))
def test_supervisor(op):
    _check(op, supervisor())


@pytest.mark.parametrize("op", THREAD_OPS)
def test_zygote_thread(op):
    threads = zygote_threads(zygote())
    assert threads, "the conftest's thread is missing from the zygote"
    _check(op, threads[0])


def test_kill_everything():
    if allowed():
        pytest.skip("kill(-1) would signal every process of this user")
    with pytest.raises(PermissionError):
        os.kill(-1, 0)


def test_parent_is_the_zygote():
    assert os.getppid() == zygote()


def _outcome(code):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr


def test_grandchild_process():
    rc, err = _outcome("import os; os.kill(%d, 0); os.kill(%d, 0)" % (zygote(), supervisor()))
    if allowed():
        assert rc == 0, err
    else:
        assert rc == 1 and "PermissionError: [Errno 1]" in err, err


def test_grandchild_other_program():
    r = subprocess.run(["/bin/kill", "-0", str(zygote())], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode == 0) == (allowed()), r


def test_thread():
    seen = []

    def target():
        try:
            os.kill(zygote(), 0)
            seen.append(None)
        except OSError as e:
            seen.append(e.errno)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    assert seen == [None if allowed() else errno.EPERM]
