/*
 * Log lines for people: "pytest-zygote: error: ...", coloured only on a
 * terminal. In the daemon every line gets a timestamp and the process role.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zygote/conf.h"
#include "zygote/log.h"

static const char *log_who = "pytest-zygote";
static int log_timestamps;
static enum log_level log_level = LOG_INFO;

void
log_init(const char *who, int timestamps)
{
	log_who = who;
	log_timestamps = timestamps;
	const char *d = getenv("PYTEST_ZYGOTE_DEBUG");
	if (d && conf_parse_bool(d) == 1)
		log_level = LOG_DEBUG;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *names[] = { "error", "warning", "", "debug" };
	static const char *colours[] = { "\033[1;31m", "\033[1;33m", "", "\033[2m" };
	if (level > log_level)
		return;
	int colour = !log_timestamps && isatty(STDERR_FILENO) && !getenv("NO_COLOR");
	char line[2048];
	size_t n = 0;
	if (log_timestamps) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n += strftime(line, sizeof(line), "%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ld [%d] ",
				      ts.tv_nsec / 1000000, (int)getpid());
	}
	n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", log_who);
	if (n < sizeof(line) && *names[level])
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%s:%s ",
				      colour ? colours[level] : "", names[level],
				      colour ? "\033[0m" : "");
	if (n < sizeof(line)) {
		va_list ap;
		va_start(ap, fmt);
		n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
	}
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line so concurrent processes do not interleave. */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

/*
 * What libbsd's strnvis(VIS_CSTYLE | VIS_NL | VIS_TAB | VIS_OCTAL) writes in
 * the C locale (tests/unit/test-log.c compares the two byte for byte), without
 * libbsd: the client binary links nothing but libc and inih. Printable ASCII
 * stays, a backslash doubles, \a \b \t \n \v \f \r are C escapes and every
 * other byte is three octal digits. An escape that does not fit is left out
 * whole.
 */
const char *
log_escape(const char *s)
{
	static char buf[1024];
	static const char cstyle[] = "\\a\\b\\t\\n\\v\\f\\r";
	size_t n = 0;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		char e[5];
		size_t k;
		if (*c >= 0x20 && *c < 0x7f && *c != '\\') {
			e[0] = (char)*c;
			k = 1;
		} else if (*c == '\\') {
			memcpy(e, "\\\\", 2);
			k = 2;
		} else if (*c >= '\a' && *c <= '\r') {
			memcpy(e, cstyle + 2 * (*c - '\a'), 2);
			k = 2;
		} else {
			snprintf(e, sizeof(e), "\\%03o", *c);
			k = 4;
		}
		if (n + k >= sizeof(buf))
			break;
		memcpy(buf + n, e, k);
		n += k;
	}
	buf[n] = '\0';
	return buf;
}
