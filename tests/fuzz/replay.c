/*
 * main() for a fuzz target built without libFuzzer: replay every file of the
 * directories (or the files) named on the command line through
 * LLVMFuzzerTestOneInput, in name order. This is how the seed corpora run as
 * regression tests in `meson test --suite fuzz`; a target signals a broken
 * invariant by aborting, which fails the test.
 */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read a whole file into memory. Returns NULL on error. */
static uint8_t *
read_file(const char *path, size_t *ret_size)
{
	FILE *f = fopen(path, "rbe");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	uint8_t *buf = malloc(cap);
	while (buf) {
		size_t n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (len < cap)
			break;
		uint8_t *bigger = realloc(buf, cap * 2);
		if (!bigger) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = bigger;
		cap *= 2;
	}
	if (buf && ferror(f)) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (buf)
		*ret_size = len;
	return buf;
}

static int
by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int
main(int argc, char **argv)
{
	const char *prog = basename(argv[0]);
	int files = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS-DIR|FILE...\n", prog);
		return 64;
	}
	for (int a = 1; a < argc; a++) {
		struct stat st;
		if (stat(argv[a], &st) < 0) {
			fprintf(stderr, "%s: %s: %s\n", prog, argv[a], strerror(errno));
			return 1;
		}
		struct dirent **names = NULL;
		int n = 1;
		if (S_ISDIR(st.st_mode)) {
			n = scandir(argv[a], &names, NULL, by_name);
			if (n < 0) {
				fprintf(stderr, "%s: %s: %s\n", prog, argv[a], strerror(errno));
				return 1;
			}
		}
		for (int i = 0; i < n; i++) {
			char path[4096];
			if (names)
				snprintf(path, sizeof(path), "%s/%s", argv[a], names[i]->d_name);
			else
				snprintf(path, sizeof(path), "%s", argv[a]);
			free(names ? names[i] : NULL);
			if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
				continue;
			size_t size = 0;
			uint8_t *data = read_file(path, &size);
			if (!data) {
				fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
				return 1;
			}
			LLVMFuzzerTestOneInput(data, size);
			free(data);
			files++;
		}
		free(names);
	}
	printf("%s: replayed %d inputs\n", prog, files);
	if (files == 0) {
		fprintf(stderr, "%s: no inputs found\n", prog);
		return 1;
	}
	return 0;
}
