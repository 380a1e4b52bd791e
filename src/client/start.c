/*
 * pytest-zygote start: check what a server needs, then exec
 * pytest-zygote-server in the foreground, or detached with a progress line
 * until its one-line report. It waits on that report, never by sleeping.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client-internal.h"
#include "config.h"
#include "zygote/common.h"
#include "zygote/conf.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/sandbox.h"

/* Precedence: flags > environment > the project's config section > defaults. */
static void
setenv_default(const char *name, const char *value)
{
	if (!getenv(name))
		setenv(name, value, 1);
}

/* The section's settings a server reads from its environment. */
static void
apply_start_env(const struct zconf *c)
{
	char v[32];
	if (c->settle_ms >= 0) {
		snprintf(v, sizeof(v), "%d", c->settle_ms);
		setenv_default("PYTEST_ZYGOTE_SETTLE_MS", v);
	}
	if (c->poll_ms >= 0) {
		snprintf(v, sizeof(v), "%d", c->poll_ms);
		setenv_default("PYTEST_ZYGOTE_POLL_MS", v);
	}
	if (c->watch_globs[0])
		setenv_default("PYTEST_ZYGOTE_WATCH_GLOBS", c->watch_globs);
	if (c->ignore_globs[0])
		setenv_default("PYTEST_ZYGOTE_IGNORE_GLOBS", c->ignore_globs);
	if (c->spare >= 0)
		setenv_default("PYTEST_ZYGOTE_SPARE", c->spare ? "1" : "0");
	if (c->collect_ahead_ms >= 0) {
		snprintf(v, sizeof(v), "%d", c->collect_ahead_ms);
		setenv_default("PYTEST_ZYGOTE_COLLECT_AHEAD_MS", v);
	}
	if (c->stable_layout >= 0)
		setenv_default("PYTEST_ZYGOTE_STABLE_LAYOUT", c->stable_layout ? "1" : "0");
	if (c->sandbox >= 0)
		setenv_default("PYTEST_ZYGOTE_SANDBOX", c->sandbox == SANDBOX_NO_NETWORK
								? "no-network"
							: c->sandbox ? "on"
								     : "off");
	if (c->max_runs >= 0) {
		snprintf(v, sizeof(v), "%d", c->max_runs);
		setenv_default("PYTEST_ZYGOTE_MAX_RUNS", v);
	}
	if (c->reload_fresh >= 0)
		setenv_default("PYTEST_ZYGOTE_RELOAD", c->reload_fresh ? "fresh" : "child");
	if (c->idle_timeout_ms >= 0) {
		snprintf(v, sizeof(v), "%.3f", c->idle_timeout_ms / 1000.0);
		setenv_default("PYTEST_ZYGOTE_IDLE_TIMEOUT", v);
	}
	if (c->wait_timeout_ms >= 0) {
		snprintf(v, sizeof(v), "%.3f", c->wait_timeout_ms / 1000.0);
		setenv_default("PYTEST_ZYGOTE_WAIT_TIMEOUT", v);
	}
}

/* What `start` shows while the first generation warms up. */
struct progress {
	int tty;
	int shown;
	long long t0;
	char phase[160];
	char modules[32];
};

/* "modules=N phase=TEXT" (the phase is last: it may hold spaces). */
static void
progress_parse(struct progress *pr, const char *text)
{
	const char *ph = strstr(text, "phase=");
	if (strncmp(text, "modules=", 8) == 0)
		snprintf(pr->modules, sizeof(pr->modules), "%.*s", (int)strcspn(text + 8, " "),
			 text + 8);
	if (ph)
		snprintf(pr->phase, sizeof(pr->phase), "%s", ph + 6);
}

/* Redraw the one status line, cut to the terminal's width. */
static void
progress_draw(struct progress *pr, const char *root)
{
	char buf[512];
	const char *base = strrchr(root, '/');
	base = base && base[1] ? base + 1 : root;
	/* Elapsed time and modules first: a narrow terminal cuts the phase. */
	int n = snprintf(buf, sizeof(buf), "pytest-zygote: warming up %s (%.1f s", base,
			 (double)(now_ms() - pr->t0) / 1000.0);
	if (n > 0 && (size_t)n < sizeof(buf) && *pr->modules)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, ", %s modules", pr->modules);
	if (n > 0 && (size_t)n < sizeof(buf))
		snprintf(buf + n, sizeof(buf) - (size_t)n, "): %s", pr->phase);
	struct winsize ws;
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 &&
	    ws.ws_col - 1 < (int)sizeof(buf))
		buf[ws.ws_col - 1] = '\0';
	fprintf(stderr, "\r\033[K%s", buf);
	fflush(stderr);
	pr->shown = 1;
}

/*
 * Become the server: exec `pytest-zygote-server supervise` with the resolved
 * root, interpreter and instance, the project's settings in the environment,
 * and fd (if >= 0) passed on as fd_opt. Returns only when exec failed.
 */
static void
exec_server(const char *server, const struct opts *o, const struct zpaths *p, const char *fd_opt,
	    int fd)
{
	const char *argv[16];
	char fdbuf[16];
	int n = 0;
	argv[n++] = PATHS_SERVER_NAME;
	argv[n++] = "supervise";
	argv[n++] = "--root";
	argv[n++] = p->root;
	if (o->instance && *o->instance) {
		argv[n++] = "--instance";
		argv[n++] = o->instance;
	}
	argv[n++] = "--python";
	argv[n++] = o->python;
	argv[n++] = "--client-version";
	argv[n++] = PYZ_VERSION;
	if (o->foreground)
		argv[n++] = "--foreground";
	if (fd >= 0) {
		snprintf(fdbuf, sizeof(fdbuf), "%d", fd);
		argv[n++] = fd_opt;
		argv[n++] = fdbuf;
		fcntl(fd, F_SETFD, 0); /* the server sets it close-on-exec again */
	}
	argv[n] = NULL;
	apply_start_env(&o->conf);
	execv(server, (char **)argv);
}

/* Set by SIGINT while start waits for the report. */
static volatile sig_atomic_t interrupted;

static void
on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/*
 * Detach a server (double fork, new session, stdio to /dev/null and the log,
 * exec pytest-zygote-server) and wait for its one-line report on a pipe.
 * Ctrl-C stops the waiting, not the server: it is in a session of its own
 * and keeps warming up, and we say so (exit 130, as a process killed by
 * SIGINT). Stopping it would throw away a warm-up that the next run wants;
 * idle_timeout stops it if nothing ever uses it.
 */
static int
start_detached(const struct opts *o, const struct zpaths *p, const char *server)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		log_error("pipe: %s", strerror(errno));
		return ZEXIT_NOSTART;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return ZEXIT_NOSTART;
	}
	if (pid == 0) {
		close(pfd[0]);
		setsid();
		if (fork() != 0)
			_exit(0);
		/* Out of 0..2, which are about to become /dev/null and the log. */
		int report = fcntl(pfd[1], F_DUPFD_CLOEXEC, 3);
		int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		/* The log in the directory as checked (not a path swapped since),
		 * never through a symlink. Not truncated here: a server may
		 * already run for this root and be writing it; the server
		 * truncates it once it holds the pid lock (supervisor.c). */
		char err[PATHS_ERR_MAX];
		int dfd = paths_open_dir(p->dir, getuid(), err, sizeof(err));
		if (dfd < 0) {
			dprintf(report, "error %s\n", err);
			_exit(ZEXIT_NOSTART);
		}
		int logfd = openat(dfd, strrchr(p->log, '/') + 1,
				   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
		/* A first line, written here: a log we cannot write (a full disk)
		 * would otherwise surface later as the project's warm-up failing. */
		if (logfd < 0 ||
		    dprintf(logfd, "pytest-zygote start: the server for %s\n", p->root) < 0) {
			int e = errno;
			dprintf(report, "error cannot write the log '%s': %s%s\n", p->log,
				strerror(e),
				e == ENOSPC || e == EDQUOT
					? "; the file system of the runtime directory is full: "
					  "free space there or set PYTEST_ZYGOTE_RUNTIME_DIR to "
					  "another directory"
					: "");
			_exit(ZEXIT_NOSTART);
		}
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(logfd, 2);
		/*
		 * Nothing else of the caller's: the server outlives it, and a
		 * pipe it held open (a CI step's output, an editor's) would
		 * never see end-of-file, and every test child would find it
		 * on a low number.
		 */
		if (report >= 3) {
			close_range(3, (unsigned)report - 1, 0);
			close_range((unsigned)report + 1, ~0U, 0);
		}
		exec_server(server, o, p, "--report-fd", report);
		dprintf(report, "error cannot run the server '%s': %s\n", server, strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	struct sigaction sa = { .sa_handler = on_sigint }, old_sa;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_sa); /* no SA_RESTART: poll returns EINTR */
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;

	/*
	 * Read "progress ..." lines until the one report line. On a terminal,
	 * after a second, keep one status line up to date: phase, modules
	 * imported, elapsed time. Elsewhere print only the result.
	 */
	struct progress pr = { .tty = isatty(STDERR_FILENO), .t0 = now_ms() };
	snprintf(pr.phase, sizeof(pr.phase), "starting Python");
	char line[1300];
	size_t len = 0;
	for (;;) {
		if (interrupted)
			break;
		char *nl = memchr(line, '\n', len);
		if (nl && strncmp(line, "progress ", 9) == 0) {
			*nl = '\0';
			progress_parse(&pr, line + 9);
			size_t used = (size_t)(nl + 1 - line);
			memmove(line, nl + 1, len - used);
			len -= used;
			continue;
		}
		if (nl || len == sizeof(line) - 1)
			break;
		if (pr.tty && now_ms() - pr.t0 >= 1000)
			progress_draw(&pr, p->root);
		struct pollfd pp = { .fd = pfd[0], .events = POLLIN };
		int k = poll(&pp, 1, pr.tty ? 100 : -1);
		if (k <= 0)
			continue;
		ssize_t n = read(pfd[0], line + len, sizeof(line) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(pfd[0]);
	sigaction(SIGINT, &old_sa, NULL);
	if (pr.shown)
		fputs("\r\033[K", stderr);
	if (interrupted) {
		char which[PATH_MAX + 300];
		snprintf(which, sizeof(which), "--root %s%s%s", p->root,
			 o->instance && *o->instance ? " --instance " : "",
			 o->instance && *o->instance ? o->instance : "");
		log_warn("interrupted; the server for %s keeps warming up in the background: "
			 "`pytest-zygote status %s` shows it, `pytest-zygote stop %s` stops it",
			 p->root, which, which);
		return 128 + SIGINT;
	}
	line[len] = '\0';
	line[strcspn(line, "\n")] = '\0';
	return print_report(p, line, o->quiet);
}

int
check_env_failed(char *errs)
{
	for (char *line = strtok(errs, "\n"); line; line = strtok(NULL, "\n"))
		log_error("%s", line);
	return -1;
}

int
do_start(const struct opts *o, const struct zpaths *p)
{
	struct stat st;
	if (stat(p->root, &st) < 0 || !S_ISDIR(st.st_mode)) {
		log_error("the project root '%s' is not a directory; pass --root DIR", p->root);
		return ZEXIT_USAGE;
	}
	if (access(o->python, X_OK) != 0) {
		log_error("the interpreter '%s' is not an executable file; pass --python PATH",
			  o->python);
		return ZEXIT_USAGE;
	}
	/* What the server reads from the environment, checked (and normalized)
	 * by conf.c's table, here where every start passes: start, restart,
	 * run --start-if-needed and a run's variant zygote. */
	char errs[4096];
	if (conf_check_env(CONF_AT_START, errs, sizeof(errs)) > 0) {
		check_env_failed(errs);
		return ZEXIT_USAGE;
	}
	/* The sandbox policy: the variable wins over the section. */
	const char *sb = getenv("PYTEST_ZYGOTE_SANDBOX");
	int mode = sb && *sb ? conf_parse_sandbox(sb) : o->conf.sandbox;
	if (!HAVE_SECCOMP && mode == SANDBOX_NO_NETWORK) {
		log_error(
			"sandbox = no-network needs seccomp, but this pytest-zygote was built "
			"with -Dseccomp=disabled; rebuild it with libseccomp or use sandbox = on");
		return ZEXIT_USAGE;
	}
	char exe[PATH_MAX], server[PATH_MAX], err[PATHS_ERR_MAX];
	int r = paths_self_exe(exe, sizeof(exe));
	if (r < 0) {
		log_error("cannot find this program (/proc/self/exe): %s", strerror(-r));
		return ZEXIT_NOSTART;
	}
	if (paths_server_exe(exe, PYZ_BINDIR, server, sizeof(server), err, sizeof(err)) < 0) {
		log_error("%s", err);
		return ZEXIT_NOSTART;
	}
	if (!o->foreground)
		return start_detached(o, p, server);
	/* The foreground server is this process: same pid, stdio and ready fd. */
	fflush(NULL);
	exec_server(server, o, p, "--ready-fd", o->ready_fd);
	log_error("cannot run the server '%s': %s", server, strerror(errno));
	return ZEXIT_NOSTART;
}

/* `start`: do_start, which run also calls to start a server it needs. */
int
cmd_start(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	return do_start(o, p);
}
