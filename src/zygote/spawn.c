/*
 * The test child between fork() and Python: session, signals, fd layout, cwd,
 * title, sandbox. Runs in a forked copy of the zygote, so only async-signal-
 * safe-ish libc calls and no Python until spawn_child_setup returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/fdpass.h"
#include "zygote/proto.h"
#include "zygote/sandbox.h"
#include "zygote/spawn.h"

void
spawn_reset_signals(void)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++) {
		if (s == SIGKILL || s == SIGSTOP)
			continue;
		sigaction(s, &sa, NULL);
	}
	/* What CPython's start-up does (Python/pylifecycle.c, _PySignal_Init). */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigaction(SIGXFSZ, &sa, NULL);
}

void
spawn_set_title(const struct proto_request *req)
{
	char buf[256];
	size_t n = (size_t)snprintf(buf, sizeof(buf), "run");
	for (size_t i = 0; i < req->argc && n < sizeof(buf) - 1; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s", req->argv[i]);
	setproctitle("%s", buf);
}

/* Where the harness's descriptors go: SPAWN_FD_HIGH, or lower under a small
 * soft RLIMIT_NOFILE (F_DUPFD cannot go past it). */
int
spawn_fd_base(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= SPAWN_FD_HIGH + 24)
		return SPAWN_FD_HIGH;
	return rl.rlim_cur > 48 ? (int)rl.rlim_cur - 24 : 10;
}

int
spawn_fd_same(const struct spawn_fd *f)
{
	struct stat st;
	return f->fd >= 0 && fstat(f->fd, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino;
}

/* Report why setup failed on the connection (wherever it is now). */
static int
fail(int conn, const char *fmt, ...)
{
	char err[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, sizeof(err), fmt, ap);
	va_end(ap);
	fdpass_send_msg(conn, PROTO_MSG_ERROR, err, strlen(err) + 1);
	return -1;
}

int
spawn_child_setup(const struct proto_request *req, int conn, int learn, const int *close_fds,
		  int nclose, pid_t zygote, pid_t supervisor, struct spawn_fd *ret_learn)
{
	/* A new session: the client's terminal is not our controlling tty, so
	 * terminal signals reach the client, which forwards them. */
	if (setsid() < 0)
		return fail(conn, "setsid: %s", strerror(errno));
	spawn_reset_signals();

	for (int i = 0; i < nclose; i++)
		if (close_fds[i] >= 0 && close_fds[i] != conn && close_fds[i] != learn)
			close(close_fds[i]);

	/*
	 * The layout of spawn.h. Every source (stdio, connection, learning
	 * pipe) is first copied high and its old number closed, so no dup2
	 * below overwrites a source still needed and nothing of ours is left
	 * on a low number a test will reuse.
	 */
	if (learn < 0)
		learn = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int base = spawn_fd_base();
	int src[5] = { req->fds[0], req->fds[1], req->fds[2], conn, learn };
	int high[5];
	for (int i = 0; i < 5; i++) {
		high[i] = fcntl(src[i], F_DUPFD_CLOEXEC, base);
		if (high[i] < 0)
			return fail(conn, "dup: %s", strerror(errno));
	}
	for (int i = 0; i < 5; i++)
		if (src[i] > 2)
			close(src[i]);
	conn = high[3];
	learn = high[4];
	for (int i = 0; i < 3; i++) {
		/* dup2 leaves FD_CLOEXEC clear: 0-2 survive exec. */
		if (dup2(high[i], i) < 0)
			return fail(conn, "dup2: %s", strerror(errno));
		close(high[i]);
		if (req->flags & (PROTO_FLAG_CLOSED_FD0 << i))
			close(i);
	}
	struct stat st;
	if (fstat(learn, &st) < 0)
		return fail(conn, "fstat: %s", strerror(errno));
	*ret_learn = (struct spawn_fd){ .fd = learn, .dev = st.st_dev, .ino = st.st_ino };

	if (chdir(req->cwd) < 0)
		return fail(conn, "cannot enter the working directory '%s': %s", req->cwd,
			    strerror(errno));
	spawn_set_title(req);

	/* Die with the zygote; a zygote that is already gone means we are too late. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != zygote)
		return fail(conn, "the zygote exited during the fork");
	/*
	 * A sandbox that cannot be applied ends the run here, with its own exit
	 * code (ZEXIT_SANDBOX) so that a script can tell it from a crash; the
	 * zygote reports that code to the client after the message.
	 */
	char err[512];
	if (sandbox_apply(zygote, supervisor, err, sizeof(err)) < 0) {
		fdpass_send_msg(conn, PROTO_MSG_ERROR, err, strlen(err) + 1);
		_exit(ZEXIT_SANDBOX);
	}
	/* The test never holds the client connection: what reaches the client
	 * is its stdio and the exit status the zygote reads. */
	close(conn);
	return 0;
}
