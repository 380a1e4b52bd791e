/*
 * pytest-zygote: the command line. Parses subcommands and options, finds the
 * project root and the paths, and talks to the server as a client; `start`
 * execs pytest-zygote-server (server-main.c). This binary links nothing but
 * libc and inih, so a run or a status costs little more than a process start:
 * keep libpython, libseccomp and libbsd out of it. Exit codes are documented
 * in README.md and in --help.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/conf.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/proto.h"
#include "zygote/sandbox.h"
#include "zygote/supervisor.h"

static const char usage_text[] =
	"Usage: pytest-zygote COMMAND [OPTIONS]\n"
	"\n"
	"A fork server for pytest: keep pytest, its plugins and your project imported\n"
	"in a warm process and fork a fresh child for every run.\n"
	"\n"
	"Commands:\n"
	"  start     start the server for a project and wait until it is warm\n"
	"  run       run pytest in a fork of the warm server: pytest-zygote run -- ARGS\n"
	"  stop      stop the server (running tests may finish first)\n"
	"  restart   stop, then start\n"
	"  status    show the server's pid, generation, modules, runs and memory\n"
	"\n"
	"Common options:\n"
	"  --root DIR      the project root (default: the rootdir pytest picks from\n"
	"                  the current directory)\n"
	"  --instance NAME select another server for the same root\n"
	"  -h, --help      help for a command: pytest-zygote COMMAND --help\n"
	"  --version       print the version\n"
	"\n"
	"Exit codes: pytest's own (0-5); 128+N when the test process died of signal N;\n"
	"64 usage error; 69 no server running; 70 internal or protocol error; 71 the\n"
	"server could not be started; 75 the zygote died during the run (run again);\n"
	"77 the test process could not be sandboxed (the message says why; see\n"
	"sandbox below).\n"
	"\n"
	"Settings: flags > environment > the project's [pytest-zygote] section (in\n"
	".pytest-zygote.ini, pytest.ini, tox.ini, setup.cfg, or [tool.pytest-zygote] in\n"
	"pyproject.toml) > defaults. Variables: PYTEST_ZYGOTE_RUNTIME_DIR (where sockets\n"
	"live), PYTEST_ZYGOTE_PYTHON, PYTEST_ZYGOTE_SETTLE_MS, PYTEST_ZYGOTE_POLL_MS,\n"
	"PYTEST_ZYGOTE_WATCH_GLOBS, PYTEST_ZYGOTE_IGNORE_GLOBS, PYTEST_ZYGOTE_SPARE,\n"
	"PYTEST_ZYGOTE_SANDBOX, PYTEST_ZYGOTE_START_IF_NEEDED, PYTEST_ZYGOTE_MAX_RUNS,\n"
	"PYTEST_ZYGOTE_STABLE_LAYOUT, PYTEST_ZYGOTE_INTERRUPT_TIMEOUT, PYTEST_ZYGOTE_DEBUG,\n"
	"PYTEST_ZYGOTE_LEARN_SECONDS (how long warm-up's learning run collects),\n"
	"PYTEST_ZYGOTE_RELOAD (child or fresh: how runs follow an edit),\n"
	"PYTEST_ZYGOTE_VARIANTS (zygotes kept for other environments, default 3),\n"
	"PYTEST_ZYGOTE_VARIANT_IDLE (seconds before an unused one stops, default 1800),\n"
	"PYTEST_ZYGOTE_PYDIR (where the pytest_zygote package is),\n"
	"PYTEST_ZYGOTE_SERVER (the pytest-zygote-server that start runs; default: the\n"
	"one next to this program), NO_COLOR. For measuring, in the environment of run:\n"
	"PYTEST_ZYGOTE_TIMING=1 (the child's CPU time and page faults on stderr),\n"
	"PYTEST_ZYGOTE_PROFILE=FILE (the child's cProfile statistics). In the environment\n"
	"of run, PYTEST_ZYGOTE_HASH_SEED=per-run gives the run a zygote (so a hash seed)\n"
	"of its own, as each cold run has. A run whose interpreter settings\n"
	"(PYTHONHASHSEED, PYTHONDEVMODE, ...) or whose variables read at import by\n"
	"libraries differ from the zygote's runs in a zygote started with its\n"
	"environment (the first such run waits for its warm-up).\n"
	"pytest-hot-reloading's PYTEST_DAEMON_WATCH_GLOBS and\n"
	"PYTEST_DAEMON_IGNORE_WATCH_GLOBS keep its meaning (fnmatch over whole paths).\n"
	"\n"
	"The pytest plugin and the start hook (python3 -m pytest_zygote.hook install)\n"
	"hand a pytest command to a running zygote; see README.md.\n"
	"\n"
	"Sandbox (key 'sandbox', PYTEST_ZYGOTE_SANDBOX, read by start): on (default) keeps\n"
	"tests from signalling, tracing or writing the memory of the server; no-network\n"
	"also refuses sockets other than AF_UNIX and AF_NETLINK (EACCES); off disables it.\n"
	"See README.md.\n";

static const char start_help[] =
	"Usage: pytest-zygote start [--root DIR] [--python PATH] [--max-runs N] [--foreground]\n"
	"                           [--ready-fd N]\n"
	"\n"
	"Start the server for a project root and return once it is warm: pytest, its\n"
	"plugins and the modules a learning collection run imports, other than test\n"
	"modules and conftest files, which every run executes itself. The learning run\n"
	"collects for at most PYTEST_ZYGOTE_LEARN_SECONDS (default 5).\n"
	"Prints one line: pid, socket, modules imported, warm-up time. If a server\n"
	"already runs for this root, reports it and exits 0.\n"
	"\n"
	"  --root DIR      project root (default: pytest's rootdir from the cwd)\n"
	"  --python PATH   interpreter whose environment to use, e.g. .venv/bin/python\n"
	"                  (default: the virtualenv's python when this binary is in\n"
	"                  one's bin/, else " PYZ_DEFAULT_PYTHON ");\n"
	"                  must be Python " PYZ_PY_VERSION "\n"
	"  --max-runs N    runs in progress at once; more wait their turn (default:\n"
	"                  twice the CPUs, at least 8; 0: no limit; PYTEST_ZYGOTE_MAX_RUNS)\n"
	"  --foreground    do not detach; log to stderr; stop with Ctrl-C or SIGTERM\n"
	"  --ready-fd N    write a newline to fd N when warm (with --foreground)\n"
	"  --instance NAME another server for the same root\n";

static const char run_help[] =
	"Usage: pytest-zygote run [--root DIR] [--start-if-needed] [--] [PYTEST ARGS...]\n"
	"\n"
	"Run pytest with ARGS in a fresh fork of the warm server, in the current\n"
	"directory, with this environment and this terminal. Exits with pytest's exit\n"
	"code. Options of pytest-zygote come first; everything from the first other\n"
	"argument (or after --) goes to pytest.\n"
	"\n"
	"  --root DIR          project root (default: pytest's rootdir from the cwd)\n"
	"  --start-if-needed   start the server first when none is running\n"
	"  --instance NAME     another server for the same root\n";

static const char stop_help[] =
	"Usage: pytest-zygote stop [--root DIR] [--grace SECONDS]\n"
	"\n"
	"Stop the server. Running tests get SECONDS (default 5) to finish, then are\n"
	"killed. The socket and pid file are removed.\n";

static const char restart_help[] =
	"Usage: pytest-zygote restart [--root DIR] [--python PATH] [--max-runs N] [--grace SECONDS]\n"
	"\n"
	"Stop the server if one runs, then start a new one (see start --help).\n";

static const char status_help[] =
	"Usage: pytest-zygote status [--root DIR] [--json]\n"
	"\n"
	"Show pid, root, interpreter, uptime, generation, modules imported, runs served,\n"
	"runs in progress and queued, max_runs, the zygote's memory and the sandbox\n"
	"(seccomp, seccomp no-network, off, none, or failed: WHY). Exits 69 when no\n"
	"server runs.\n";

struct opts {
	const char *root;
	const char *instance;
	const char *python;
	int foreground;
	int ready_fd;
	int start_if_needed;
	int json;
	int grace_ms;
	int quiet; /* start messages to stderr (auto-start from run) */
	int python_set, grace_set, start_if_needed_set;
	struct zconf conf; /* the project's config section */
};

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
	if (c->stable_layout >= 0)
		setenv_default("PYTEST_ZYGOTE_STABLE_LAYOUT", c->stable_layout ? "1" : "0");
	if (c->sandbox >= 0)
		setenv_default("PYTEST_ZYGOTE_SANDBOX", c->sandbox == SANDBOX_NO_NETWORK ? "no-network"
							: c->sandbox ? "on" : "off");
	if (c->max_runs >= 0) {
		snprintf(v, sizeof(v), "%d", c->max_runs);
		setenv_default("PYTEST_ZYGOTE_MAX_RUNS", v);
	}
	if (c->reload_fresh >= 0)
		setenv_default("PYTEST_ZYGOTE_RELOAD", c->reload_fresh ? "fresh" : "child");
}

/* Colour on stdout (asked once: status asks for every row). */
static int
color(void)
{
	static int on = -1;
	if (on < 0)
		on = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
	return on;
}

static int
resolve_paths(const struct opts *o, struct zpaths *p)
{
	char root[PATH_MAX], err[PATHS_ERR_MAX];
	if (o->root) {
		snprintf(root, sizeof(root), "%s", o->root);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)) || paths_find_rootdir(cwd, root, sizeof(root)) < 0) {
			log_error("cannot determine the project root: %s; pass --root DIR",
				  strerror(errno));
			return -1;
		}
	}
	if (paths_for_root(p, root, o->instance, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	return 0;
}

static int
print_running(const struct zpaths *p, int to_stderr)
{
	char *text = NULL;
	/* Wait until that server is warm, so a second `start` means "ready" too. */
	int r = client_request(p, PROTO_KIND_WAIT, 0, &text);
	if (r < 0) {
		log_error("a server for %s is starting or stopping; try again (%s)", p->root,
			  text ? text : strerror(-r));
		free(text);
		return ZEXIT_NOSTART;
	}
	char *pid = client_status_get(text, "pid");
	fprintf(to_stderr ? stderr : stdout,
		"pytest-zygote: already running for %s (pid %s, socket %s)\n", p->root,
		pid ? pid : "?", p->sock);
	free(pid);
	free(text);
	return 0;
}

/* Parse the supervisor's one-line report and print the result of `start`. */
static int
print_report(const struct zpaths *p, const char *line, int to_stderr)
{
	FILE *out = to_stderr ? stderr : stdout;
	if (strncmp(line, "ready ", 6) == 0) {
		int pid = 0, threads = 1;
		char mods[32] = "?", status[300] = "";
		double warm = 0;
		sscanf(line, "ready pid=%d modules=%31s warmup_s=%lf threads=%d status=%299[^\n]",
		       &pid, mods, &warm, &threads, status);
		fprintf(out, "pytest-zygote: %sready%s pid %d, socket %s, %s modules, warm-up %.2f s\n",
			color() && !to_stderr ? "\033[32m" : "", color() && !to_stderr ? "\033[0m" : "",
			pid, p->sock, mods, warm);
		if (threads > 1)
			log_warn("%d threads were running after warm-up; see %s", threads, p->log);
		if (*status && strcmp(status, "ok") != 0)
			log_warn("learning run: %s (runs show the errors as plain pytest "
				 "would)",
				 status);
		return 0;
	}
	if (strncmp(line, "running ", 8) == 0)
		return print_running(p, to_stderr);
	if (strncmp(line, "error ", 6) == 0) {
		log_error("could not start the server for %s: %s", p->root, line + 6);
		return ZEXIT_NOSTART;
	}
	log_error("could not start the server for %s; see %s", p->root, p->log);
	return ZEXIT_NOSTART;
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
exec_server(const char *server, const struct opts *o, const struct zpaths *p,
	    const char *fd_opt, int fd)
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

/*
 * Detach a server (double fork, new session, stdio to /dev/null and the log,
 * exec pytest-zygote-server) and wait for its one-line report on a pipe.
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
		int logfd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(logfd >= 0 ? logfd : devnull, 2);
		exec_server(server, o, p, "--report-fd", report);
		dprintf(report, "error cannot run the server '%s': %s\n", server, strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
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
	if (pr.shown)
		fputs("\r\033[K", stderr);
	line[len] = '\0';
	line[strcspn(line, "\n")] = '\0';
	return print_report(p, line, o->quiet);
}

static int
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
	/* The sandbox policy: the variable wins over the section (which conf.c checked). */
	const char *sb = getenv("PYTEST_ZYGOTE_SANDBOX");
	int mode = sb && *sb ? conf_parse_sandbox(sb) : o->conf.sandbox;
	if (sb && *sb && mode < 0) {
		log_error("PYTEST_ZYGOTE_SANDBOX='%s' is not on, off or no-network", log_escape(sb));
		return ZEXIT_USAGE;
	}
	const char *rl = getenv("PYTEST_ZYGOTE_RELOAD");
	if (rl && *rl && strcmp(rl, "child") != 0 && strcmp(rl, "fresh") != 0) {
		log_error("PYTEST_ZYGOTE_RELOAD='%s' is not child or fresh", log_escape(rl));
		return ZEXIT_USAGE;
	}
	if (!HAVE_SECCOMP && mode == SANDBOX_NO_NETWORK) {
		log_error("sandbox = no-network needs seccomp, but this pytest-zygote was built "
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

/* How the user starts a zygote, when the pytest plugin handed the run over. */
static char *start_hint;

static int
no_server(const struct zpaths *p)
{
	if (start_hint)
		log_error("no zygote is running for %s; start one with: %s", p->root, start_hint);
	else
		log_error("no zygote is running for %s; start one with: pytest-zygote start "
			  "--root %s (or use run --start-if-needed)",
			  p->root, p->root);
	return ZEXIT_NOSERVER;
}

static int
cmd_status(const struct opts *o, const struct zpaths *p)
{
	char *text = NULL;
	int r = client_request(p, PROTO_KIND_STATUS, 0, &text);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		if (o->json) {
			printf("{\"server\": false, \"state\": \"stopped\", \"root\": \"%s\"}\n", p->root);
			return ZEXIT_NOSERVER;
		}
		return no_server(p);
	}
	if (r < 0) {
		log_error("status: %s", text ? text : strerror(-r));
		free(text);
		return ZEXIT_INTERNAL;
	}
	static const char *numeric[] = { "pid",	     "uptime_s",   "generation", "zygote_pid",
					 "modules",  "project_files", "warmup_s", "runs",
					 "running",  "rss_kb",	      "threads",	 "refreshes",
					 "warming",  "dirty_count",   "last_refresh_s", "queued",
					 "max_runs", "variants" };
	if (o->json) {
		printf("{\"server\": true");
		int dirty_open = 0;
		for (char *line = text; *line;) {
			char *nl = strchr(line, '\n');
			if (nl)
				*nl = '\0';
			char *eq = strchr(line, '=');
			if (eq) {
				*eq = '\0';
				int num = 0;
				for (size_t i = 0; i < ARRAY_SIZE(numeric); i++)
					num |= strcmp(line, numeric[i]) == 0 && eq[1];
				int dirty = strcmp(line, "dirty") == 0;
				if (dirty && dirty_open)
					printf(", ");
				else if (dirty)
					printf(", \"dirty\": [");
				else
					printf("%s, \"%s\": ", dirty_open ? "]" : "", line);
				if (!dirty)
					dirty_open = 0;
				else
					dirty_open = 1;
				if (num) {
					printf("%s", eq + 1);
				} else {
					putchar('"');
					for (const char *c = eq + 1; *c; c++) {
						if (*c == '"' || *c == '\\')
							printf("\\%c", *c);
						else if ((unsigned char)*c < 0x20)
							printf("\\u%04x", *c);
						else
							putchar(*c);
					}
					putchar('"');
				}
			}
			if (!nl)
				break;
			line = nl + 1;
		}
		if (dirty_open)
			printf("]");
		else
			printf(", \"dirty\": []");
		printf("}\n");
		free(text);
		return 0;
	}
	static const struct {
		const char *key, *label, *unit;
	} rows[] = {
		{ "state", "state", "" },	    { "pid", "pid", "" },
		{ "root", "root", "" },		    { "python", "python", "" },
		{ "socket", "socket", "" },	    { "log", "log", "" },
		{ "uptime_s", "uptime", " s" },	    { "generation", "generation", "" },
		{ "zygote_pid", "zygote pid", "" }, { "modules", "modules", "" },
		{ "warmup_s", "warm-up", " s" },    { "runs", "runs served", "" },
		{ "running", "running", "" },	    { "queued", "queued", "" },
		{ "max_runs", "max runs", "" },	    { "rss_kb", "zygote memory", " kB RSS" },
		{ "sandbox", "sandbox", "" },	    { "refreshes", "refreshes", "" },
		{ "warming", "warming gen", "" },   { "dirty_count", "changes", "" },
		{ "watching", "watching", "" },	    { "fresh_reason", "waiting for", "" },
		{ "last_refresh_s", "last refresh", " s" },
		{ "warm_phase", "warming now", "" }, { "warm_modules", "warmed modules", "" },
		{ "variants", "variants", " (zygotes for other environments)" },
		{ "reload", "reload", "" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		char *v = client_status_get(text, rows[i].key);
		if (v && !*v && (strcmp(rows[i].key, "fresh_reason") == 0 ||
				 strncmp(rows[i].key, "warm_", 5) == 0)) {
			free(v);
			continue;
		}
		printf("%s%-14s%s %s%s\n", color() ? "\033[1m" : "", rows[i].label,
		       color() ? "\033[0m" : "", v ? v : "", rows[i].unit);
		free(v);
	}
	free(text);
	return 0;
}

static int
cmd_stop(const struct opts *o, const struct zpaths *p, int quiet_absent)
{
	char *text = NULL;
	int r = client_request(p, PROTO_KIND_STOP, (uint32_t)o->grace_ms, &text);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		free(text);
		if (quiet_absent)
			return 0;
		log_error("no zygote is running for %s", p->root);
		return ZEXIT_NOSERVER;
	}
	if (r < 0) {
		log_error("stop: %s", text ? text : strerror(-r));
		free(text);
		return ZEXIT_INTERNAL;
	}
	char *pid = client_status_get(text, "pid");
	printf("pytest-zygote: stopped (pid %s)\n", pid ? pid : "?");
	free(pid);
	free(text);
	return 0;
}

/*
 * The server sent the run to a zygote warmed with its environment (an
 * interpreter setting, or a variable a module outside the project read at
 * import, differs): run it in that variant instance, "INSTANCE~ID", which
 * is started with this environment when it is not running yet.
 */
static int
run_variant(const struct opts *o, int nargs, char **args)
{
	char id[32], reason[800], inst[192];
	static char python[PATH_MAX];
	proto_kv_get(client_redirect, "variant", id, sizeof(id));
	proto_kv_get(client_redirect, "reason", reason, sizeof(reason));
	proto_kv_get(client_redirect, "python", python, sizeof(python));
	if (!*id || strspn(id, "0123456789abcdef") != strlen(id)) {
		log_error("the server sent the run to a zygote it did not name; run again");
		return ZEXIT_INTERNAL;
	}
	snprintf(inst, sizeof(inst), "%s~%s", o->instance ? o->instance : "", id);
	struct opts vo = *o;
	vo.instance = inst;
	vo.quiet = 1;
	if (python[0] == '/')
		vo.python = python; /* the server's interpreter, whatever this client would pick */
	struct zpaths vp;
	if (resolve_paths(&vo, &vp) < 0)
		return ZEXIT_USAGE;
	int code = client_run(&vp, nargs, args);
	if (code == -ENOENT || code == -ECONNREFUSED) {
		log_info("this run's environment differs from the zygote's in %s; starting a "
			 "zygote for this environment",
			 reason);
		int r = do_start(&vo, &vp);
		if (r != 0)
			return r;
		code = client_run(&vp, nargs, args);
	}
	if (code == CLIENT_REDIRECT) {
		log_error("the zygote for this environment sent the run elsewhere again; run "
			  "'pytest-zygote stop' and run again");
		return ZEXIT_INTERNAL;
	}
	if (code < 0) {
		log_error("cannot reach the server at %s: %s", vp.sock, strerror(-code));
		return ZEXIT_INTERNAL;
	}
	return code;
}

static int
cmd_run(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	int code = client_run(p, nargs, args);
	if (code == CLIENT_REDIRECT)
		return run_variant(o, nargs, args);
	if ((code == -ENOENT || code == -ECONNREFUSED) && o->start_if_needed) {
		struct opts so = *o;
		so.quiet = 1;
		int r = do_start(&so, p);
		if (r != 0)
			return r;
		code = client_run(p, nargs, args);
		if (code == CLIENT_REDIRECT)
			return run_variant(o, nargs, args);
	}
	if (code == -ENOENT || code == -ECONNREFUSED)
		return no_server(p);
	if (code < 0) {
		log_error("cannot reach the server at %s: %s", p->sock, strerror(-code));
		return ZEXIT_INTERNAL;
	}
	return code;
}

static int
parse_grace(const char *s, int *ret_ms)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !(v >= 0 && v <= 3600)) /* NaN too */
		return -1;
	*ret_ms = (int)(v * 1000);
	return 0;
}

int
main(int argc, char **argv)
{
	log_init("pytest-zygote", 0);
	const char *hint = getenv("PYTEST_ZYGOTE_HINT");
	if (hint) {
		/* The plugin's, not the run's: keep it out of the environment sent on. */
		start_hint = strdup(hint);
		unsetenv("PYTEST_ZYGOTE_HINT");
	}
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? ZEXIT_USAGE : 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("pytest-zygote %s (Python %s)\n", PYZ_VERSION, PYZ_PY_VERSION);
		return 0;
	}
	const char *cmd = argv[1];
	const char *help;
	if (strcmp(cmd, "start") == 0)
		help = start_help;
	else if (strcmp(cmd, "run") == 0)
		help = run_help;
	else if (strcmp(cmd, "stop") == 0)
		help = stop_help;
	else if (strcmp(cmd, "restart") == 0)
		help = restart_help;
	else if (strcmp(cmd, "status") == 0)
		help = status_help;
	else {
		log_error("unknown command '%s'; see pytest-zygote --help", log_escape(cmd));
		return ZEXIT_USAGE;
	}

	struct opts o = { .python = PYZ_DEFAULT_PYTHON, .ready_fd = -1, .grace_ms = 5000 };
	int i = 2;
	/* Our options come first; for `run`, the first other argument starts pytest's. */
	for (; i < argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;
#define OPT_VALUE(name)                                                                          \
	(strcmp(a, name) == 0 ? (i + 1 < argc ? (val = argv[++i], 1) : -1)                      \
	 : strncmp(a, name "=", sizeof(name)) == 0 ? (val = a + sizeof(name), 1) : 0)
		int m;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(help, stdout);
			return 0;
		}
		if ((m = OPT_VALUE("--root")) != 0) {
			if (m < 0)
				goto missing;
			o.root = val;
		} else if ((m = OPT_VALUE("--instance")) != 0) {
			if (m < 0)
				goto missing;
			o.instance = val;
		} else if (help != run_help && help != status_help && help != stop_help &&
			   (m = OPT_VALUE("--python")) != 0) {
			if (m < 0)
				goto missing;
			o.python = val;
			o.python_set = 1;
		} else if (help == start_help && (m = OPT_VALUE("--ready-fd")) != 0) {
			char *end;
			if (m < 0)
				goto missing;
			long fd = strtol(val, &end, 10);
			if (*end || fd < 0 || fd > 1024 || fcntl((int)fd, F_GETFD) < 0) {
				log_error("--ready-fd needs an open file descriptor, not '%s'",
					  log_escape(val));
				return ZEXIT_USAGE;
			}
			o.ready_fd = (int)fd;
		} else if ((help == start_help || help == restart_help) &&
			   (m = OPT_VALUE("--max-runs")) != 0) {
			char *end;
			if (m < 0)
				goto missing;
			long n = strtol(val, &end, 10);
			if (!*val || *end || n < 0 || n > SUPERVISOR_MAX_RUNS_LIMIT) {
				log_error("--max-runs needs a number from 0 (no limit) to %d, not '%s'",
					  SUPERVISOR_MAX_RUNS_LIMIT, log_escape(val));
				return ZEXIT_USAGE;
			}
			/* The flag wins over the environment and the config section. */
			setenv("PYTEST_ZYGOTE_MAX_RUNS", val, 1);
		} else if ((help == stop_help || help == restart_help) &&
			   (m = OPT_VALUE("--grace")) != 0) {
			if (m < 0)
				goto missing;
			if (parse_grace(val, &o.grace_ms) < 0) {
				log_error("--grace needs seconds between 0 and 3600, not '%s'",
					  log_escape(val));
				return ZEXIT_USAGE;
			}
			o.grace_set = 1;
		} else if (help == start_help && strcmp(a, "--foreground") == 0) {
			o.foreground = 1;
		} else if (help == run_help && strcmp(a, "--start-if-needed") == 0) {
			o.start_if_needed = 1;
			o.start_if_needed_set = 1;
		} else if (help == status_help && strcmp(a, "--json") == 0) {
			o.json = 1;
		} else if (help == run_help) {
			break; /* pytest's arguments start here */
		} else {
			log_error("unknown option '%s' for %s; see pytest-zygote %s --help",
				  log_escape(a), cmd, cmd);
			return ZEXIT_USAGE;
		}
		continue;
missing:
		log_error("option '%s' needs a value; see pytest-zygote %s --help", a, cmd);
		return ZEXIT_USAGE;
#undef OPT_VALUE
	}
	if (help != run_help && i < argc) {
		log_error("unexpected argument '%s' for %s; see pytest-zygote %s --help",
			  log_escape(argv[i]), cmd, cmd);
		return ZEXIT_USAGE;
	}
	if (o.ready_fd >= 0 && !o.foreground) {
		log_error("--ready-fd needs --foreground");
		return ZEXIT_USAGE;
	}

	struct zpaths p;
	if (resolve_paths(&o, &p) < 0)
		return ZEXIT_USAGE;

	conf_init(&o.conf);
	if (conf_load(&o.conf, p.root) > 0) {
		/* Bad settings stop a start; elsewhere they are worth a warning. */
		int fatal = help == start_help || help == restart_help;
		for (char *line = o.conf.errors; *line;) {
			char *nl = strchr(line, '\n');
			if (nl)
				*nl = '\0';
			if (fatal)
				log_error("%s", line);
			else
				log_warn("%s", line);
			if (!nl)
				break;
			line = nl + 1;
		}
		if (fatal)
			return ZEXIT_USAGE;
	}
	const char *env;
	static char default_python[PATH_MAX];
	if (!o.python_set) {
		char exe[PATH_MAX];
		if ((env = getenv("PYTEST_ZYGOTE_PYTHON")) && *env)
			o.python = env;
		else if (o.conf.python[0])
			o.python = o.conf.python;
		else if (paths_self_exe(exe, sizeof(exe)) == 0) {
			/* Installed into a virtualenv (pip): run its python. */
			paths_default_python(exe, PYZ_DEFAULT_PYTHON, default_python,
					     sizeof(default_python));
			o.python = default_python;
		}
	}
	if (!o.grace_set && o.conf.grace_ms >= 0)
		o.grace_ms = o.conf.grace_ms;
	if (!o.start_if_needed_set) {
		env = getenv("PYTEST_ZYGOTE_START_IF_NEEDED");
		if (env && *env)
			o.start_if_needed = conf_parse_bool(env) == 1;
		else if (o.conf.start_if_needed >= 0)
			o.start_if_needed = o.conf.start_if_needed;
	}

	if (help == start_help)
		return do_start(&o, &p);
	if (help == run_help)
		return cmd_run(&o, &p, argc - i, argv + i);
	if (help == stop_help)
		return cmd_stop(&o, &p, 0);
	if (help == status_help)
		return cmd_status(&o, &p);
	/* restart */
	int r = cmd_stop(&o, &p, 1);
	if (r != 0)
		return r;
	return do_start(&o, &p);
}
