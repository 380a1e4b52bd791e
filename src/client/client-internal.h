/*
 * What the pytest-zygote program's files share: main.c (help texts, options,
 * the command table), start.c, status.c, run.c and watch.c. Private to src/client/ (the
 * protocol is zygote/client.h); like them, it must not need libpython or libbsd.
 */
#ifndef CLIENT_INTERNAL_H
#define CLIENT_INTERNAL_H

#include "zygote/conf.h"
#include "zygote/paths.h"

/* The command's options, with the precedence rules applied (main.c). */
struct opts {
	const char *root;
	const char *instance;
	const char *python;
	int foreground;
	int ready_fd;
	int start_if_needed;
	int json;
	int all; /* status --all, stop --all: every server in the runtime directory */
	int grace_ms;
	int quiet;  /* start messages to stderr (auto-start from run) */
	int worker; /* the run is an xdist worker (cmd_worker) */
	int python_set, grace_set, start_if_needed_set;
	struct zconf conf; /* the project's config section */

	int affected; /* run --affected: only the tests that can have changed outcome */
};

/* main.c: the root and the server's paths for o; logs and returns -1 when
 * there are none. */
int resolve_paths(const struct opts *o, struct zpaths *p);
/* main.c: say that no zygote runs for p and how to start one; ZEXIT_NOSERVER. */
int no_server(const struct zpaths *p);

/*
 * The commands (see main.c's table). args are pytest's arguments; only run
 * takes any, the others get none.
 */
int cmd_start(const struct opts *o, const struct zpaths *p, int nargs, char **args);
int cmd_run(const struct opts *o, const struct zpaths *p, int nargs, char **args);
int cmd_status(const struct opts *o, const struct zpaths *p, int nargs, char **args);
int cmd_probe(const struct opts *o, const struct zpaths *p, int nargs, char **args);
int cmd_worker(const struct opts *o, const struct zpaths *p, int nargs, char **args);

/* run.c: one run as `run` makes it, with watch's hook (or NULL). */
struct client_run_hook;
int run_once(const struct opts *o, const struct zpaths *p, int nargs, char **args,
	     struct client_run_hook *hook);
int cmd_watch(const struct opts *o, const struct zpaths *p, int nargs, char **args);

/* start.c: start the server for p (detached, or become it with --foreground). */
int do_start(const struct opts *o, const struct zpaths *p);

/* Log conf_check_env's lines (errs is cut up); returns -1. */
int check_env_failed(char *errs);

/* status.c: print the result of `start` from the supervisor's report line. */
int print_report(const struct zpaths *p, const char *line, int to_stderr);

/* status.c: a server found in the runtime directory, with its status text. */
struct server_found {
	struct zpaths p; /* its socket, pid and log paths; root from its status */
	char *text;
};

/* status.c: every server in base's runtime directory that answers a status
 * request, in *ret (servers_free it). 0, or -errno when the directory
 * cannot be read. */
int servers_list(const struct zpaths *base, struct server_found **ret, size_t *ret_n);
void servers_free(struct server_found *list, size_t n);

/* status.c: `status --all`. */
int cmd_status_all(const struct opts *o, const struct zpaths *p);

#endif
