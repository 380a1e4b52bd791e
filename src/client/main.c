/*
 * pytest-zygote: the command line. The help texts, option parsing, and the
 * table of subcommands main dispatches through: start.c, run.c and status.c
 * hold the commands with logic of their own, stop and restart are here. This
 * binary links nothing but libc and inih, so a run or a status costs little
 * more than a process start: keep libpython, libseccomp and libbsd out of it.
 * Exit codes are documented in docs/usage.md and in --help.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-id.h"
#include "client-internal.h"
#include "config.h"
#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/conf.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/proto.h"
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
	"  watch     run the affected tests on every save: pytest-zygote watch -- ARGS\n"
	"  stop      stop the server (running tests may finish first)\n"
	"  restart   stop, then start\n"
	"  status    show the server's pid, generation, modules, runs and memory\n"
	"  settings  list every setting: config key, variable, default\n"
	"  worker    a pytest-xdist worker in a fork (runs with -n start it)\n"
	"  probe     for tools: the server and settings as key=value lines\n"
	"\n"
	"Common options:\n"
	"  --root DIR      the project root (default: the rootdir pytest picks from\n"
	"                  the current directory)\n"
	"  --instance NAME select another server for the same root\n"
	"  -h, --help      help for a command: pytest-zygote COMMAND --help\n"
	"  --version       print the version and the build id\n"
	"\n"
	"Exit codes: pytest's own (0-5); 128+N when the test process died of signal N\n"
	"(130 when Ctrl-C interrupts start: the server keeps warming up);\n"
	"64 usage error; 69 no server running; 70 internal or protocol error; 71 the\n"
	"server could not be started; 75 the zygote died during the run (run again);\n"
	"76 the server is another build of pytest-zygote (run restart); 77 the test\n"
	"process could not be sandboxed (the message says why; see sandbox below);\n"
	"78 the runtime directory or the server is not yours (nothing was sent).\n"
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
	"PYTEST_ZYGOTE_COLLECT_AHEAD_MS (collect the last run again ahead of the next\n"
	"when its collection took this long, default 200; 0: never),\n"
	"PYTEST_ZYGOTE_VARIANTS (zygotes kept for other environments, default 3),\n"
	"PYTEST_ZYGOTE_VARIANT_IDLE (seconds before an unused one stops, default 1800),\n"
	"PYTEST_ZYGOTE_IDLE_TIMEOUT (seconds without runs before a server stops,\n"
	"default 10800; 0: never), PYTEST_ZYGOTE_WAIT_TIMEOUT (seconds a run waits for a\n"
	"zygote to become ready, default 600; 0: no bound),\n"
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
	"hand a pytest command to a running zygote; see docs/plugin.md.\n"
	"\n"
	"Sandbox (key 'sandbox', PYTEST_ZYGOTE_SANDBOX, read by start): on (default) keeps\n"
	"tests from signalling, tracing or writing the memory of the server; no-network\n"
	"also refuses sockets other than AF_UNIX and AF_NETLINK (EACCES); off disables it.\n"
	"See docs/security.md; everything else: docs/usage.md.\n";

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
	"Usage: pytest-zygote run [--root DIR] [--start-if-needed] [--affected] [--]\n"
	"                         [PYTEST ARGS...]\n"
	"\n"
	"Run pytest with ARGS in a fresh fork of the warm server, in the current\n"
	"directory, with this environment and this terminal. Exits with pytest's exit\n"
	"code. Options of pytest-zygote come first; everything from the first other\n"
	"argument (or after --) goes to pytest.\n"
	"\n"
	"  --root DIR          project root (default: pytest's rootdir from the cwd)\n"
	"  --start-if-needed   start the server first when none is running\n"
	"  --affected          of the tests ARGS select, run only those that can have\n"
	"                      changed outcome since their last run: their test\n"
	"                      module's imports, conftests, data files or variables\n"
	"                      changed, or they failed or did not run last time; one\n"
	"                      line says how many and why (state: pytest's cache)\n"
	"  --instance NAME     another server for the same root\n";

static const char watch_help[] =
	"Usage: pytest-zygote watch [--root DIR] [--start-if-needed] [--] [PYTEST ARGS...]\n"
	"\n"
	"Stay in the foreground and, once each batch of saves has settled (the server's\n"
	"settle time, PYTEST_ZYGOTE_SETTLE_MS), run the tests they affect (of those\n"
	"ARGS select) as `run` would, then print one line: watching N files; last run\n"
	"X s; K failed. A save during a run cancels it (Ctrl-C to the run) and starts\n"
	"the next. Keys when stdin is a terminal: Enter runs every test ARGS select,\n"
	"f only those that failed last (--lf), a switches saves between affected and\n"
	"all, q quits. Ctrl-C during a run interrupts that run (again: as in run);\n"
	"Ctrl-C between runs quits. Exits with the last run's exit code (0 before\n"
	"any run); 69 when the server goes away and none listens again within 5 s\n"
	"(after restart one does, and watch goes on). Without a terminal: no keys,\n"
	"one run per settled change.\n"
	"\n"
	"  --root DIR          project root (default: pytest's rootdir from the cwd)\n"
	"  --start-if-needed   start the server first when none is running\n"
	"  --instance NAME     another server for the same root\n";

static const char worker_help[] =
	"Usage: pytest-zygote worker [--root DIR] [--instance NAME] [-u] [-B] -c CODE\n"
	"\n"
	"A pytest-xdist worker in a fresh fork of the warm server, started by a run\n"
	"with -n: the \"python\" of xdist's popen gateways (python -u -c CODE, with\n"
	"this stdin and stdout as the channel). Runs put it in xdist's --tx; it is\n"
	"not meant to be typed.\n";

static const char probe_help[] =
	"Usage: pytest-zygote probe [--root DIR] [--instance NAME]\n"
	"\n"
	"For tools (the pytest plugin asks it before a hand-over): print probe.server\n"
	"(running, none, untrusted or error), probe.socket, probe.config (the file with\n"
	"the [pytest-zygote] section, or empty), probe.start_if_needed (0 or 1) and\n"
	"probe.build (this program's build), then the server's status lines when one\n"
	"runs, as key=value lines. Exits 0 unless its own arguments are wrong.\n";

static const char stop_help[] =
	"Usage: pytest-zygote stop [--root DIR | --all] [--grace SECONDS]\n"
	"\n"
	"Stop the server. Running tests get SECONDS (default 5) to finish, then are\n"
	"killed. The socket and pid file are removed. With --all: every server of\n"
	"yours in the runtime directory (every project, instance and zygote for\n"
	"another environment); prints how many it stopped, and exits 0 when none ran.\n";

static const char restart_help[] =
	"Usage: pytest-zygote restart [--root DIR] [--python PATH] [--max-runs N] [--grace SECONDS]\n"
	"\n"
	"Stop the server if one runs, then start a new one (see start --help).\n";

static const char status_help[] =
	"Usage: pytest-zygote status [--root DIR | --all] [--json]\n"
	"\n"
	"Show pid, root, interpreter, uptime, idle time, generation, modules imported,\n"
	"runs served, runs in progress and queued, max_runs, the zygote's memory and the\n"
	"sandbox (seccomp, seccomp no-network, off, none, or failed: WHY). Exits 69 when\n"
	"no server runs. With --all: one line per server of yours in the runtime\n"
	"directory (pid, state, generation, uptime, idle time, root), or a JSON list.\n";

/* The project root (--root, or pytest's rootdir from the cwd) and its paths. */
int
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

/* How the user starts a zygote, when the pytest plugin handed the run over. */
static char *start_hint;

/* Say no zygote runs for p and how to start one. */
int
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

/* Stop the server for p; with quiet_absent, none running is not an error. */
static int
stop_server(const struct opts *o, const struct zpaths *p, int quiet_absent)
{
	char *text = NULL;
	int r = client_request(p, PROTO_KIND_STOP, (uint32_t)o->grace_ms, &text);
	if (r == CLIENT_UNTRUSTED)
		return ZEXIT_UNTRUSTED;
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
 * `stop --all`: every server in the runtime directory, zygotes for other
 * environments (instances with a '~') first, since their servers would stop
 * them anyway; each answers once it has stopped.
 */
static int
stop_all(const struct opts *o, const struct zpaths *p)
{
	struct server_found *list;
	size_t n;
	int r = servers_list(p, &list, &n), stopped = 0, failed = 0;
	if (r < 0) {
		log_error("cannot read the runtime directory '%s': %s", p->dir, strerror(-r));
		return ZEXIT_INTERNAL;
	}
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			char *inst = client_status_get(list[i].text, "instance");
			int variant = inst && strchr(inst, '~');
			free(inst);
			if (variant != (pass == 0))
				continue;
			char *text = NULL;
			r = client_request(&list[i].p, PROTO_KIND_STOP, (uint32_t)o->grace_ms,
					   &text);
			if (r == 0) {
				char *pid = client_status_get(text, "pid");
				printf("pytest-zygote: stopped %s (pid %s)\n", list[i].p.root,
				       pid ? pid : "?");
				free(pid);
				stopped++;
			} else if (r != -ENOENT && r != -ECONNREFUSED) {
				/* Gone meanwhile (its own server stopped it) is no failure. */
				log_error("stop %s: %s", list[i].p.root,
					  text ? text : strerror(-r));
				failed++;
			}
			free(text);
		}
	}
	servers_free(list, n);
	printf("pytest-zygote: stopped %d server%s in %s\n", stopped, stopped == 1 ? "" : "s",
	       p->dir);
	return failed ? ZEXIT_INTERNAL : 0;
}

/* `stop` */
static int
cmd_stop(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	if (o->all)
		return stop_all(o, p);
	return stop_server(o, p, 0);
}

/* `restart`: stop the server if one runs, then start one. */
static int
cmd_restart(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	int r = stop_server(o, p, 1);
	if (r != 0)
		return r;
	return do_start(o, p);
}

static const char settings_help[] =
	"Usage: pytest-zygote settings\n"
	"\n"
	"List every setting: its key in the project's [pytest-zygote] section (- when\n"
	"it has none), its environment variable, what it does and its default. The\n"
	"environment wins over the file, flags over both.\n";

/* `settings`: conf.c's table, one line each. */
static int
cmd_settings(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	(void)o;
	(void)p;
	(void)nargs;
	(void)args;
	for (size_t i = 0; i < conf_nsettings; i++) {
		const struct conf_setting *s = &conf_settings[i];
		printf("%-16s %-32s %s (default: %s)\n", s->key ? s->key : "-",
		       s->env ? s->env : "-", s->help, s->def[0] ? s->def : "none");
	}
	return 0;
}

/* What a command accepts besides --root, --instance and --help. */
enum {
	CMD_PYTHON = 1 << 0,          /* --python PATH */
	CMD_READY_FD = 1 << 1,        /* --ready-fd N */
	CMD_MAX_RUNS = 1 << 2,        /* --max-runs N */
	CMD_GRACE = 1 << 3,           /* --grace SECONDS */
	CMD_FOREGROUND = 1 << 4,      /* --foreground */
	CMD_START_IF_NEEDED = 1 << 5, /* --start-if-needed */
	CMD_JSON = 1 << 6,            /* --json */
	CMD_PYTEST_ARGS = 1 << 7,     /* the first other argument starts pytest's */
	CMD_CONF_FATAL = 1 << 8,      /* bad config settings stop it (else: warnings) */
	CMD_ALL = 1 << 9,             /* --all: every server in the runtime directory */
	CMD_AFFECTED = 1 << 10,       /* --affected: run the tests that can have changed */
};

static const struct command {
	const char *name;
	const char *help;
	int (*handler)(const struct opts *o, const struct zpaths *p, int nargs, char **args);
	unsigned flags;
} commands[] = {
	{ "start", start_help, cmd_start,
	  CMD_PYTHON | CMD_READY_FD | CMD_MAX_RUNS | CMD_FOREGROUND | CMD_CONF_FATAL },
	{ "run", run_help, cmd_run, CMD_START_IF_NEEDED | CMD_AFFECTED | CMD_PYTEST_ARGS },
	{ "watch", watch_help, cmd_watch, CMD_START_IF_NEEDED | CMD_PYTEST_ARGS },
	{ "stop", stop_help, cmd_stop, CMD_GRACE | CMD_ALL },
	{ "restart", restart_help, cmd_restart,
	  CMD_PYTHON | CMD_MAX_RUNS | CMD_GRACE | CMD_CONF_FATAL },
	{ "status", status_help, cmd_status, CMD_JSON | CMD_ALL },
	{ "settings", settings_help, cmd_settings, 0 },
	{ "worker", worker_help, cmd_worker, CMD_PYTEST_ARGS },
	{ "probe", probe_help, cmd_probe, 0 },
};

/* --grace SECONDS, 0 to 3600, in milliseconds. */
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

/* What parse_options returns when the command is to run. */
#define RUN_COMMAND (-1)

/*
 * Command c's options in argv[2..] into o. Returns RUN_COMMAND, with the index
 * of pytest's first argument in *ret_first, or the code to exit with when the
 * command must not run: 0 after --help, ZEXIT_USAGE after a logged error.
 */
static int
parse_options(const struct command *c, int argc, char **argv, struct opts *o, int *ret_first)
{
	const char *cmd = c->name;
	int i = 2;
	/* Our options come first; for `run`, the first other argument starts pytest's. */
	for (; i < argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;
#define OPT_VALUE(name)                                                                         \
	(strcmp(a, name) == 0                      ? (i + 1 < argc ? (val = argv[++i], 1) : -1) \
	 : strncmp(a, name "=", sizeof(name)) == 0 ? (val = a + sizeof(name), 1)                \
						   : 0)
		int m;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(c->help, stdout);
			return 0;
		}
		if ((m = OPT_VALUE("--root")) != 0) {
			if (m < 0)
				goto missing;
			o->root = val;
		} else if ((m = OPT_VALUE("--instance")) != 0) {
			if (m < 0)
				goto missing;
			o->instance = val;
		} else if ((c->flags & CMD_PYTHON) && (m = OPT_VALUE("--python")) != 0) {
			if (m < 0)
				goto missing;
			o->python = val;
			o->python_set = 1;
		} else if ((c->flags & CMD_READY_FD) && (m = OPT_VALUE("--ready-fd")) != 0) {
			char *end;
			if (m < 0)
				goto missing;
			long fd = strtol(val, &end, 10);
			if (*end || fd < 0 || fd > 1024 || fcntl((int)fd, F_GETFD) < 0) {
				log_error("--ready-fd needs an open file descriptor, not '%s'",
					  log_escape(val));
				return ZEXIT_USAGE;
			}
			o->ready_fd = (int)fd;
		} else if ((c->flags & CMD_MAX_RUNS) && (m = OPT_VALUE("--max-runs")) != 0) {
			char *end;
			if (m < 0)
				goto missing;
			long n = strtol(val, &end, 10);
			if (!*val || *end || n < 0 || n > SUPERVISOR_MAX_RUNS_LIMIT) {
				log_error(
					"--max-runs needs a number from 0 (no limit) to %d, not '%s'",
					SUPERVISOR_MAX_RUNS_LIMIT, log_escape(val));
				return ZEXIT_USAGE;
			}
			/* The flag wins over the environment and the config section. */
			setenv("PYTEST_ZYGOTE_MAX_RUNS", val, 1);
		} else if ((c->flags & CMD_GRACE) && (m = OPT_VALUE("--grace")) != 0) {
			if (m < 0)
				goto missing;
			if (parse_grace(val, &o->grace_ms) < 0) {
				log_error("--grace needs seconds between 0 and 3600, not '%s'",
					  log_escape(val));
				return ZEXIT_USAGE;
			}
			o->grace_set = 1;
		} else if ((c->flags & CMD_FOREGROUND) && strcmp(a, "--foreground") == 0) {
			o->foreground = 1;
		} else if ((c->flags & CMD_START_IF_NEEDED) &&
			   strcmp(a, "--start-if-needed") == 0) {
			o->start_if_needed = 1;
			o->start_if_needed_set = 1;
		} else if ((c->flags & CMD_AFFECTED) && strcmp(a, "--affected") == 0) {
			o->affected = 1;
		} else if ((c->flags & CMD_JSON) && strcmp(a, "--json") == 0) {
			o->json = 1;
		} else if ((c->flags & CMD_ALL) && strcmp(a, "--all") == 0) {
			o->all = 1;
		} else if (c->flags & CMD_PYTEST_ARGS) {
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
	if (!(c->flags & CMD_PYTEST_ARGS) && i < argc) {
		log_error("unexpected argument '%s' for %s; see pytest-zygote %s --help",
			  log_escape(argv[i]), cmd, cmd);
		return ZEXIT_USAGE;
	}
	if (o->ready_fd >= 0 && !o->foreground) {
		log_error("--ready-fd needs --foreground");
		return ZEXIT_USAGE;
	}
	*ret_first = i;
	return RUN_COMMAND;
}

/*
 * The project's config section for root, then the precedence for what the
 * flags left unset (flags > environment > section > defaults). Returns -1
 * when bad settings stop command c (logged), else 0.
 */
static int
load_settings(const struct command *c, struct opts *o, const char *root)
{
	conf_init(&o->conf);
	if (conf_load(&o->conf, root) > 0) {
		/* Bad settings stop a start; elsewhere they are worth a warning. */
		int fatal = (c->flags & CMD_CONF_FATAL) != 0;
		for (char *line = o->conf.errors; *line;) {
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
			return -1;
	}
	/* The environment gets the file's checks (conf.c's table): settings this
	 * command reads (those of a server it starts: do_start). */
	char errs[4096];
	int when = CONF_AT_CLIENT | (c->flags & CMD_PYTEST_ARGS ? CONF_AT_RUN : 0);
	if (conf_check_env(when, errs, sizeof(errs)) > 0)
		return check_env_failed(errs);
	const char *env;
	static char default_python[PATH_MAX];
	if (!o->python_set) {
		char exe[PATH_MAX];
		if ((env = getenv("PYTEST_ZYGOTE_PYTHON")) && *env)
			o->python = env;
		else if (o->conf.python[0])
			o->python = o->conf.python;
		else if (paths_self_exe(exe, sizeof(exe)) == 0) {
			/* Installed into a virtualenv (pip): run its python. */
			paths_default_python(exe, PYZ_DEFAULT_PYTHON, default_python,
					     sizeof(default_python));
			o->python = default_python;
		}
	}
	if (!o->grace_set && o->conf.grace_ms >= 0)
		o->grace_ms = o->conf.grace_ms;
	if (!o->start_if_needed_set) {
		env = getenv("PYTEST_ZYGOTE_START_IF_NEEDED");
		if (env && *env)
			o->start_if_needed = conf_parse_bool(env) == 1;
		else if (o->conf.start_if_needed >= 0)
			o->start_if_needed = o->conf.start_if_needed;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	/* Before anything is opened: a closed stdout must stay "closed" for the
	 * run, not become a config file that happened to get fd 1. */
	client_fill_stdio();
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
		printf("pytest-zygote %s (build %s, protocol %u, Python %s)\n", PYZ_VERSION,
		       PYZ_BUILD_ID, PROTO_VERSION, PYZ_PY_VERSION);
		return 0;
	}
	const char *cmd = argv[1];
	const struct command *c = NULL;
	for (size_t k = 0; k < ARRAY_SIZE(commands) && !c; k++)
		if (strcmp(cmd, commands[k].name) == 0)
			c = &commands[k];
	if (!c) {
		log_error("unknown command '%s'; see pytest-zygote --help", log_escape(cmd));
		return ZEXIT_USAGE;
	}

	struct opts o = { .python = PYZ_DEFAULT_PYTHON, .ready_fd = -1, .grace_ms = 5000 };
	int first, r = parse_options(c, argc, argv, &o, &first);
	if (r != RUN_COMMAND)
		return r;
	struct zpaths p;
	if (resolve_paths(&o, &p) < 0)
		return ZEXIT_USAGE;
	if (load_settings(c, &o, p.root) < 0)
		return ZEXIT_USAGE;
	return c->handler(&o, &p, argc - first, argv + first);
}
