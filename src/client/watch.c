/*
 * pytest-zygote watch: subscribe to the server's settled changes (a WATCH
 * request; the server does the watching) and run the tests on each batch,
 * each run made as `run` makes it (run.c), cancelled by the next change.
 * Keys on a terminal between runs. The terminal is pytest's during a run:
 * nothing here reads it or changes its modes then.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "client-internal.h"
#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/peer.h"
#include "zygote/proto.h"

/* What the next run is for. */
enum trigger {
	TRIGGER_NONE,
	TRIGGER_CHANGE, /* a settled batch of changes: affected tests, or all in mode all */
	TRIGGER_ALL,    /* Enter: every test ARGS select */
	TRIGGER_FAILED, /* f: the ones that failed last (--lf) */
};

struct watch {
	struct peer *sub;       /* the WATCH connection; NULL once the server hung up */
	long files;             /* files the server watches (its last CHANGES) */
	char changed[PATH_MAX]; /* the first path of the last batch, for the user */
	int nchanged;           /* paths in the batches since the last run started */
	int server_gone;
	char server_error[512];
	int affected; /* mode: a change runs the affected tests (1) or all (0) */
	int tty;      /* stdin is a terminal: its modes to restore */
	int keys;     /* keys are read (a terminal that has not ended) */
	struct termios saved;
	int raw; /* the terminal is in key mode now */
	int colour;
	char result_path[PATH_MAX];
	const struct zpaths *paths;
	int last_ran;     /* the status line's last run: whether one ran, ... */
	int last_code;    /* ... its exit code, */
	double last_secs; /* ... its wall time */
	long last_failed; /* ... and its failed count (-1: unknown) */
};

/*
 * How long watch waits for a server that hung up to come back before it
 * ends: `restart` (stop, then start) binds the new socket within a few
 * milliseconds of the old server's exit, so a watch outlives it; after
 * `stop`, or a server killed and not started again, it ends.
 */
#define RESUBSCRIBE_WAIT_MS 5000

/* The terminal's modes before watch changed them, for atexit. */
static struct termios *restore_at_exit;

/* Give the terminal its own modes back (before a run, and on every way out). */
static void
term_restore(struct watch *w)
{
	if (w->raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &w->saved);
		w->raw = 0;
	}
}

static void
term_restore_at_exit(void)
{
	if (restore_at_exit)
		tcsetattr(STDIN_FILENO, TCSANOW, restore_at_exit);
}

/* Key mode while waiting: one key at a time, not echoed; Ctrl-C still a signal. */
static void
term_keys(struct watch *w)
{
	if (!w->keys || w->raw)
		return;
	struct termios t = w->saved;
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
		w->raw = 1;
}

/* One CHANGES (or the server's ERROR) on the subscription. */
static int
sub_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	struct watch *w = arg;
	char text[PATH_MAX + 64];
	if (f->type == PROTO_MSG_ERROR) {
		snprintf(w->server_error, sizeof(w->server_error), "%.*s", (int)f->len, f->payload);
		w->server_gone = 1;
		return PEER_STOP;
	}
	if (f->type != PROTO_MSG_CHANGES)
		return 0;
	char *t = strndup(f->payload, f->len);
	if (!t)
		return 0;
	if (proto_kv_get(t, "files", text, sizeof(text)))
		w->files = strtol(text, NULL, 10);
	for (const char *l = t; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (strncmp(l, "changed=", 8) == 0) {
			if (w->nchanged++ == 0)
				snprintf(w->changed, sizeof(w->changed), "%.*s",
					 (int)strcspn(l + 8, "\n"), l + 8);
		} else if (strncmp(l, "more=", 5) == 0) {
			if (w->nchanged == 0)
				snprintf(w->changed, sizeof(w->changed), "files");
			w->nchanged += (int)strtol(l + 5, NULL, 10);
		}
	}
	free(t);
	return 0;
}

/* Read what the server sent; -1 once it hung up. */
static int
sub_read(struct watch *w)
{
	if (!w->sub)
		return -1;
	int r = peer_read(w->sub, sub_frame, w);
	if (r <= 0 || w->server_gone) {
		peer_destroy(w->sub);
		w->sub = NULL;
		w->server_gone = 1;
		return -1;
	}
	return 0;
}

/* Take every message already there, without waiting. */
static void
sub_drain(struct watch *w)
{
	while (w->sub) {
		struct pollfd pfd = { .fd = peer_fd(w->sub), .events = POLLIN };
		if (poll(&pfd, 1, 0) <= 0)
			return;
		sub_read(w);
	}
}

/* The run's hook: a change during the run cancels it. */
static int
run_hook_readable(void *arg)
{
	struct watch *w = arg;
	int before = w->nchanged;
	if (sub_read(w) < 0)
		return -1;
	return w->nchanged > before;
}

/* Send the WATCH request on fd (taken) and read the first CHANGES: 0, or
 * -1 with w->sub gone (w->server_error says why, if the server did). */
static int
request_watch(struct watch *w, int fd)
{
	w->server_gone = 0;
	w->server_error[0] = '\0';
	w->files = -1;
	w->sub = peer_create(fd);
	if (!w->sub) {
		close(fd);
		return -1;
	}
	struct proto_request req = { .kind = PROTO_KIND_WATCH };
	int r = peer_send_request(w->sub, -1, NULL, 0, &req);
	while (r == 0 && w->files < 0)
		r = sub_read(w);
	if (r < 0 && w->sub) {
		peer_destroy(w->sub);
		w->sub = NULL;
	}
	return r < 0 ? -1 : 0;
}

/* The server hung up: wait up to RESUBSCRIBE_WAIT_MS for one to listen
 * again (a restart) and subscribe to it. 0 once subscribed; -1 if none
 * came, or a signal to end came meanwhile. */
static int
resubscribe(struct watch *w, int sigfd)
{
	char why[sizeof(w->server_error)];
	snprintf(why, sizeof(why), "%s", w->server_error);
	long long end = now_ms() + RESUBSCRIBE_WAIT_MS;
	for (;;) {
		int fd = client_connect(w->paths);
		if (fd == CLIENT_UNTRUSTED)
			break;
		if (fd >= 0 && request_watch(w, fd) == 0) {
			log_info("the server for %s is back; watching again (saves made while it "
				 "was away run nothing by themselves)",
				 w->paths->root);
			return 0;
		}
		if (now_ms() >= end)
			break;
		struct pollfd pfd = { .fd = sigfd, .events = POLLIN };
		struct signalfd_siginfo si;
		if (poll(&pfd, 1, 50) > 0 && read(sigfd, &si, sizeof(si)) == sizeof(si) &&
		    si.ssi_signo != SIGWINCH)
			break; /* Ctrl-C and the like: end now */
	}
	w->server_gone = 1;
	snprintf(w->server_error, sizeof(w->server_error), "%s", why);
	return -1;
}

/* Subscribe: 0, or the exit code after saying why not. */
static int
subscribe(const struct opts *o, const struct zpaths *p, struct watch *w)
{
	int r, fd = client_connect(p);
	if ((fd == -ENOENT || fd == -ECONNREFUSED) && o->start_if_needed) {
		struct opts so = *o;
		so.quiet = 1;
		if ((r = do_start(&so, p)) != 0)
			return r;
		fd = client_connect(p);
	}
	if (fd == CLIENT_UNTRUSTED)
		return ZEXIT_UNTRUSTED;
	if (fd == -ENOENT || fd == -ECONNREFUSED)
		return no_server(p);
	if (fd < 0) {
		log_error("cannot reach the server at %s: %s", p->sock, strerror(-fd));
		return ZEXIT_INTERNAL;
	}
	r = request_watch(w, fd);
	if (r < 0) {
		if (strstr(w->server_error, "unknown request kind")) {
			log_error("the server for %s is an older build without watch; replace "
				  "it: pytest-zygote restart --root %s",
				  p->root, p->root);
			return ZEXIT_MISMATCH;
		}
		log_error("the server did not take the watch: %s",
			  w->server_error[0] ? w->server_error : "it hung up");
		return strstr(w->server_error, "too many") ? ZEXIT_RETRY : ZEXIT_INTERNAL;
	}
	return 0;
}

/* The failed count the run's child wrote (PYTEST_ZYGOTE_RESULT_FILE), or -1. */
static long
read_failed(const struct watch *w)
{
	char buf[256], v[32];
	if (!w->result_path[0])
		return -1;
	int fd = open(w->result_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if (!proto_kv_get(buf, "failed", v, sizeof(v)))
		return -1;
	return strtol(v, NULL, 10);
}

/* "watching N files; last run X s; K failed", on stdout (the output's). */
static void
print_status(const struct watch *w, int ran, int code, double secs, long failed)
{
	char line[512], tail[128] = "";
	int len = snprintf(line, sizeof(line), "watching %ld file%s", w->files,
			   w->files == 1 ? "" : "s");
	if (ran && failed >= 0)
		len += snprintf(line + len, sizeof(line) - (size_t)len,
				"; last run %.2f s; %ld failed", secs, failed);
	else if (ran)
		len += snprintf(line + len, sizeof(line) - (size_t)len,
				"; last run %.2f s; exit code %d", secs, code);
	snprintf(line + len, sizeof(line) - (size_t)len, " [%s]", w->affected ? "affected" : "all");
	if (w->keys)
		snprintf(tail, sizeof(tail), "  Enter: all, f: failed, a: affected/all, q: quit");
	fflush(stdout);
	if (w->colour) {
		const char *c = !ran ? "\033[1m" : code == 0 ? "\033[1;32m" : "\033[1;31m";
		dprintf(STDOUT_FILENO, "%s%s\033[0m\033[2m%s\033[0m\n", c, line, tail);
	} else {
		dprintf(STDOUT_FILENO, "%s%s\n", line, tail);
	}
}

/* The arguments of one run: ARGS, and --lf for f. */
static char **
run_args(int nargs, char **args, enum trigger t, int *ret_n)
{
	char **v = calloc((size_t)nargs + 2, sizeof(char *));
	if (!v)
		return NULL;
	for (int i = 0; i < nargs; i++)
		v[i] = args[i];
	*ret_n = nargs;
	if (t == TRIGGER_FAILED)
		v[(*ret_n)++] = "--lf";
	return v;
}

/* Wait for a change, a key or a signal: the next run's trigger, or
 * TRIGGER_NONE with *ret_quit set to quit. */
static enum trigger
wait_next(struct watch *w, int sigfd, int *ret_quit)
{
	for (;;) {
		if (w->nchanged > 0)
			return TRIGGER_CHANGE;
		if (!w->sub) {
			if (resubscribe(w, sigfd) == 0) {
				print_status(w, w->last_ran, w->last_code, w->last_secs,
					     w->last_failed);
				continue;
			}
			*ret_quit = 1;
			return TRIGGER_NONE;
		}
		term_keys(w);
		struct pollfd pfd[3] = {
			{ .fd = peer_fd(w->sub), .events = POLLIN },
			{ .fd = sigfd, .events = POLLIN },
			{ .fd = w->keys ? STDIN_FILENO : -1, .events = POLLIN },
		};
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			*ret_quit = 1;
			return TRIGGER_NONE;
		}
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
				int sig = (int)si.ssi_signo;
				if (sig == SIGTSTP) {
					/* Stopped with the terminal's own modes; key mode
					 * again on fg. */
					term_restore(w);
					raise(SIGSTOP);
				} else if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP ||
					   sig == SIGQUIT) {
					*ret_quit = 1;
					return TRIGGER_NONE;
				}
			}
		}
		if (pfd[0].revents)
			sub_read(w);
		if (pfd[2].revents & POLLIN) {
			char k;
			ssize_t n = read(STDIN_FILENO, &k, 1);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				w->keys = 0; /* end of input: no more keys */
				continue;
			}
			switch (k) {
			case '\r':
			case '\n':
				return TRIGGER_ALL;
			case 'f':
			case 'F':
				return TRIGGER_FAILED;
			case 'a':
			case 'A':
				w->affected = !w->affected;
				print_status(w, 0, 0, 0, -1);
				break;
			case 'q':
			case 'Q':
				*ret_quit = 1;
				return TRIGGER_NONE;
			default:
				break;
			}
		} else if (pfd[2].revents) {
			w->keys = 0; /* hung up */
		}
	}
}

/* `watch`: run the tests on every settled change until q or Ctrl-C; the last run's exit code. */
/*
 * The result files of watches that are gone (killed with -9: nothing of
 * theirs ran at exit). A file whose pid lives is another watch's, or a
 * recycled pid's; it stays, and its owner removes it.
 */
static void
sweep_results(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		int pid, end = 0;
		if (sscanf(e->d_name, "watch-%d.result%n", &pid, &end) != 1 ||
		    e->d_name[end] != '\0' || end == 0 || pid <= 0 || pid == getpid())
			continue;
		if (kill(pid, 0) < 0 && errno == ESRCH)
			unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
}

int
cmd_watch(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	struct watch w = { .affected = 1, .files = -1, .paths = p, .last_failed = -1 };
	/* Our signals come through a signalfd, blocked for good: a run
	 * (client_run) takes them while it is in progress. */
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGWINCH };
	sigset_t set;
	sigemptyset(&set);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	_cleanup_close_ int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0) {
		log_error("signalfd: %s", strerror(errno));
		return ZEXIT_INTERNAL;
	}
	int r = subscribe(o, p, &w);
	if (r != 0) {
		peer_destroy(w.sub);
		return r;
	}
	w.tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &w.saved) == 0;
	w.keys = w.tty;
	if (w.tty) {
		static struct termios at_exit;
		at_exit = w.saved;
		restore_at_exit = &at_exit;
		atexit(term_restore_at_exit);
	}
	w.colour = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
	sweep_results(p->dir);
	if ((size_t)snprintf(w.result_path, sizeof(w.result_path), "%s/watch-%d.result", p->dir,
			     (int)getpid()) >= sizeof(w.result_path))
		w.result_path[0] = '\0'; /* no counts: the status line says the exit code */

	int last = 0, quit = 0;
	print_status(&w, 0, 0, 0, -1);
	while (!quit) {
		enum trigger t = wait_next(&w, sigfd, &quit);
		if (quit)
			break;
		term_restore(&w);
		sub_drain(&w); /* the changes already here go with this run */
		w.nchanged = 0;
		if (t == TRIGGER_CHANGE && w.affected)
			setenv("PYTEST_ZYGOTE_AFFECTED", "1", 1);
		else
			unsetenv("PYTEST_ZYGOTE_AFFECTED");
		if (w.result_path[0]) {
			setenv("PYTEST_ZYGOTE_RESULT_FILE", w.result_path, 1);
			unlink(w.result_path);
		}
		int n;
		char **v = run_args(nargs, args, t, &n);
		if (!v)
			return ZEXIT_INTERNAL;
		struct client_run_hook hook = {
			.fd = w.sub ? peer_fd(w.sub) : -1,
			.readable = run_hook_readable,
			.arg = &w,
		};
		long long t0 = now_ms();
		int code = run_once(o, p, n, v, &hook);
		double secs = (double)(now_ms() - t0) / 1000.0;
		free(v);
		if (hook.cancelled && w.nchanged > 0 && !hook.quit_signal) {
			log_info("run cancelled: %s changed", w.changed);
			continue; /* the next run starts at once */
		}
		last = code;
		w.last_ran = 1;
		w.last_code = code;
		w.last_secs = secs;
		w.last_failed = read_failed(&w);
		print_status(&w, 1, code, secs, w.last_failed);
		if (hook.quit_signal || code == ZEXIT_NOSERVER || code == ZEXIT_UNTRUSTED ||
		    code == ZEXIT_MISMATCH || code == ZEXIT_NOSTART)
			break;
	}
	term_restore(&w);
	if (w.result_path[0])
		unlink(w.result_path);
	unsetenv("PYTEST_ZYGOTE_RESULT_FILE");
	peer_destroy(w.sub);
	if (w.server_gone) {
		log_error("the server for %s went away (%s); watch ends. Start it again "
			  "(pytest-zygote start), then watch again",
			  p->root, w.server_error[0] ? w.server_error : "it was stopped or killed");
		return ZEXIT_NOSERVER;
	}
	return last;
}
