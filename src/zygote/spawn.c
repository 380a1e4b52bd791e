/*
 * The test child between fork() and Python: session, signals, fd layout, cwd,
 * title, sandbox. Runs in a forked copy of the zygote, so only async-signal-
 * safe-ish libc calls and no Python until spawn_child_setup returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

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

static void
set_title(const struct proto_request *req)
{
	char buf[256];
	size_t n = (size_t)snprintf(buf, sizeof(buf), "run");
	for (size_t i = 0; i < req->argc && n < sizeof(buf) - 1; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s", req->argv[i]);
	setproctitle("%s", buf);
}

int
spawn_child_setup(const struct proto_request *req, int conn, int learn, const int *close_fds,
		  int nclose, pid_t zygote, pid_t supervisor, char *err, size_t errsize)
{
	/* A new session: the client's terminal is not our controlling tty, so
	 * terminal signals reach the client, which forwards them. */
	if (setsid() < 0) {
		snprintf(err, errsize, "setsid: %s", strerror(errno));
		return -1;
	}
	spawn_reset_signals();

	for (int i = 0; i < nclose; i++)
		if (close_fds[i] >= 0 && close_fds[i] != conn && close_fds[i] != learn)
			close(close_fds[i]);

	/*
	 * Fixed layout: 0,1,2 the client's stdin/stdout/stderr; 3 the client
	 * connection (for the EXIT report); 4 the learning pipe to the zygote.
	 * Sources are first moved above 10 so no dup2 overwrites a source
	 * still needed.
	 */
	if (learn < 0)
		learn = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int src[5] = { req->fds[0], req->fds[1], req->fds[2], conn, learn };
	int high[5];
	for (int i = 0; i < 5; i++) {
		high[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10);
		if (high[i] < 0) {
			snprintf(err, errsize, "dup: %s", strerror(errno));
			return -1;
		}
	}
	for (int i = 0; i < 5; i++)
		if (src[i] > 4)
			close(src[i]);
	for (int i = 0; i < 5; i++) {
		if (dup2(high[i], i) < 0) {
			snprintf(err, errsize, "dup2: %s", strerror(errno));
			return -1;
		}
		close(high[i]);
	}
	/* dup2 clears FD_CLOEXEC: fds 0-2 must survive exec, 3 and 4 must not. */
	fcntl(SPAWN_FD_REPORT, F_SETFD, FD_CLOEXEC);
	fcntl(SPAWN_FD_LEARN, F_SETFD, FD_CLOEXEC);

	if (chdir(req->cwd) < 0) {
		snprintf(err, errsize, "cannot enter the working directory '%s': %s", req->cwd,
			 strerror(errno));
		return -1;
	}
	set_title(req);

	/* Die with the zygote; a zygote that is already gone means we are too late. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != zygote) {
		snprintf(err, errsize, "the zygote exited during the fork");
		return -1;
	}
	/*
	 * A sandbox that cannot be applied ends the run here, with its own exit
	 * code (ZEXIT_SANDBOX) so that a script can tell it from a crash; the
	 * zygote reports that code to the client after the message.
	 */
	if (sandbox_apply(zygote, supervisor, err, errsize) < 0) {
		fdpass_send_msg(SPAWN_FD_REPORT, PROTO_MSG_ERROR, err, strlen(err) + 1);
		_exit(ZEXIT_SANDBOX);
	}
	return 0;
}
