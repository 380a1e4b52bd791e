/*
 * What the server says about itself: the status text, and the lines to the
 * `start` that waits (warm-up progress, then one report). Changes nothing
 * but the report pipe, and never blocks on it for progress.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "build-id.h"
#include "config.h"
#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/proto.h"
#include "zygote/sandbox.h"
#include "internal.h"

/* One line to the `start` process that waits for us, then close the pipe. */
void
status_report(const char *fmt, ...)
{
	if (s.o->report_fd < 0)
		return;
	char line[1200];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(s.o->report_fd, line, (size_t)n);
	(void)w;
	close(s.o->report_fd);
	((struct supervisor_opts *)s.o)->report_fd = -1;
}

/*
 * Warm-up progress for the `start` that waits: "progress phase=P modules=N"
 * lines before the one report line. The pipe is non-blocking: a `start`
 * that stopped reading loses progress, never the supervisor.
 */
void
status_report_progress(const char *text)
{
	if (s.o->report_fd < 0)
		return;
	char phase[160], mods[32], line[256];
	proto_kv_get(text, "phase", phase, sizeof(phase));
	proto_kv_get(text, "modules", mods, sizeof(mods));
	int n = snprintf(line, sizeof(line), "progress modules=%s phase=%s\n", mods, phase);
	if (n <= 0 || (size_t)n >= sizeof(line))
		return;
	int fl = fcntl(s.o->report_fd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(s.o->report_fd, F_SETFL, fl | O_NONBLOCK);
	ssize_t w = write(s.o->report_fd, line, (size_t)n);
	(void)w;
}

/* A process's resident set size in KiB (VmRSS), or 0. */
static long
rss_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	long kb = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* The state word of the status text. */
static const char *
state_name(void)
{
	if (s.stopping)
		return "stopping";
	if (gen_serving() && s.fresh_needed)
		return "refreshing";
	if (gen_serving())
		return "ready";
	return s.ever_ready ? "restarting" : "warming";
}

/* The status text (key=value lines) a STATUS request is answered with. */
void
status_text(char *buf, size_t size)
{
	static const struct gen none = { .info = "" };
	const struct gen *g = s.cur >= 0 ? &s.gens[s.cur] : &none;
	char v[256], t[256], n[256], p[256], m[32], fr[1700];
	snprintf(fr, sizeof(fr), "%s%s%s%s", s.fresh_needed ? s.fresh_reason : "",
		 s.fresh_needed && s.fresh_failed[0] ? " (the fresh zygote could not start: " : "",
		 s.fresh_needed ? s.fresh_failed : "",
		 s.fresh_needed && s.fresh_failed[0] ? ")" : "");
	int len = snprintf(
		buf, size,
		"pid=%d\nroot=%s\npython=%s\nsocket=%s\nlog=%s\nuptime_s=%.1f\n"
		"generation=%d\nzygote_pid=%d\nmodules=%s\nproject_files=%s\nwarmup_s=%.3f\n"
		"runs=%ld\nrunning=%d\nrss_kb=%ld\nthreads=%s\nstate=%s\nsandbox=%s\n"
		"version=%s\nrefreshes=%ld\nwarming=%d\ndirty_count=%ld\nwatching=%s\n"
		"fresh_reason=%s\nlast_refresh_s=%.3f\nwarm_phase=%s\nwarm_modules=%s\n"
		"queued=%d\nmax_runs=%d\nvariants=%d\nreload=%s\nidle_s=%.1f\ninstance=%s\n"
		"build=%s\nprotocol=%u\nwatchers=%d\npreparing=%d\n",
		(int)getpid(), s.o->paths.root, s.o->python, s.o->paths.sock, s.o->paths.log,
		(double)(now_ms() - s.start_ms) / 1000.0, g->number, (int)g->pid,
		gen_info_get(g->info, "modules", v, sizeof(v)),
		gen_info_get(g->info, "project_files", n, sizeof(n)), g->warmup_s, s.runs,
		s.running, g->pid ? rss_kb(g->pid) : 0,
		gen_info_get(g->info, "threads", t, sizeof(t)), state_name(), sandbox_name(),
		PYZ_VERSION, s.refreshes, s.next >= 0 ? s.gens[s.next].number : 0, s.dirty_total,
		s.poll_ms > 0 ? "poll"
		: s.watch     ? "inotify"
			      : "off",
		fr, s.refreshes ? g->warmup_s : 0.0,
		s.next >= 0 ? gen_info_get(s.gens[s.next].progress, "phase", p, sizeof(p)) : "",
		s.next >= 0 ? gen_info_get(s.gens[s.next].progress, "modules", m, sizeof(m)) : "",
		s.queued, s.max_runs, s.nvariants, s.reload_fresh ? "fresh" : "child",
		s.was_busy ? 0.0 : (double)(now_ms() - s.last_active_ms) / 1000.0,
		s.o->instance ? s.o->instance : "", PYZ_BUILD_ID, PROTO_VERSION, s.watchers,
		g->pid && g->ready && !g->prepared);
	for (int i = 0; len >= 0 && (size_t)len < size && i < s.ndirty; i++)
		len += snprintf(buf + len, size - (size_t)len, "dirty=%s\n", s.dirty[i]);
	if (len < 0 || (size_t)len >= size)
		log_warn("status text truncated");
}
