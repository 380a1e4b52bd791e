/*
 * Unit tests for src/common/log.c's log_escape: it replaced libbsd's strnvis so that
 * the client binary needs no libbsd, and must write what strnvis wrote. This
 * program links libbsd (the server does anyway) and compares the two on every
 * byte, on byte pairs, and on mixed text; then the length limit, where our
 * escape drops whole escapes and always ends the string.
 */
#define LIBBSD_NETBSD_VIS 1
#include <bsd/vis.h>
#include <stdio.h>
#include <string.h>

#include "zygote/log.h"

#include "tap.h"

#define VIS_FLAGS (VIS_CSTYLE | VIS_NL | VIS_TAB | VIS_OCTAL)

static const char *
reference(const char *s)
{
	static char buf[8192];
	strnvis(buf, sizeof(buf), s, VIS_FLAGS);
	return buf;
}

int
main(void)
{
	/* Every byte alone, then after and before a digit (C escapes of NUL
	 * would care; no other escape may). */
	int bad = 0, first_bad = 0;
	for (int c = 1; c < 256; c++) {
		char in[4] = { (char)c, 0 };
		char in2[4] = { '7', (char)c, '7', 0 };
		if (strcmp(log_escape(in), reference(in)) != 0 ||
		    strcmp(log_escape(in2), reference(in2)) != 0) {
			if (!bad++)
				first_bad = c;
		}
	}
	is_int(bad, 0, "every byte escapes as strnvis escapes it (first differing: %d)", first_bad);

	bad = 0;
	for (int a = 1; a < 256; a++) {
		for (int b = 1; b < 256; b += 7) {
			char in[3] = { (char)a, (char)b, 0 };
			bad += strcmp(log_escape(in), reference(in)) != 0;
		}
	}
	is_int(bad, 0, "byte pairs, UTF-8 lead and continuation bytes among them");

	static const char *texts[] = {
		"plain text, spaces and punctuation: ~!@#$%^&*()_+{}|:\"<>?",
		"back\\slash and \\n (not a newline)",
		"line\nbreak\ttab\rcr\a\b\v\f",
		"h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac \xf0\x9f\x90\x8d",
		"\x1b[31mred\x1b[0m",
		"\x7f\x80\xff",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		is_str(log_escape(texts[i]), reference(texts[i]), "text %zu as strnvis", i);
	is_str(log_escape("a\\b\n\x01"), "a\\\\b\\n\\001", "the escapes themselves");
	is_str(log_escape(""), "", "empty");

	/* 1023 characters fit the buffer; an escape that does not fit is
	 * left out whole. */
	char longin[3000];
	memset(longin, 'x', sizeof(longin) - 1);
	longin[sizeof(longin) - 1] = '\0';
	is_int((long long)strlen(log_escape(longin)), 1023, "long text cut at 1023 bytes");
	memset(longin, '\x01', sizeof(longin) - 1);
	const char *e = log_escape(longin);
	is_int((long long)strlen(e), 1020, "octal escapes cut at a whole escape (255 x 4)");
	is_str(e + 1016, "\\001", "the last escape is whole");
	longin[1021] = '\n';
	memset(longin, 'y', 1021);
	e = log_escape(longin);
	is_int((long long)strlen(e), 1023, "a two-byte escape fits in the last two bytes");
	is_str(e + 1021, "\\n", "... whole");
	return done_testing();
}
