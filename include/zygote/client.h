/*
 * The client side of the protocol: connect, send a request with our stdio,
 * forward signals while a run is in progress, and return its exit code.
 */
#ifndef ZYGOTE_CLIENT_H
#define ZYGOTE_CLIENT_H

#include <errno.h>
#include <stdint.h>

#include "zygote/paths.h"

/*
 * Connect to the server's socket at p, through the checked runtime directory,
 * and make sure the process listening runs as our uid. Returns an fd, or
 * -errno (-ENOENT or -ECONNREFUSED mean no server is listening), or
 * CLIENT_UNTRUSTED after saying on stderr why the directory or the server is
 * not ours (nothing was sent: exit with ZEXIT_UNTRUSTED).
 */
#define CLIENT_UNTRUSTED (-EKEYREJECTED)
int client_connect(const struct zpaths *p);

/*
 * Run pytest with args in the zygote at p (flags: PROTO_FLAG_WORKER for an
 * xdist worker, whose args are Python's). Returns the exit code to use, or
 * CLIENT_UNTRUSTED (client_connect), or -errno when the server cannot be
 * reached, or CLIENT_REDIRECT when the run
 * needs a zygote warmed with its environment: client_redirect holds the
 * server's "variant=ID\nreason=..." text then.
 */
#define CLIENT_REDIRECT (-EXDEV)
extern char client_redirect[1024 + 4096];
int client_run(const struct zpaths *p, uint32_t flags, int nargs, char **args);

/*
 * client_run with a descriptor of the caller's polled during the run
 * (`watch`: its subscription). When fd is readable, readable(arg) is called:
 * 1 cancels the run as a Ctrl-C does (SIGINT to the run, once; the run's
 * EXIT is still awaited), 0 goes on, -1 stops polling fd. cancelled and
 * quit_signal (SIGTERM or SIGHUP, which are forwarded to the run) are set
 * for the caller to read afterwards.
 */
struct client_run_hook {
	int fd;
	int (*readable)(void *arg);
	void *arg;
	int cancelled;
	int quit_signal;
};
int client_run_hooked(const struct zpaths *p, uint32_t flags, int nargs, char **args,
		      struct client_run_hook *hook);

/*
 * Open /dev/null on whichever of 0, 1 and 2 is closed; call first thing. Returns
 * the ones that were closed at the first call as PROTO_FLAG_CLOSED_FD0 bits.
 */
uint32_t client_fill_stdio(void);

/*
 * Send a request without a run (PROTO_KIND_STATUS, _WAIT or _STOP; flags as
 * the kind defines) and return the server's STATUS text in *ret_text (malloc'd).
 * Returns 0, -errno for connection errors, CLIENT_UNTRUSTED, or -EPROTO with the server's ERROR
 * text in *ret_text.
 */
int client_request(const struct zpaths *p, uint32_t kind, uint32_t flags, char **ret_text);

/* Look up key in "key=value\n" text. Returns a malloc'd value or NULL. */
char *client_status_get(const char *text, const char *key);

#endif
