/*
 * Fuzz target for the configuration reader (src/common/conf.c, inih underneath).
 * The input is a file's contents; conf_load_file reads it twice, the two
 * ways a project can hold the section:
 *
 *  - as an INI file (.pytest-zygote.ini, pytest.ini, tox.ini, setup.cfg),
 *    section [pytest-zygote], the bytes as they are;
 *  - as pyproject.toml, section [tool.pytest-zygote], with that header put in
 *    front of the bytes so every key = value line reaches the handler.
 *
 * conf_load_file takes a path, so the bytes go into a memfd opened again
 * through /proc/self/fd (no disk, nothing to clean up). The target aborts
 * when the result breaks what callers rely on: the return value is 0 or 1,
 * a file without the section changes nothing, every value taken is in its
 * documented range, the strings are terminated, and every problem is one
 * "file:line: message" line whose line number exists in the input.
 *
 * Built with -DFUZZING and -fsanitize=fuzzer it is a libFuzzer target;
 * otherwise replay.c's main() replays a corpus (`meson test --suite fuzz`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zygote/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char toml_header[] = "[tool.pytest-zygote]\n";

static void
check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz-conf: invariant broken: %s\n", what);
		abort();
	}
}

static int
terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

/* Lines in a file of this content, as a reader counts them. */
static long
count_lines(const uint8_t *data, size_t size)
{
	long n = 0;
	for (size_t i = 0; i < size; i++)
		if (data[i] == '\n')
			n++;
	if (size > 0 && data[size - 1] != '\n')
		n++;
	return n;
}

/* Every complete line of c->errors is "PATH:LINE: MESSAGE" with 1 <= LINE <= lines. */
static void
check_errors(const struct zconf *c, const char *path, long lines)
{
	size_t plen = strlen(path);
	const char *p = c->errors;
	int seen = 0;

	check(terminated(c->errors, sizeof(c->errors)), "errors terminated");
	check(c->nerrors >= 0, "nerrors not negative");
	check((c->nerrors == 0) == (c->errors[0] == '\0'), "errors text iff nerrors");
	for (const char *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		check(strncmp(p, path, plen) == 0 && p[plen] == ':',
		      "an error starts with the path");
		char *end;
		long line = strtol(p + plen + 1, &end, 10);
		check(end > p + plen + 1 && end[0] == ':' && end[1] == ' ',
		      "an error has a line number");
		if (line < 1 || line > lines) {
			fprintf(stderr, "fuzz-conf: line %ld of a %ld-line file: %.*s\n", line,
				lines, (int)(nl - p), p);
			check(0, "the line number of an error is a line of the file");
		}
		check(nl > end + 2, "an error has a message");
		seen++;
	}
	/* The buffer may cut the last lines off, never invent them. */
	check(seen <= c->nerrors, "no more error lines than errors");
}

static void
check_conf(const struct zconf *c, int r, const char *path, long lines)
{
	struct zconf unset;

	check(r == 0 || r == 1, "conf_load_file returns 0 or 1 on a readable file");
	check_errors(c, path, lines);
	check(terminated(c->python, sizeof(c->python)), "python terminated");
	check(terminated(c->watch_globs, sizeof(c->watch_globs)), "watch_globs terminated");
	check(terminated(c->ignore_globs, sizeof(c->ignore_globs)), "ignore_globs terminated");
	check(terminated(c->file, sizeof(c->file)), "file terminated");
	if (r == 0) {
		conf_init(&unset);
		check(memcmp(c, &unset, sizeof(unset)) == 0, "no section: nothing set");
		return;
	}
	check(strcmp(c->file, path) == 0, "the file read is named");
	check(c->python[0] == '\0' || c->python[0] == '/', "python is absolute");
	check(c->settle_ms >= -1 && c->settle_ms <= 3600000, "settle_ms in range");
	check(c->poll_ms >= -1 && c->poll_ms <= 3600000, "poll_ms in range");
	check(c->grace_ms >= -1 && c->grace_ms <= 3600000, "grace in range");
	check(c->spare >= -1 && c->spare <= 1, "spare is a boolean");
	check(c->sandbox >= -1 && c->sandbox <= 2, "sandbox is unset, off, on or no-network (2)");
	check(c->start_if_needed >= -1 && c->start_if_needed <= 1, "start_if_needed is a boolean");
}

/* Make fd hold exactly these bytes. */
static void
put(int fd, const void *a, size_t alen, const void *b, size_t blen)
{
	check(ftruncate(fd, 0) == 0, "ftruncate memfd");
	check(pwrite(fd, a, alen, 0) == (ssize_t)alen, "write memfd");
	if (blen)
		check(pwrite(fd, b, blen, (off_t)alen) == (ssize_t)blen, "write memfd");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	struct zconf c;
	int r;

	if (fd < 0) {
		fd = memfd_create("fuzz-conf", MFD_CLOEXEC);
		check(fd >= 0, "memfd_create");
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}

	put(fd, data, size, NULL, 0);
	conf_init(&c);
	r = conf_load_file(&c, path, "pytest-zygote");
	check_conf(&c, r, path, count_lines(data, size));

	put(fd, toml_header, sizeof(toml_header) - 1, data, size);
	conf_init(&c);
	r = conf_load_file(&c, path, "tool.pytest-zygote");
	check_conf(&c, r, path, 1 + count_lines(data, size));

	/* The same words the environment variables take. */
	char word[32];
	size_t n = size < sizeof(word) - 1 ? size : sizeof(word) - 1;
	memcpy(word, data, n);
	word[n] = '\0';
	r = conf_parse_bool(word);
	check(r >= -1 && r <= 1, "conf_parse_bool returns -1, 0 or 1");
	return 0;
}
