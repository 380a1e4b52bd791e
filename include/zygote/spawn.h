/*
 * Everything between fork() and Python in a test child, in one place so the
 * fork rules can be reviewed together (docs/hacking.md, "Embedding and fork rules").
 */
#ifndef ZYGOTE_SPAWN_H
#define ZYGOTE_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#include "zygote/proto.h"

/* The fd layout of a test child. */
#define SPAWN_FD_REPORT 3 /* the client connection: the child reports EXIT here */
#define SPAWN_FD_LEARN 4  /* pipe to the zygote: the pages this run made private */

/*
 * In the child, right after fork(): new session, default signal mask and
 * dispositions (with CPython's SIGPIPE/SIGXFSZ ignores), the client's stdio on
 * 0/1/2, the connection on SPAWN_FD_REPORT and learn (or /dev/null) on
 * SPAWN_FD_LEARN (both close-on-exec), the zygote's own
 * descriptors in close_fds closed, the client's cwd, the process title, death
 * with the zygote, and the sandbox last. Returns 0 or -1 with err set; a
 * sandbox that cannot be applied does not return: it sends its message on
 * SPAWN_FD_REPORT and exits ZEXIT_SANDBOX.
 *
 * Descriptors Python objects opened at warm-up are left alone on purpose: a
 * closed fd number is reused by the next open() and an old object (a logging
 * FileHandler, a database connection) would then write into the wrong file.
 */
int spawn_child_setup(const struct proto_request *req, int conn, int learn, const int *close_fds,
		      int nclose, pid_t zygote, pid_t supervisor, char *err, size_t errsize);

/* Reset signal mask and dispositions as a freshly exec'd Python expects. */
void spawn_reset_signals(void);

#endif
