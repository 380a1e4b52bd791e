/*
 * Log lines for people: "pytest-zygote: error: ...", coloured only on a
 * terminal. In the daemon every line gets a timestamp and the process role.
 */
#define LIBBSD_NETBSD_VIS 1
#include <bsd/vis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
	if (d && *d && strcmp(d, "0") != 0)
		log_level = LOG_DEBUG;
}

void
log_set_level(enum log_level level)
{
	log_level = level;
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

const char *
log_escape(const char *s)
{
	static char buf[1024];
	strnvis(buf, sizeof(buf), s, VIS_CSTYLE | VIS_NL | VIS_TAB | VIS_OCTAL);
	return buf;
}
