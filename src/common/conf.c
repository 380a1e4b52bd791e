/*
 * The project's [pytest-zygote] section, read with inih. Line numbers come
 * from our own reader (this inih is built without INI_HANDLER_LINENO), so an
 * unknown key or a bad value is reported as "file:line: ...".
 */
#include <errno.h>
#include <stdarg.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "zygote/common.h"
#include "zygote/conf.h"

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
	c->settle_ms = c->poll_ms = c->grace_ms = -1;
	c->spare = c->sandbox = c->start_if_needed = c->stable_layout = -1;
	c->max_runs = c->reload_fresh = -1;
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

static int
int_value(struct load *l, const char *key, const char *v, long lo, long hi, int *ret)
{
	char *end;
	long x = strtol(v, &end, 10);
	if (!*v || *end || x < lo || x > hi) {
		problem(l, "bad value for %s: '%s' is not a whole number from %ld to %ld", key, v,
			lo, hi);
		return -1;
	}
	*ret = (int)x;
	return 0;
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
		problem(l, "%s: the line is longer than %d characters, the most this reader takes; "
			   "shorten it or use the environment variable", name, l->r->max);
		return 1;
	}
	char v[4096];
	clean_value(raw, v, sizeof(v));
	int b;
	if (strcmp(name, "python") == 0) {
		if (v[0] != '/')
			problem(l, "bad value for %s: '%s' is not an absolute path", name, v);
		else
			snprintf(c->python, sizeof(c->python), "%s", v);
	} else if (strcmp(name, "settle_ms") == 0) {
		int_value(l, name, v, 0, 3600000, &c->settle_ms);
	} else if (strcmp(name, "max_runs") == 0) {
		int_value(l, name, v, 0, 256, &c->max_runs);
	} else if (strcmp(name, "poll_ms") == 0) {
		int_value(l, name, v, 0, 3600000, &c->poll_ms);
	} else if (strcmp(name, "grace") == 0) {
		char *end;
		double s = strtod(v, &end);
		if (!*v || *end || !(s >= 0 && s <= 3600)) /* NaN too */
			problem(l, "bad value for %s: '%s' is not seconds from 0 to 3600", name, v);
		else
			c->grace_ms = (int)(s * 1000);
	} else if (strcmp(name, "watch_globs") == 0) {
		snprintf(c->watch_globs, sizeof(c->watch_globs), "%s", v);
	} else if (strcmp(name, "ignore_globs") == 0) {
		snprintf(c->ignore_globs, sizeof(c->ignore_globs), "%s", v);
	} else if (strcmp(name, "reload") == 0) {
		if (strcmp(v, "child") != 0 && strcmp(v, "fresh") != 0)
			problem(l, "bad value for %s: '%s' is not child or fresh", name, v);
		else
			c->reload_fresh = v[0] == 'f';
	} else if (strcmp(name, "sandbox") == 0) {
		if ((b = conf_parse_sandbox(v)) < 0)
			problem(l, "bad value for %s: '%s' is not on, off or no-network", name, v);
		else
			c->sandbox = b;
	} else if (strcmp(name, "spare") == 0 || strcmp(name, "start_if_needed") == 0 ||
		   strcmp(name, "stable_layout") == 0) {
		if ((b = conf_parse_bool(v)) < 0)
			problem(l, "bad value for %s: '%s' is not true or false", name, v);
		else if (name[1] == 'p')
			c->spare = b;
		else if (strcmp(name, "stable_layout") == 0)
			c->stable_layout = b;
		else
			c->start_if_needed = b;
	} else {
		problem(l, "unknown key '%s' in [%s]; known keys: python, settle_ms, poll_ms, "
			   "watch_globs, ignore_globs, spare, sandbox, grace, start_if_needed, max_runs, "
			   "stable_layout, reload",
			name, l->section);
	}
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
