/*
 * The project's [pytest-zygote] section, read with inih. Line numbers come
 * from our own reader (this inih is built without INI_HANDLER_LINENO), so an
 * unknown key or a bad value is reported as "file:line: ...".
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "zygote/common.h"
#include "zygote/conf.h"
#include "zygote/supervisor.h"

#define FIELD(name) offsetof(struct zconf, name), sizeof(((struct zconf *)0)->name)
#define NO_FIELD -1, 0

const struct conf_setting conf_settings[] = {
	{ "python", "PYTEST_ZYGOTE_PYTHON", CONF_PATH, 0, 0, NULL,
	  "the virtualenv's python when installed in one, else the build's",
	  "the interpreter the zygote runs", CONF_AT_START, FIELD(python) },
	{ "settle_ms", "PYTEST_ZYGOTE_SETTLE_MS", CONF_INT, 0, 3600000, NULL, "300",
	  "quiet time after a change before a fresh generation starts", CONF_AT_START,
	  FIELD(settle_ms) },
	{ "poll_ms", "PYTEST_ZYGOTE_POLL_MS", CONF_INT, 0, 3600000, NULL, "0",
	  "poll the tree every N ms instead of inotify (0: inotify)", CONF_AT_START,
	  FIELD(poll_ms) },
	{ "watch_globs", "PYTEST_ZYGOTE_WATCH_GLOBS", CONF_GLOBS, 0, 0, NULL, "**/*.py",
	  "which files under the root count as changes", CONF_AT_START, FIELD(watch_globs) },
	{ "ignore_globs", "PYTEST_ZYGOTE_IGNORE_GLOBS", CONF_GLOBS, 0, 0, NULL,
	  ".venv/:venv/:.git/:__pycache__/:.tox/:.nox/:build/:dist/:node_modules/",
	  "what is never watched", CONF_AT_START, FIELD(ignore_globs) },
	{ "spare", "PYTEST_ZYGOTE_SPARE", CONF_BOOL, 0, 0, NULL, "true",
	  "keep a spare child forked ahead of the next run", CONF_AT_START, FIELD(spare) },
	{ "collect_ahead_ms", "PYTEST_ZYGOTE_COLLECT_AHEAD_MS", CONF_INT, 0, 3600000, NULL, "200",
	  "collect the last run again ahead of the next when its collection took N ms (0: off)",
	  CONF_AT_START, FIELD(collect_ahead_ms) },
	{ "stable_layout", "PYTEST_ZYGOTE_STABLE_LAYOUT", CONF_BOOL, 0, 0, NULL, "true",
	  "the same memory layout in every generation (pages carry over)", CONF_AT_START,
	  FIELD(stable_layout) },
	{ "sandbox", "PYTEST_ZYGOTE_SANDBOX", CONF_CHOICE, 0, 0, "on|off|no-network", "on",
	  "the seccomp sandbox of test children", CONF_AT_START, FIELD(sandbox) },
	{ "grace", NULL, CONF_SECONDS, 0, 3600, NULL, "5",
	  "seconds stop waits for runs before killing them (stop --grace)", CONF_AT_CLIENT,
	  FIELD(grace_ms) },
	{ "start_if_needed", "PYTEST_ZYGOTE_START_IF_NEEDED", CONF_BOOL, 0, 0, NULL, "false",
	  "run starts a zygote when none is running", CONF_AT_CLIENT | CONF_AT_RUN,
	  FIELD(start_if_needed) },
	{ "max_runs", "PYTEST_ZYGOTE_MAX_RUNS", CONF_INT, 0, SUPERVISOR_MAX_RUNS_LIMIT, NULL,
	  "twice the CPUs, at least 8", "runs at once (0: no limit); more wait", CONF_AT_START,
	  FIELD(max_runs) },
	{ "reload", "PYTEST_ZYGOTE_RELOAD", CONF_CHOICE, 0, 0, "child|fresh", "child",
	  "after an edit: re-import in the child, or wait for a fresh generation", CONF_AT_START,
	  FIELD(reload_fresh) },
	{ "idle_timeout", "PYTEST_ZYGOTE_IDLE_TIMEOUT", CONF_SECONDS, 0,
	  SUPERVISOR_IDLE_TIMEOUT_MAX, NULL, "10800",
	  "seconds without runs or clients before the server stops (0: never)", CONF_AT_START,
	  FIELD(idle_timeout_ms) },
	{ "wait_timeout", "PYTEST_ZYGOTE_WAIT_TIMEOUT", CONF_SECONDS, 0,
	  SUPERVISOR_WAIT_TIMEOUT_MAX, NULL, "600",
	  "seconds a run waits for a zygote to become ready before it gives up (0: no bound)",
	  CONF_AT_START, FIELD(wait_timeout_ms) },
	{ NULL, "PYTEST_ZYGOTE_DEBUG", CONF_BOOL, 0, 0, NULL, "false", "debug logging",
	  CONF_AT_START | CONF_AT_CLIENT, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_VARIANTS", CONF_INT, 0, 16, NULL, "3",
	  "zygotes kept for other environments", CONF_AT_START, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_VARIANT_IDLE", CONF_INT, 1, 7 * 86400, NULL, "1800",
	  "seconds before an unused variant zygote stops", CONF_AT_START, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_LEARN_SECONDS", CONF_SECONDS, 0, 3600, NULL, "5",
	  "how long warm-up's learning run collects", CONF_AT_START, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_INTERRUPT_TIMEOUT", CONF_SECONDS, 0, 86400, NULL, "10",
	  "seconds from the first Ctrl-C to SIGTERM (0: never)", CONF_AT_CLIENT, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_HASH_SEED", CONF_CHOICE, 0, 0, "generation|per-run", "generation",
	  "a run's hash seed: its generation's, or one of its own", CONF_AT_RUN, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_TIMING", CONF_BOOL, 0, 0, NULL, "false",
	  "the child's CPU time and page faults on stderr", CONF_AT_RUN, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_PROFILE", CONF_TEXT, 0, 0, NULL, "",
	  "write the child's cProfile statistics to this file", CONF_AT_RUN, NO_FIELD },
	{ NULL, "PYTEST_ZYGOTE_RUNTIME_DIR", CONF_PATH, 0, 0, NULL,
	  "$XDG_RUNTIME_DIR/pytest-zygote, else /tmp/pytest-zygote-UID",
	  "where sockets, pid files and logs live", CONF_AT_CLIENT, NO_FIELD },
};
const size_t conf_nsettings = ARRAY_SIZE(conf_settings);

struct reader {
	FILE *f;
	int line;
	int toolong; /* the last line longer than max, or 0 */
	int max;
};

struct load {
	struct zconf *c;
	struct reader *r;
	const char *path;
	const char *section;
	int found;
};

void
conf_init(struct zconf *c)
{
	memset(c, 0, sizeof(*c));
	c->settle_ms = c->poll_ms = c->grace_ms = c->collect_ahead_ms = -1;
	c->spare = c->sandbox = c->start_if_needed = c->stable_layout = -1;
	c->max_runs = c->reload_fresh = c->idle_timeout_ms = c->wait_timeout_ms = -1;
}

int
conf_parse_bool(const char *s)
{
	static const char *yes[] = { "1", "true", "yes", "on" };
	static const char *no[] = { "0", "false", "no", "off" };
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return 1;
		if (strcasecmp(s, no[i]) == 0)
			return 0;
	}
	return -1;
}

int
conf_parse_sandbox(const char *s)
{
	if (strcasecmp(s, "no-network") == 0)
		return 2;
	return conf_parse_bool(s);
}

/*
 * inih's reader: one line per call, without its newline. inih's buffer holds
 * num - 1 characters; a longer line is cut there and the rest of it skipped
 * (inih would otherwise parse the rest as a line of its own, so a comment
 * could set a key), and its number remembered so the handler refuses it.
 */
static char *
read_line(char *str, int num, void *stream)
{
	struct reader *r = stream;
	int len = 0, ch, any = 0;

	while ((ch = getc(r->f)) != EOF) {
		any = 1;
		if (ch == '\n')
			break;
		if (len < num - 1) {
			str[len++] = (char)ch;
			continue;
		}
		if (ch == '\r') { /* a CRLF line that just fits */
			int next = getc(r->f);
			if (next == '\n' || next == EOF)
				break;
			ungetc(next, r->f);
		}
		r->toolong = r->line + 1;
	}
	if (!any)
		return NULL;
	str[len] = '\0';
	r->line++;
	r->max = num - 1;
	return str;
}

static void problem(struct load *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
problem(struct load *l, const char *fmt, ...)
{
	struct zconf *c = l->c;
	size_t n = strlen(c->errors);
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->errors + n, sizeof(c->errors) - n, "%s:%d: %s\n", l->path, l->r->line, msg);
	c->nerrors++;
}

/* A TOML or INI value: strip a trailing " # comment" and surrounding quotes. */
static void
clean_value(const char *in, char *out, size_t size)
{
	snprintf(out, size, "%s", in);
	char *v = out;
	if (*v == '"' || *v == '\'') {
		char q = *v;
		char *end = strchr(v + 1, q);
		if (end) {
			*end = '\0';
			memmove(out, v + 1, strlen(v + 1) + 1);
			return;
		}
	}
	char *hash = strstr(out, " #");
	if (hash)
		*hash = '\0';
	size_t l = strlen(out);
	while (l > 0 && (out[l - 1] == ' ' || out[l - 1] == '\t'))
		out[--l] = '\0';
}

/* A TOML array of strings (["a", "b"]) joined with ':', in place. Returns 0,
 * or -1 when it is not one. */
static int
toml_array_join(char *v, size_t size)
{
	char out[4096];
	size_t n = 0;
	const char *p = v + 1;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == ']')
			break;
		if (*p != '"' && *p != '\'')
			return -1;
		const char *end = strchr(p + 1, *p);
		if (!end)
			return -1;
		int w = snprintf(out + n, sizeof(out) - n, "%s%.*s", n ? ":" : "",
				 (int)(end - p - 1), p + 1);
		if (w < 0 || (size_t)w >= sizeof(out) - n)
			return -1;
		n += (size_t)w;
		p = end + 1;
	}
	snprintf(v, size, "%s", out);
	return 0;
}

int
conf_check(const struct conf_setting *s, const char *v, char *norm, size_t normsize, char *why,
	   size_t whysize)
{
	char *end;
	switch (s->kind) {
	case CONF_BOOL: {
		int b = conf_parse_bool(v);
		if (b < 0) {
			snprintf(why, whysize, "'%s' is not true or false (1/0, yes/no, on/off)",
				 v);
			return -1;
		}
		snprintf(norm, normsize, "%d", b);
		return 0;
	}
	case CONF_INT: {
		errno = 0;
		long x = strtol(v, &end, 10);
		if (!*v || *end || errno || x < s->lo || x > s->hi) {
			snprintf(why, whysize, "'%s' is not a whole number from %ld to %ld", v,
				 s->lo, s->hi);
			return -1;
		}
		snprintf(norm, normsize, "%ld", x);
		return 0;
	}
	case CONF_SECONDS: {
		double x = strtod(v, &end);
		if (!*v || *end || !(x >= (double)s->lo && x <= (double)s->hi)) { /* NaN too */
			snprintf(why, whysize, "'%s' is not seconds from %ld to %ld", v, s->lo,
				 s->hi);
			return -1;
		}
		snprintf(norm, normsize, "%s", v);
		return 0;
	}
	case CONF_PATH:
		if (v[0] != '/') {
			snprintf(why, whysize, "'%s' is not an absolute path", v);
			return -1;
		}
		break;
	case CONF_CHOICE: {
		/* The sandbox takes booleans for on and off too. */
		int b = strcmp(s->choices, "on|off|no-network") == 0 ? conf_parse_bool(v) : -1;
		if (b >= 0) {
			snprintf(norm, normsize, "%s", b ? "on" : "off");
			return 0;
		}
		size_t l = strlen(v);
		for (const char *c = s->choices; l > 0 && *c;) {
			size_t cl = strcspn(c, "|");
			if (cl == l && strncmp(c, v, l) == 0) {
				snprintf(norm, normsize, "%s", v);
				return 0;
			}
			c += cl + (c[cl] == '|');
		}
		char words[128];
		snprintf(words, sizeof(words), "%s", s->choices);
		char *bar = strrchr(words, '|');
		if (bar) {
			/* "a|b|c" -> "a, b or c" */
			*bar = '\0';
			char list[160] = "";
			for (char *w = strtok(words, "|"); w; w = strtok(NULL, "|"))
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
					 list[0] ? ", " : "", w);
			snprintf(why, whysize, "'%s' is not %s or %s", v, list, bar + 1);
		} else {
			snprintf(why, whysize, "'%s' is not %s", v, words);
		}
		return -1;
	}
	case CONF_GLOBS:
	case CONF_TEXT:
		break;
	}
	snprintf(norm, normsize, "%s", v);
	return 0;
}

/* Store a checked value in its field of c. */
static void
store(struct zconf *c, const struct conf_setting *s, const char *norm)
{
	if (s->field < 0)
		return;
	char *f = (char *)c + s->field;
	switch (s->kind) {
	case CONF_BOOL:
	case CONF_INT:
		*(int *)f = atoi(norm);
		break;
	case CONF_SECONDS:
		*(int *)f = (int)(strtod(norm, NULL) * 1000);
		break;
	case CONF_CHOICE:
		if (strcmp(s->key, "sandbox") == 0)
			*(int *)f = conf_parse_sandbox(norm);
		else if (strcmp(s->key, "reload") == 0)
			*(int *)f = norm[0] == 'f';
		break;
	default:
		snprintf(f, s->size, "%s", norm);
	}
}

int
conf_check_env(int when, char *errors, size_t size)
{
	int bad = 0;
	errors[0] = '\0';
	for (size_t i = 0; i < conf_nsettings; i++) {
		const struct conf_setting *s = &conf_settings[i];
		const char *v = s->env ? getenv(s->env) : NULL;
		if (!v || !*v || !(s->when & when))
			continue;
		char norm[4096], why[512];
		if (conf_check(s, v, norm, sizeof(norm), why, sizeof(why)) < 0) {
			size_t n = strlen(errors);
			snprintf(errors + n, size - n, "bad value for %s in the environment: %s\n",
				 s->env, why);
			bad++;
		} else if (strcmp(norm, v) != 0) {
			setenv(s->env, norm, 1);
		}
	}
	return bad;
}

static int
handler(void *user, const char *section, const char *name, const char *raw)
{
	struct load *l = user;
	if (strcmp(section, l->section) != 0)
		return 1;
	l->found = 1;
	struct zconf *c = l->c;
	if (l->r->toolong == l->r->line) {
		problem(l,
			"%s: the line is longer than %d characters, the most this reader takes; "
			"shorten it or use the environment variable",
			name, l->r->max);
		return 1;
	}
	const struct conf_setting *s = NULL;
	for (size_t i = 0; i < conf_nsettings && !s; i++)
		if (conf_settings[i].key && strcmp(conf_settings[i].key, name) == 0)
			s = &conf_settings[i];
	if (!s) {
		char keys[512] = "";
		for (size_t i = 0, n = 0; i < conf_nsettings; i++)
			if (conf_settings[i].key)
				n += (size_t)snprintf(keys + n, sizeof(keys) - n, "%s%s",
						      n ? ", " : "", conf_settings[i].key);
		problem(l, "unknown key '%s' in [%s]; known keys: %s", name, l->section, keys);
		return 1;
	}
	char v[4096], norm[4096], why[512];
	clean_value(raw, v, sizeof(v));
	if (s->kind == CONF_GLOBS && raw[0] == '[' && toml_array_join(v, sizeof(v)) < 0) {
		problem(l, "bad value for %s: '%s' is not a list of quoted globs", name, raw);
		return 1;
	}
	if (conf_check(s, v, norm, sizeof(norm), why, sizeof(why)) < 0)
		problem(l, "bad value for %s: %s", name, why);
	else
		store(c, s, norm);
	return 1;
}

int
conf_load_file(struct zconf *c, const char *path, const char *section)
{
	struct reader r = { .f = fopen(path, "re") };
	if (!r.f)
		return errno == ENOENT ? 0 : -errno;
	struct load l = { .c = c, .r = &r, .path = path, .section = section };
	int e = ini_parse_stream(read_line, &r, handler, &l);
	fclose(r.f);
	/* A syntax error elsewhere in a shared file (pyproject.toml arrays, say)
	 * is not ours to report unless it is inside our section. */
	if (e > 0 && l.found && c->nerrors == 0) {
		size_t n = strlen(c->errors);
		snprintf(c->errors + n, sizeof(c->errors) - n, "%s:%d: cannot parse this line\n",
			 path, e);
		c->nerrors++;
	}
	if (l.found)
		snprintf(c->file, sizeof(c->file), "%s", path);
	return l.found;
}

int
conf_load(struct zconf *c, const char *root)
{
	static const struct {
		const char *file, *section;
	} places[] = {
		{ ".pytest-zygote.ini", "pytest-zygote" },
		{ "pytest.ini", "pytest-zygote" },
		{ "tox.ini", "pytest-zygote" },
		{ "setup.cfg", "pytest-zygote" },
		{ "pyproject.toml", "tool.pytest-zygote" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(places); i++) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, places[i].file) >=
		    sizeof(path))
			continue;
		if (conf_load_file(c, path, places[i].section) > 0)
			break;
	}
	return c->nerrors;
}
