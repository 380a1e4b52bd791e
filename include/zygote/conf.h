/*
 * Configuration: defaults, then the project's config section, then the
 * environment, then flags (each later one wins). This module reads the
 * section with inih and reports unknown keys and bad values with file and
 * line; it never logs.
 *
 * The section is [pytest-zygote] in .pytest-zygote.ini, pytest.ini, tox.ini
 * or setup.cfg, or [tool.pytest-zygote] in pyproject.toml (simple `key =
 * value` lines: strings quoted, numbers and true/false bare), in that order;
 * the first file that has it is the one read.
 */
#ifndef ZYGOTE_CONF_H
#define ZYGOTE_CONF_H

#include <limits.h>
#include <stddef.h>

struct zconf {
	char python[PATH_MAX];   /* "" = the build's interpreter */
	int settle_ms;           /* -1 = not set */
	int poll_ms;             /* -1 = not set */
	char watch_globs[4096];  /* "" = not set */
	char ignore_globs[4096]; /* "" = not set */
	int spare;               /* -1 = not set, 0/1 */
	int collect_ahead_ms;    /* -1 = not set, 0 = off */
	int stable_layout;       /* -1 = not set, 0/1 */
	int sandbox;             /* -1 = not set, 0 off, 1 on, 2 no-network */
	int grace_ms;            /* -1 = not set */
	int start_if_needed;     /* -1 = not set, 0/1 */
	int max_runs;            /* -1 = not set, 0 = no limit */
	int reload_fresh;        /* -1 = not set, 0 reload in the child, 1 fresh */
	int idle_timeout_ms;     /* -1 = not set, 0 = never */
	int wait_timeout_ms;     /* -1 = not set, 0 = no bound */
	char file[PATH_MAX];     /* the file read, or "" */
	char errors[2048];       /* "file:line: ..." lines, or "" */
	int nerrors;
};

/*
 * Every setting, declared once: its config key (NULL: environment only), its
 * environment variable, its kind and range, its default and one line of
 * help. The config file, the environment check of the client and the
 * `pytest-zygote settings` listing all read this table, so a value means the
 * same and a bad one gets the same words wherever it comes from.
 */
enum conf_kind {
	CONF_BOOL,    /* 1/0, true/false, yes/no, on/off, any case; normalized to 1/0 */
	CONF_INT,     /* a whole number from lo to hi */
	CONF_SECONDS, /* seconds (a fraction allowed) from lo to hi; stored as ms */
	CONF_PATH,    /* an absolute path */
	CONF_GLOBS,   /* colon-separated globs (a TOML array of strings in pyproject.toml) */
	CONF_CHOICE,  /* one of the words in choices, '|'-separated */
	CONF_TEXT,    /* anything */
};

/* Who reads it: start (the server's environment), a run's environment, the client. */
#define CONF_AT_START 1
#define CONF_AT_RUN 2
#define CONF_AT_CLIENT 4

struct conf_setting {
	const char *key;
	const char *env;
	enum conf_kind kind;
	long lo, hi;
	const char *choices;
	const char *def;
	const char *help;
	int when;
	long field;  /* offsetof in struct zconf, or -1 */
	size_t size; /* of a text field */
};

extern const struct conf_setting conf_settings[];
extern const size_t conf_nsettings;

/*
 * Check value v for setting s. On success writes its normalized text to norm
 * (booleans 1/0, seconds as given) and returns 0; else writes why it is bad
 * ("'maybe' is not true or false") and returns -1.
 */
int conf_check(const struct conf_setting *s, const char *v, char *norm, size_t normsize, char *why,
	       size_t whysize);

/*
 * Check every setting that the environment gives and `when` reads: a good
 * value is written back normalized (so the server and the child read one
 * spelling), a bad one is listed in errors as "bad value for NAME in the
 * environment: why" lines (the file's say "file:line: bad value for key: why").
 * Returns the number of bad values.
 */
int conf_check_env(int when, char *errors, size_t size);

/* Everything "not set". */
void conf_init(struct zconf *c);

/*
 * Read the project's section under root into c (only the keys it sets).
 * Returns 0 (also when there is no section), or the number of problems
 * found (listed in c->errors; the valid keys are still taken).
 */
int conf_load(struct zconf *c, const char *root);

/* Read one file's section (name: "pytest-zygote" or "tool.pytest-zygote").
 * Returns 1 when the file has the section, 0 when not, -errno. */
int conf_load_file(struct zconf *c, const char *path, const char *section);

/* Parse a boolean as the environment and config accept it: 1/0, true/false,
 * yes/no, on/off, any case. Returns 0/1, or -1 when it is none of those. */
int conf_parse_bool(const char *s);

/* Parse a sandbox policy: a boolean as above (off/on), or "no-network".
 * Returns 0 off, 1 on, 2 no-network (enum sandbox_mode), or -1. */
int conf_parse_sandbox(const char *s);

#endif
