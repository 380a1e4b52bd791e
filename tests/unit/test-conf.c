/*
 * Unit tests for conf.c: the [pytest-zygote] section in INI files and
 * [tool.pytest-zygote] in pyproject.toml, which file wins, values, and the
 * file:line of unknown keys and bad values.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "zygote/conf.h"

static char base[] = "/tmp/test-conf-XXXXXX";

static void
put(const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", base, name);
	FILE *f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		bail_out("cannot write %s", path);
}

static void
rm(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", base, name);
	unlink(path);
}

int
main(void)
{
	if (!mkdtemp(base))
		bail_out("mkdtemp");
	struct zconf c;
	char want[600];

	conf_init(&c);
	is_int(conf_load(&c, base), 0, "no config file: no problems");
	is_int(c.settle_ms, -1, "and nothing set");
	is_int(c.max_runs, -1, "max_runs not set");
	is_str(c.file, "", "and no file named");

	put("pytest.ini", "[pytest]\naddopts = -q\n\n[pytest-zygote]\nsettle_ms = 250\n"
			  "poll_ms=100\nwatch_globs = src/**/*.py:tests/*.py\nspare = off\n"
			  "sandbox = TRUE\ngrace = 1.5\nstart_if_needed = yes\nmax_runs = 12\n"
			  "python = /usr/bin/python3\nstable_layout = no\nreload = fresh\n");
	conf_init(&c);
	is_int(conf_load(&c, base), 0, "pytest.ini section: no problems");
	is_int(c.settle_ms, 250, "settle_ms");
	is_int(c.poll_ms, 100, "poll_ms");
	is_str(c.watch_globs, "src/**/*.py:tests/*.py", "watch_globs");
	is_int(c.spare, 0, "spare = off");
	is_int(c.sandbox, 1, "sandbox = TRUE");
	is_int(c.grace_ms, 1500, "grace in seconds");
	is_int(c.start_if_needed, 1, "start_if_needed = yes");
	is_int(c.stable_layout, 0, "stable_layout = no (and start_if_needed stays yes)");
	is_int(c.max_runs, 12, "max_runs");
	is_int(c.reload_fresh, 1, "reload = fresh");
	is_str(c.python, "/usr/bin/python3", "python");
	snprintf(want, sizeof(want), "%s/pytest.ini", base);
	is_str(c.file, want, "the file read is named");

	put(".pytest-zygote.ini", "[pytest-zygote]\nsettle_ms = 7\n");
	conf_init(&c);
	conf_load(&c, base);
	is_int(c.settle_ms, 7, "the dedicated file wins over pytest.ini");
	is_int(c.poll_ms, -1, "and only its section is read");
	rm(".pytest-zygote.ini");
	rm("pytest.ini");

	put("pyproject.toml", "[project]\nname = \"x\"\nclassifiers = [\"a\",\n  \"b\"]\n\n"
			      "[tool.pytest-zygote]\nsettle_ms = 1234  # ms\n"
			      "ignore_globs = \"build/:docs/\"\nspare = false\n");
	conf_init(&c);
	is_int(conf_load(&c, base), 0, "pyproject.toml: no problems from other tables");
	is_int(c.settle_ms, 1234, "a TOML number with a comment");
	is_str(c.ignore_globs, "build/:docs/", "a quoted TOML string");
	is_int(c.spare, 0, "a TOML boolean");

	put("tox.ini",
	    "[tox]\nenvlist = py311\n[pytest-zygote]\nsettle = 5\n"
	    "poll_ms = soon\nspare = maybe\ngrace = -1\npython = python3\nmax_runs = -2\n"
	    "reload = always\n");
	conf_init(&c);
	is_int(conf_load(&c, base), 7, "tox.ini wins over pyproject.toml; seven problems");
	snprintf(want, sizeof(want), "%s/tox.ini:4: unknown key 'settle'", base);
	has_str(c.errors, want, "unknown key with file and line");
	snprintf(want, sizeof(want), "%s/tox.ini:5: bad value for poll_ms: 'soon'", base);
	has_str(c.errors, want, "bad number with file and line");
	snprintf(want, sizeof(want), "%s/tox.ini:6: bad value for spare: 'maybe'", base);
	has_str(c.errors, want, "bad boolean with file and line");
	has_str(c.errors, "tox.ini:7: bad value for grace", "negative seconds");
	has_str(c.errors, "tox.ini:8: bad value for python", "a relative interpreter path");
	has_str(c.errors,
		"tox.ini:9: bad value for max_runs: '-2' is not a whole number from 0 to 256",
		"a negative max_runs");
	is_int(c.max_runs, -1, "and it sets nothing");
	has_str(c.errors, "tox.ini:10: bad value for reload: 'always' is not child or fresh",
		"a reload that is neither child nor fresh");
	is_int(c.reload_fresh, -1, "and it sets nothing either");
	is_int(c.poll_ms, -1, "a bad value sets nothing");

	is_int(conf_parse_bool("On"), 1, "bool On");
	is_int(conf_parse_bool("NO"), 0, "bool NO");
	is_int(conf_parse_bool("2"), -1, "bool 2 is neither");

	is_int(conf_parse_sandbox("no-network"), 2, "sandbox no-network");
	is_int(conf_parse_sandbox("No-Network"), 2, "sandbox No-Network, any case");
	is_int(conf_parse_sandbox("off"), 0, "sandbox off");
	is_int(conf_parse_sandbox("1"), 1, "sandbox 1 (the old boolean) is on");
	is_int(conf_parse_sandbox("strict"), -1, "sandbox strict is unknown");
	is_int(conf_parse_sandbox("no-net"), -1, "no abbreviations");

	put(".pytest-zygote.ini", "[pytest-zygote]\nsandbox = no-network  # hermetic\n");
	conf_init(&c);
	is_int(conf_load(&c, base), 0, "sandbox = no-network: no problems");
	is_int(c.sandbox, 2, "sandbox = no-network");
	put(".pytest-zygote.ini", "[pytest-zygote]\n\nsandbox = strict\n");
	conf_init(&c);
	is_int(conf_load(&c, base), 1, "sandbox = strict: one problem");
	snprintf(want, sizeof(want),
		 "%s/.pytest-zygote.ini:3: bad value for sandbox: 'strict' is not on, off or "
		 "no-network",
		 base);
	has_str(c.errors, want, "bad sandbox policy with file, line and the choices");
	is_int(c.sandbox, -1, "and it sets nothing");
	rm(".pytest-zygote.ini");

	/* A TOML array of globs in pyproject.toml. */
	rm("tox.ini");
	put("pyproject.toml", "[tool.pytest-zygote]\n"
			      "watch_globs = [\"src/**/*.py\", 'tests/*.py']  # two\n"
			      "ignore_globs = [\"gen/\", unquoted]\n");
	conf_init(&c);
	is_int(conf_load(&c, base), 1, "TOML arrays: one problem");
	is_str(c.watch_globs, "src/**/*.py:tests/*.py", "a TOML array of globs, joined");
	has_str(c.errors,
		"bad value for ignore_globs: '[\"gen/\", unquoted]' is not a list of quoted "
		"globs",
		"an array with an unquoted item is refused");
	is_str(c.ignore_globs, "", "and sets nothing");

	/* The environment gets the file's checks and words, and one spelling. */
	char errs[2048];
	setenv("PYTEST_ZYGOTE_SPARE", "False", 1);
	setenv("PYTEST_ZYGOTE_MAX_RUNS", "12", 1);
	setenv("PYTEST_ZYGOTE_SANDBOX", "yes", 1);
	is_int(conf_check_env(CONF_AT_START, errs, sizeof(errs)), 0, "good values pass");
	is_str(getenv("PYTEST_ZYGOTE_SPARE"), "0", "a boolean is written back as 0");
	is_str(getenv("PYTEST_ZYGOTE_SANDBOX"), "on", "sandbox yes is on");
	setenv("PYTEST_ZYGOTE_SPARE", "maybe", 1);
	setenv("PYTEST_ZYGOTE_MAX_RUNS", "lots", 1);
	setenv("PYTEST_ZYGOTE_TIMING", "sometimes", 1);
	is_int(conf_check_env(CONF_AT_START, errs, sizeof(errs)), 2, "two bad values at start");
	has_str(errs,
		"bad value for PYTEST_ZYGOTE_SPARE in the environment: 'maybe' is not true "
		"or false",
		"a bad boolean, named");
	has_str(errs,
		"bad value for PYTEST_ZYGOTE_MAX_RUNS in the environment: 'lots' is not a "
		"whole number from 0 to 256",
		"a bad number, with the file's words");
	is_int(conf_check_env(CONF_AT_RUN, errs, sizeof(errs)), 1, "a run reads only TIMING");
	has_str(errs, "PYTEST_ZYGOTE_TIMING in the environment: 'sometimes'", "named");
	unsetenv("PYTEST_ZYGOTE_SPARE");
	unsetenv("PYTEST_ZYGOTE_MAX_RUNS");
	unsetenv("PYTEST_ZYGOTE_SANDBOX");
	unsetenv("PYTEST_ZYGOTE_TIMING");

	rm("tox.ini");
	rm("pyproject.toml");
	rmdir(base);
	return done_testing();
}
