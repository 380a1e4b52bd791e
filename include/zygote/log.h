/*
 * Logging for program code (helpers return -errno and do not log). Messages go
 * to stderr with a "pytest-zygote: " prefix; in the daemon, stderr is the log
 * file. Colour only when stderr is a terminal and NO_COLOR is unset.
 */
#ifndef ZYGOTE_LOG_H
#define ZYGOTE_LOG_H

#include <stdarg.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_init(const char *who, int timestamps);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Escape untrusted text for a log line, as libbsd's strnvis(VIS_CSTYLE | VIS_NL |
 * VIS_TAB | VIS_OCTAL) would (see log.c). Returns a static buffer. */
const char *log_escape(const char *s);

#endif
