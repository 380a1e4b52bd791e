/*
 * The supervisor: a C-only event loop that never initialises Python. It owns
 * the socket, the pid file lock and the zygote generations, checks every peer's
 * uid, decodes requests and hands runs to the current generation.
 */
#ifndef ZYGOTE_SUPERVISOR_H
#define ZYGOTE_SUPERVISOR_H

#include "zygote/paths.h"

struct supervisor_opts {
	struct zpaths paths;
	const char *python;
	const char *self_exe; /* pytest-zygote-server, for exec of the zygote */
	const char *instance; /* --instance, or NULL; "NAME~ID" for a variant */
	int ready_fd;         /* -1, or an fd that gets "\n" when warm (s6 style) */
	int report_fd;        /* -1, or a pipe to `start`: one line, see client/start.c */
};

/* The largest max_runs (a generation serves at most this many runs at once). */
#define SUPERVISOR_MAX_RUNS_LIMIT 256
/* idle_timeout (PYTEST_ZYGOTE_IDLE_TIMEOUT), seconds: the default (3 hours)
 * and the largest value (a week); 0 means never. */
#define SUPERVISOR_IDLE_TIMEOUT_DEFAULT 10800
#define SUPERVISOR_IDLE_TIMEOUT_MAX (7 * 86400)
/* wait_timeout (PYTEST_ZYGOTE_WAIT_TIMEOUT), seconds: how long a run (or
 * `start`) waits for a zygote to become ready before it is told why it gave
 * up; the default (10 minutes) and the largest value (a day); 0 means no bound. */
#define SUPERVISOR_WAIT_TIMEOUT_DEFAULT 600
#define SUPERVISOR_WAIT_TIMEOUT_MAX 86400

/*
 * Default max_runs (runs in progress at once; more wait in a queue): twice
 * the online CPUs, at least 8. PYTEST_ZYGOTE_MAX_RUNS, the max_runs key or
 * start --max-runs override it; 0 means no limit.
 */
int supervisor_default_max_runs(void);

/* Serve until stopped. Returns the process exit code. */
int supervisor_main(const struct supervisor_opts *o);

#endif
