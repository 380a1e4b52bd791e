/*
 * pytest-zygote status, and the lines that describe a running server: the
 * result of `start` and "already running". It only asks and prints: it must
 * not start, stop or change a server.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-id.h"
#include "client-internal.h"
#include "config.h"
#include "zygote/client.h"
#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/proto.h"

/* Colour on stdout (asked once: status asks for every row). */
static int
color(void)
{
	static int on = -1;
	if (on < 0)
		on = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
	return on;
}

/*
 * Is the server whose status text this is another build than this client?
 * Then say so (as a warning, or as the error with_error names) and how to
 * replace it; a server from before build ids reports none.
 */
static int
other_build(const struct zpaths *p, const char *text, const char *with_error)
{
	char build[PROTO_BUILD_MAX + 1], version[64];
	proto_kv_get(text, "build", build, sizeof(build));
	if (strcmp(build, PYZ_BUILD_ID) == 0)
		return 0;
	proto_kv_get(text, "version", version, sizeof(version));
	char theirs[160];
	if (*build)
		snprintf(theirs, sizeof(theirs), "%s build %s", version, build);
	else
		snprintf(theirs, sizeof(theirs), "%s, an older build", version);
	if (with_error)
		log_error("%s for %s, but it is another build of pytest-zygote (server: %s; "
			  "this client: %s build %s), which `run` refuses; replace it: "
			  "pytest-zygote restart --root %s",
			  with_error, p->root, theirs, PYZ_VERSION, PYZ_BUILD_ID, p->root);
	else
		log_warn("the server is another build of pytest-zygote (server: %s; this "
			 "client: %s build %s), which `run` refuses; replace it: pytest-zygote "
			 "restart --root %s",
			 theirs, PYZ_VERSION, PYZ_BUILD_ID, p->root);
	return 1;
}

/* A server already runs for p: wait until it is warm, then say so. */
static int
print_running(const struct zpaths *p, int to_stderr)
{
	char *text = NULL;
	/* Wait until that server is warm, so a second `start` means "ready" too.
	 * It takes the pid lock a moment before it listens: a start that
	 * raced it (several at once) finds no socket yet, so it retries for
	 * up to 5 s before calling the server one that is stopping. */
	int r;
	for (int tries = 0;; tries++) {
		r = client_request(p, PROTO_KIND_WAIT, 0, &text);
		if ((r != -ECONNREFUSED && r != -ENOENT) || tries >= 100)
			break;
		free(text);
		text = NULL;
		usleep(50 * 1000);
	}
	if (r == CLIENT_UNTRUSTED)
		return ZEXIT_UNTRUSTED;
	if (r == 0 && other_build(p, text, "a server is already running")) {
		free(text);
		return ZEXIT_MISMATCH;
	}
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
int
print_report(const struct zpaths *p, const char *line, int to_stderr)
{
	FILE *out = to_stderr ? stderr : stdout;
	if (strncmp(line, "ready ", 6) == 0) {
		int pid = 0, threads = 1;
		char mods[32] = "?", status[300] = "";
		double warm = 0;
		sscanf(line, "ready pid=%d modules=%31s warmup_s=%lf threads=%d status=%299[^\n]",
		       &pid, mods, &warm, &threads, status);
		fprintf(out,
			"pytest-zygote: %sready%s pid %d, socket %s, %s modules, warm-up %.2f s\n",
			color() && !to_stderr ? "\033[32m" : "",
			color() && !to_stderr ? "\033[0m" : "", pid, p->sock, mods, warm);
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

/* A string as JSON. */
static void
json_string(const char *v)
{
	putchar('"');
	for (const char *c = v ? v : ""; *c; c++) {
		if (*c == '"' || *c == '\\')
			printf("\\%c", *c);
		else if ((unsigned char)*c < 0x20)
			printf("\\u%04x", *c);
		else
			putchar(*c);
	}
	putchar('"');
}

/* `status`: the server's status text as a table, or as JSON with --json. */
int
cmd_status(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	if (o->all)
		return cmd_status_all(o, p);
	char *text = NULL;
	int r = client_request(p, PROTO_KIND_STATUS, 0, &text);
	if (r == CLIENT_UNTRUSTED)
		return ZEXIT_UNTRUSTED;
	if (r == -ENOENT || r == -ECONNREFUSED) {
		if (o->json) {
			printf("{\"server\": false, \"state\": \"stopped\", \"root\": \"%s\"}\n",
			       p->root);
			return ZEXIT_NOSERVER;
		}
		return no_server(p);
	}
	if (r < 0) {
		log_error("status: %s", text ? text : strerror(-r));
		free(text);
		return ZEXIT_INTERNAL;
	}
	static const char *numeric[] = {
		"pid",        "idle_s",   "uptime_s",      "generation",
		"zygote_pid", "modules",  "project_files", "warmup_s",
		"runs",       "running",  "rss_kb",        "threads",
		"refreshes",  "warming",  "dirty_count",   "last_refresh_s",
		"queued",     "max_runs", "variants",      "protocol",
		"watchers",   "preparing"
	};
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
				if (num)
					printf("%s", eq + 1);
				else
					json_string(eq + 1);
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
		{ "state", "state", "" },
		{ "pid", "pid", "" },
		{ "root", "root", "" },
		{ "python", "python", "" },
		{ "socket", "socket", "" },
		{ "log", "log", "" },
		{ "uptime_s", "uptime", " s" },
		{ "idle_s", "idle", " s" },
		{ "generation", "generation", "" },
		{ "zygote_pid", "zygote pid", "" },
		{ "modules", "modules", "" },
		{ "warmup_s", "warm-up", " s" },
		{ "runs", "runs served", "" },
		{ "running", "running", "" },
		{ "queued", "queued", "" },
		{ "max_runs", "max runs", "" },
		{ "rss_kb", "zygote memory", " kB RSS" },
		{ "sandbox", "sandbox", "" },
		{ "refreshes", "refreshes", "" },
		{ "warming", "warming gen", "" },
		{ "preparing", "preparing", " (its first spare: practice run)" },
		{ "dirty_count", "changes", "" },
		{ "watching", "watching", "" },
		{ "fresh_reason", "waiting for", "" },
		{ "last_refresh_s", "last refresh", " s" },
		{ "warm_phase", "warming now", "" },
		{ "warm_modules", "warmed modules", "" },
		{ "variants", "variants", " (zygotes for other environments)" },
		{ "reload", "reload", "" },
		{ "version", "version", "" },
		{ "build", "build", "" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		char *v = client_status_get(text, rows[i].key);
		/* Rows that only mean something while they say something. */
		if (v && ((!*v && (strcmp(rows[i].key, "fresh_reason") == 0 ||
				   strncmp(rows[i].key, "warm_", 5) == 0)) ||
			  (strcmp(rows[i].key, "preparing") == 0 && strcmp(v, "0") == 0))) {
			free(v);
			continue;
		}
		printf("%s%-14s%s %s%s\n", color() ? "\033[1m" : "", rows[i].label,
		       color() ? "\033[0m" : "", v ? v : "", rows[i].unit);
		free(v);
	}
	other_build(p, text, NULL);
	free(text);
	return 0;
}

/* Every server in the runtime directory that answers: a pid file names each
 * (NAME.pid beside NAME.sock); a stale one (nobody listening) is skipped. */
int
servers_list(const struct zpaths *base, struct server_found **ret, size_t *ret_n)
{
	DIR *d = opendir(base->dir);
	if (!d)
		return -errno;
	struct server_found *list = NULL;
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len <= 4 || strcmp(e->d_name + len - 4, ".pid") != 0 ||
		    len - 4 >= sizeof(base->name))
			continue;
		struct server_found f = { .p = *base };
		snprintf(f.p.name, sizeof(f.p.name), "%.*s", (int)(len - 4), e->d_name);
		if ((size_t)snprintf(f.p.sock, sizeof(f.p.sock), "%s/%s.sock", base->dir,
				     f.p.name) >= sizeof(f.p.sock))
			continue;
		/* The socket path fitted in 108 bytes, so these fit in PATH_MAX. */
		if (snprintf(f.p.pid, sizeof(f.p.pid), "%.200s/%s.pid", base->dir, f.p.name) < 0 ||
		    snprintf(f.p.log, sizeof(f.p.log), "%.200s/%s.log", base->dir, f.p.name) < 0)
			continue;
		if (client_request(&f.p, PROTO_KIND_STATUS, 0, &f.text) < 0) {
			free(f.text);
			continue;
		}
		char *root = client_status_get(f.text, "root");
		snprintf(f.p.root, sizeof(f.p.root), "%s", root ? root : "?");
		free(root);
		struct server_found *grown = realloc(list, (n + 1) * sizeof(*list));
		if (!grown) {
			free(f.text);
			break;
		}
		list = grown;
		list[n++] = f;
	}
	closedir(d);
	*ret = list;
	*ret_n = n;
	return 0;
}

void
servers_free(struct server_found *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(list[i].text);
	free(list);
}

/* `status --all`: one line (or JSON object) per server of ours in the runtime directory. */
int
cmd_status_all(const struct opts *o, const struct zpaths *p)
{
	struct server_found *list;
	size_t n;
	int r = servers_list(p, &list, &n);
	if (r < 0) {
		log_error("cannot read the runtime directory '%s': %s", p->dir, strerror(-r));
		return ZEXIT_INTERNAL;
	}
	static const char *keys[] = { "pid",    "state", "generation", "uptime_s",
				      "idle_s", "runs",  "running",    "instance" };
	if (o->json)
		printf("[");
	else if (n)
		printf("%s%7s  %-10s %4s %9s %9s  %s%s\n", color() ? "\033[1m" : "", "PID", "STATE",
		       "GEN", "UPTIME", "IDLE", "ROOT", color() ? "\033[0m" : "");
	for (size_t i = 0; i < n; i++) {
		char *v[ARRAY_SIZE(keys)];
		for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
			v[k] = client_status_get(list[i].text, keys[k]);
			if (!v[k])
				v[k] = strdup("");
		}
		if (o->json) {
			printf("%s{\"root\": ", i ? ", " : "");
			json_string(list[i].p.root);
			printf(", \"socket\": ");
			json_string(list[i].p.sock);
			for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
				int text = strcmp(keys[k], "state") == 0 ||
					   strcmp(keys[k], "instance") == 0 || !v[k] || !*v[k];
				printf(", \"%s\": ", keys[k]);
				if (text)
					json_string(v[k]);
				else
					printf("%s", v[k]);
			}
			printf("}");
		} else {
			printf("%7s  %-10s %4s %7.0f s %7.0f s  %s%s%s%s\n", v[0], v[1], v[2],
			       atof(v[3] ? v[3] : "0"), atof(v[4] ? v[4] : "0"), list[i].p.root,
			       v[7] && *v[7] ? " (instance " : "", v[7] ? v[7] : "",
			       v[7] && *v[7] ? ")" : "");
		}
		for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
			free(v[k]);
	}
	if (o->json)
		printf("]\n");
	else if (!n)
		fprintf(stderr, "pytest-zygote: no servers are running in %s\n", p->dir);
	servers_free(list, n);
	return n ? 0 : ZEXIT_NOSERVER;
}

/*
 * `probe`: what the pytest plugin needs to decide a hand-over, asked of the
 * program that would run it, so the plugin re-implements neither the
 * socket's name, nor the checks of the runtime directory and the server,
 * nor the settings' precedence. "probe.KEY=VALUE" lines on stdout, then the
 * server's status lines when one runs; nothing on stderr but warnings.
 */
int
cmd_probe(const struct opts *o, const struct zpaths *p, int nargs, char **args)
{
	(void)nargs;
	(void)args;
	char *text = NULL;
	int r = client_request(p, PROTO_KIND_STATUS, 0, &text);
	const char *server = r == 0                               ? "running"
			     : r == CLIENT_UNTRUSTED              ? "untrusted"
			     : r == -ENOENT || r == -ECONNREFUSED ? "none"
								  : "error";
	printf("probe.server=%s\nprobe.socket=%s\nprobe.config=%s\nprobe.start_if_needed=%d\n"
	       "probe.build=%s\n",
	       server, p->sock, o->conf.file, o->start_if_needed, PYZ_BUILD_ID);
	if (r == 0)
		fputs(text, stdout);
	free(text);
	return fflush(stdout) == 0 ? 0 : ZEXIT_INTERNAL;
}
