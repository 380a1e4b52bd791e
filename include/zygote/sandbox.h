/*
 * The test-child sandbox: one small interface, a seccomp backend and a
 * do-nothing one chosen at build time (meson option 'seccomp'). Applied last
 * among the C steps in the child, after which the child cannot signal, trace
 * or open pidfds of the supervisor or the zygote, nor signal every process
 * (kill(-1)).
 */
#ifndef ZYGOTE_SANDBOX_H
#define ZYGOTE_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

/* Returns 0, or -1 with err set. PYTEST_ZYGOTE_SANDBOX=0 in the zygote's
 * environment turns it off. */
int sandbox_apply(pid_t zygote, pid_t supervisor, char *err, size_t errsize);

/* The backend's name, for status: "seccomp" or "none". */
const char *sandbox_name(void);

#endif
