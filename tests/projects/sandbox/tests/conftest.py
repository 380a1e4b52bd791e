"""Helpers for the sandbox tests. The tests need a zygote thread whose id is
not the zygote's pid: parked (a module at the root, so the zygote imports it
at warm-up, as the learning run reports) starts one."""

import ctypes
import os

import parked  # noqa: F401

libc = ctypes.CDLL(None, use_errno=True)

# x86_64 syscall numbers and constants the os module does not wrap.
SYS_TKILL = 200
SYS_TGKILL = 234
SYS_RT_SIGQUEUEINFO = 129
SYS_PTRACE = 101
SYS_PROCESS_VM_READV = 310
SYS_PROCESS_VM_WRITEV = 311
SYS_IO_URING_SETUP = 425
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
PIDFD_THREAD = os.O_EXCL
F_SETOWN = 8
F_SETOWN_EX = 15
F_OWNER_PID = 1


def syscall(nr, *args):
    """A raw system call with integer arguments (addresses as ints):
    returns its result or raises OSError(errno)."""
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def ptrace_attach_detach(pid):
    """Attach (the target stops), wait for the stop, detach."""
    syscall(SYS_PTRACE, PTRACE_ATTACH, pid, 0, 0)
    os.waitpid(pid, 0x40000000)  # __WALL: a traced process that is not our child
    syscall(SYS_PTRACE, PTRACE_DETACH, pid, 0, 0)


def zygote_threads(zygote):
    return [int(t) for t in os.listdir("/proc/%d/task" % zygote) if int(t) != zygote]
