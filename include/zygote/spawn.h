/*
 * Everything between fork() and Python in a test child, in one place so the
 * fork rules can be reviewed together (docs/hacking.md, "Embedding and fork rules").
 */
#ifndef ZYGOTE_SPAWN_H
#define ZYGOTE_SPAWN_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "zygote/proto.h"

/*
 * The fd layout of a test child while its test runs:
 *
 *   0, 1, 2  the client's stdin, stdout and stderr (a descriptor the client
 *            had closed is closed here too, PROTO_FLAG_CLOSED_FD0 and up)
 *   SPAWN_FD_HIGH and up (close-on-exec)
 *            the write end of the learning pipe to the zygote, the only
 *            descriptor of the harness the test's Python code runs beside
 *            (and, in a run a spare took, the spare's userfaultfd, which
 *            nothing reads or writes: see prefault_protect)
 *
 * Tests use the low numbers: a test that closes 3..20 and opens files must
 * get its own files, never a harness descriptor a later write of ours would
 * land in. The harness's descriptor sits high, is checked with fstat against
 * what it was at fork before every write (struct spawn_fd), and carries
 * nothing that decides the run's outcome: the exit code is the child's wait
 * status, read by the zygote. The client connection is held only until the
 * sandbox is applied (for a message when setup fails), never while Python runs.
 */
#define SPAWN_FD_HIGH 1000 /* lowest harness fd; 24 below a soft RLIMIT_NOFILE under 1024 */

/* The lowest harness descriptor number: SPAWN_FD_HIGH, or 24 below a soft
 * RLIMIT_NOFILE under 1024 (then at least 10). */
int spawn_fd_base(void);

/* A harness descriptor in the child, and the object it was at fork. */
struct spawn_fd {
	int fd;
	dev_t dev;
	ino_t ino;
};

/*
 * In the child, right after fork(): new session, default signal mask and
 * dispositions (with CPython's SIGPIPE/SIGXFSZ ignores), the client's stdio on
 * 0/1/2, learn (or /dev/null) moved high as *ret_learn, the zygote's own
 * descriptors in close_fds closed, the client's cwd, the process title, death
 * with the zygote, the sandbox last, then the connection conn closed.
 * Returns 0, or -1 after sending the reason on conn as an ERROR message (the
 * caller exits ZEXIT_INTERNAL); a sandbox that cannot be applied does not
 * return: it sends its message on conn and exits ZEXIT_SANDBOX.
 *
 * Descriptors Python objects opened at warm-up are left alone on purpose: a
 * closed fd number is reused by the next open() and an old object (a logging
 * FileHandler, a database connection) would then write into the wrong file.
 */
int spawn_child_setup(const struct proto_request *req, int conn, int learn, const int *close_fds,
		      int nclose, pid_t zygote, pid_t supervisor, struct spawn_fd *ret_learn);

/* Whether fd is still the object it was when spawn_child_setup noted it:
 * a test may have closed it and opened a file of its own on that number. */
int spawn_fd_same(const struct spawn_fd *f);

/* The process title of a run of req: "run ARGS". */
void spawn_set_title(const struct proto_request *req);

/* Reset signal mask and dispositions as a freshly exec'd Python expects. */
void spawn_reset_signals(void);

#endif
