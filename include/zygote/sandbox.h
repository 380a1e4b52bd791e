/*
 * The test-child sandbox: one small interface, a seccomp backend and a
 * do-nothing one chosen at build time (meson option 'seccomp').
 *
 * What it promises (docs/security.md): a test child and everything it
 * starts cannot signal, trace, or read or write the memory of the supervisor
 * or any zygote generation (or their threads), cannot kill(-1), and with the
 * no-network policy cannot open sockets other than AF_UNIX and AF_NETLINK.
 * Two halves: the supervisor and zygotes make themselves non-dumpable
 * (sandbox_protect), so the kernel refuses ptrace-class access to them
 * (ptrace, /proc/PID/mem, process_vm_*, pidfd_getfd) from anyone without
 * CAP_SYS_PTRACE, and the child drops CAP_SYS_PTRACE and loads a seccomp
 * filter for what dumpability does not cover: signals.
 */
#ifndef ZYGOTE_SANDBOX_H
#define ZYGOTE_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

/* Exit code of a run whose child could not be sandboxed (with a message). */
#define ZEXIT_SANDBOX 77

/* The policy, from PYTEST_ZYGOTE_SANDBOX (see conf_parse_sandbox). */
enum sandbox_mode {
	SANDBOX_OFF = 0,
	SANDBOX_ON = 1,         /* the default */
	SANDBOX_NO_NETWORK = 2, /* on, and no sockets but AF_UNIX and AF_NETLINK */
};

/*
 * The mode PYTEST_ZYGOTE_SANDBOX asks for (unset or empty: SANDBOX_ON), or
 * -1 when its value is not one conf_parse_sandbox accepts.
 */
int sandbox_mode(void);

/*
 * In the supervisor and in each zygote, before anything else: unless the
 * sandbox is off, make this process non-dumpable (PR_SET_DUMPABLE 0).
 */
void sandbox_protect(void);

/*
 * In a spare child, before its request: build the filter sandbox_apply
 * would load now, so that it only has to check that the processes to
 * protect are still the same and load it. Nothing happens on failure.
 */
void sandbox_prepare(pid_t zygote, pid_t supervisor);

/*
 * In the test child, last among the C steps: dumpable again (so the user's
 * debugger can attach to the run), CAP_SYS_PTRACE dropped, and the filter
 * loaded. Returns 0, or -1 with err set to a sentence that says what to do.
 */
int sandbox_apply(pid_t zygote, pid_t supervisor, char *err, size_t errsize);

/*
 * The state for status: "seccomp", "seccomp no-network", "off", "none"
 * (built without libseccomp), or "failed: WHY" when a test child could not
 * load the filter. The first call forks a short-lived child that tries.
 */
const char *sandbox_name(void);

#endif
