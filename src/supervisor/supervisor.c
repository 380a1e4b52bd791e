/*
 * The supervisor: socket, pid file, generations, status. One thread, one poll
 * loop, signals through a signalfd. It must never initialise Python, so that
 * nothing a project does (a crashing C extension, a hanging import) can take
 * the socket down: the zygote runs in its own process, and when it dies the
 * supervisor starts a new one.
 *
 * Generations: the current one serves runs; after project files change and
 * the tree has been quiet for the settle time, a fresh one warms up in the
 * background and takes over when warm, and the old one drains. A change
 * outside the project (installed packages, the interpreter) or to pytest's
 * configuration means children cannot be trusted: runs wait for the fresh
 * generation, and the client is told why.
 */
#include <bsd/libutil.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "zygote/common.h"
#include "zygote/fdpass.h"
#include "zygote/log.h"
#include "zygote/proctree.h"
#include "zygote/proto.h"
#include "zygote/sandbox.h"
#include "zygote/spawn.h"
#include "zygote/supervisor.h"
#include "zygote/watch.h"

#define MAX_CONNS 512
#define DEFAULT_GRACE_MS 5000

struct conn {
	int fd;
	struct fdpass_reader rd;
	struct proto_decoder dec;
	int waiting; /* request complete, parked until a generation is warm / stop ends */
	long long queued_ms; /* > 0: parked because max_runs runs are in progress */
	long queue_seq;      /* first come, first served */
	int noticed;         /* the client was told it waits */
};

struct gen {
	pid_t pid; /* 0: a free slot */
	int ctl;   /* -1 once the zygote closed it */
	int number;
	int ready;
	int draining;
	int running; /* its runs in progress */
	struct fdpass_reader rd;
	char info[1024]; /* the Z_READY text */
	char *files;     /* the Z_FILES text */
	char progress[256]; /* the last Z_PROGRESS text, while warming */
	long long started_ms;
	double warmup_s;
	int seed_used; /* a run was forked from it: its hash seed is not new */
};

/* Zygotes for other environments (variants, started by clients we sent there). */
#define MAX_VARIANTS 16
struct variant {
	char id[20];
	long long used_ms;
};

#define MAX_GENS 8
#define MAX_DIRTY 64
#define DEFAULT_SETTLE_MS 300
#define DRAIN_GRACE_MS 600000 /* an old generation's runs may take long */

static struct {
	const struct supervisor_opts *o;
	struct pidfh *pfh;
	int listen_fd;
	int sigfd;
	struct gen gens[MAX_GENS];
	int cur;  /* index of the generation serving runs, or -1 */
	int next; /* index of the generation warming up, or -1 */
	int generations;
	/* change tracking */
	struct watch *watch;  /* the project tree */
	int ext_fd;           /* inotify on directories outside the project */
	char *dirty[MAX_DIRTY];
	int ndirty;           /* paths kept */
	long dirty_total;     /* changes seen since the current generation started */
	long long last_change_ms;
	int settle_ms;
	int poll_ms;          /* > 0: poll the tree instead of inotify */
	long long next_poll_ms;
	int fresh_needed;     /* runs must wait for a generation started after now */
	long long fresh_since_ms;
	char fresh_reason[600];
	long refreshes;
	struct conn *conns[MAX_CONNS];
	int nconns;
	long runs;
	int running;
	int max_runs;   /* 0: no limit */
	int queued;
	long queue_seq;
	int32_t next_run;
	int stopping;
	int grace_ms;
	int ever_ready;
	int early_failures;
	long long start_ms;
	long long accept_paused_until;
	long long respawn_at;
	int reload_fresh;     /* reload = fresh: every edit waits for a fresh generation */
	/* directories of project files imports read (D and F lines), on ext_fd */
	struct data_dir {
		int wd;
		char *dir;
	} *data_dirs;
	int ndata_dirs;
	/* variants: the zygotes for other environments this server sent runs to */
	struct variant variants[MAX_VARIANTS];
	int nvariants;
	int max_variants;
	int variant_fds[MAX_VARIANTS]; /* STOP requests to variants, until they answer */
	int nvariant_fds;
	long long variants_deadline; /* stopping: when to stop waiting for them */
	int is_variant;       /* this server is one (its instance has a '~') */
	long long idle_ms;    /* a variant stops after this long without runs */
	long long last_run_ms;
} s = { .listen_fd = -1, .sigfd = -1, .cur = -1, .next = -1, .ext_fd = -1 };

/* One line to the `start` process that waits for us, then close the pipe. */
static void
report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
report(const char *fmt, ...)
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
static void
report_progress(const char *text)
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

/* A value of a generation's Z_READY text ("" when absent). */
static const char *
info_get(const char *info, const char *key, char *buf, size_t size)
{
	proto_kv_get(info, key, buf, size);
	return buf;
}

/* The generation serving runs, if it is warm. */
/*
 * Where zygotes keep the pages their runs wrote (zygote.c, learn_save) for
 * the next generation: beside the socket, removed when the server stops.
 */
static void
pages_path(char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s.pages", s.o->paths.dir, s.o->paths.name);
}

/* What the last learning run reported (_zygote._learn_and_import), beside it. */
static void
learned_path(char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s.learned", s.o->paths.dir, s.o->paths.name);
}

static void
unlink_pages(void)
{
	char pages[PATH_MAX + 128];
	pages_path(pages, sizeof(pages));
	unlink(pages);
	learned_path(pages, sizeof(pages));
	unlink(pages);
}

static struct gen *
serving(void)
{
	if (s.cur < 0 || !s.gens[s.cur].pid || !s.gens[s.cur].ready || s.gens[s.cur].ctl < 0)
		return NULL;
	return &s.gens[s.cur];
}

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

static const char *
state_name(void)
{
	if (s.stopping)
		return "stopping";
	if (serving() && s.fresh_needed)
		return "refreshing";
	if (serving())
		return "ready";
	return s.ever_ready ? "restarting" : "warming";
}

static void
status_text(char *buf, size_t size)
{
	static const struct gen none = { .info = "" };
	const struct gen *g = s.cur >= 0 ? &s.gens[s.cur] : &none;
	char v[256], t[256], n[256], p[256], m[32];
	int len = snprintf(buf, size,
		 "pid=%d\nroot=%s\npython=%s\nsocket=%s\nlog=%s\nuptime_s=%.1f\n"
		 "generation=%d\nzygote_pid=%d\nmodules=%s\nproject_files=%s\nwarmup_s=%.3f\n"
		 "runs=%ld\nrunning=%d\nrss_kb=%ld\nthreads=%s\nstate=%s\nsandbox=%s\n"
		 "version=%s\nrefreshes=%ld\nwarming=%d\ndirty_count=%ld\nwatching=%s\n"
		 "fresh_reason=%s\nlast_refresh_s=%.3f\nwarm_phase=%s\nwarm_modules=%s\n"
		 "queued=%d\nmax_runs=%d\nvariants=%d\nreload=%s\n",
		 (int)getpid(), s.o->paths.root, s.o->python, s.o->paths.sock, s.o->paths.log,
		 (double)(now_ms() - s.start_ms) / 1000.0, g->number, (int)g->pid,
		 info_get(g->info, "modules", v, sizeof(v)),
		 info_get(g->info, "project_files", n, sizeof(n)), g->warmup_s, s.runs, s.running,
		 g->pid ? rss_kb(g->pid) : 0, info_get(g->info, "threads", t, sizeof(t)),
		 state_name(), sandbox_name(), PYZ_VERSION, s.refreshes,
		 s.next >= 0 ? s.gens[s.next].number : 0, s.dirty_total,
		 s.poll_ms > 0 ? "poll" : s.watch ? "inotify" : "off",
		 s.fresh_needed ? s.fresh_reason : "", s.refreshes ? g->warmup_s : 0.0,
		 s.next >= 0 ? info_get(s.gens[s.next].progress, "phase", p, sizeof(p)) : "",
		 s.next >= 0 ? info_get(s.gens[s.next].progress, "modules", m, sizeof(m)) : "",
		 s.queued, s.max_runs, s.nvariants, s.reload_fresh ? "fresh" : "child");
	for (int i = 0; len >= 0 && (size_t)len < size && i < s.ndirty; i++)
		len += snprintf(buf + len, size - (size_t)len, "dirty=%s\n", s.dirty[i]);
	if (len < 0 || (size_t)len >= size)
		log_warn("status text truncated");
}

/*
 * Close a client's socket after a reply. Unread bytes in our receive queue
 * would make the kernel reset the connection, and the client would see
 * ECONNRESET instead of our reply: read what is there first.
 */
static void
close_draining(int fd)
{
	char buf[4096];
	shutdown(fd, SHUT_WR);
	for (int k = 0; k < 64 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; k++)
		;
	close(fd);
}

static void
conn_close(int i)
{
	struct conn *c = s.conns[i];
	if (c->queued_ms)
		s.queued--;
	fdpass_reader_finish(&c->rd);
	proto_decoder_finish(&c->dec);
	if (c->fd >= 0)
		close_draining(c->fd);
	free(c);
	s.conns[i] = s.conns[--s.nconns];
}

static void
conn_reply(int i, uint32_t type, const char *text)
{
	/* The socket is non-blocking; a reply is small and the buffer empty. */
	fdpass_send_msg(s.conns[i]->fd, type, text, strlen(text) + 1);
	conn_close(i);
}

static void
reply_status(int i)
{
	char text[16384];
	status_text(text, sizeof(text));
	conn_reply(i, PROTO_MSG_STATUS, text);
}

/* Hand a complete run request to the current generation. */
static void
hand_over(int i)
{
	struct conn *c = s.conns[i];
	struct proto_buf b = { 0 };
	size_t fds_off;
	int32_t id = ++s.next_run;
	struct gen *g = serving();
	int r = proto_buf_put_i32(&b, PROTO_MSG_Z_RUN, id);
	if (r == 0)
		r = fdpass_send(g->ctl, b.data, b.len, &c->fd, 1, 0);
	proto_buf_free(&b);
	if (r == 0)
		r = proto_request_encode(&b, &c->dec.req, &fds_off);
	if (r == 0)
		r = fdpass_send(g->ctl, b.data, b.len, c->dec.req.fds, c->dec.req.nfds, fds_off);
	proto_buf_free(&b);
	if (r < 0) {
		log_warn("cannot hand run %d to the zygote: %s", (int)id, strerror(-r));
		conn_reply(i, PROTO_MSG_ERROR, "the zygote is not answering; it is being restarted");
		return;
	}
	s.runs++;
	s.running++;
	g->running++;
	g->seed_used = 1;
	s.last_run_ms = now_ms();
	/* The zygote holds the connection and the fds now: a plain close, since
	 * shutdown() would act on the socket the zygote shares. */
	close(c->fd);
	c->fd = -1;
	conn_close(i);
}

static void begin_stop(int grace_ms);
static void watch_settle(void);
static void ext_drain(void);
static int spawn_generation(int replay);
static void on_change(const char *path, void *arg);

/* The value of name in a request's environment, or NULL. */
static const char *
req_env(const struct proto_request *r, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < r->envc; i++)
		if (strncmp(r->env[i], name, n) == 0 && r->env[i][n] == '=')
			return r->env[i] + n + 1;
	return NULL;
}

/*
 * Options plugins put into the environment when pytest configures, before
 * what they configure reads it: pytest-django's --ds and --dc win over
 * DJANGO_SETTINGS_MODULE and DJANGO_CONFIGURATION.
 */
static const struct {
	const char *opt, *var;
} option_vars[] = {
	{ "--ds", "DJANGO_SETTINGS_MODULE" },
	{ "--dc", "DJANGO_CONFIGURATION" },
};

/* A variable as the run's session will have it: its option's value, else the environment's. */
static const char *
run_env(const struct proto_request *r, const char *name)
{
	for (size_t k = 0; k < ARRAY_SIZE(option_vars); k++) {
		if (strcmp(option_vars[k].var, name) != 0)
			continue;
		const char *found = NULL;
		size_t ol = strlen(option_vars[k].opt);
		for (size_t i = 0; i < r->argc; i++) {
			const char *a = r->argv[i];
			if (strcmp(a, "--") == 0)
				break;
			if (strcmp(a, option_vars[k].opt) == 0 && i + 1 < r->argc)
				found = r->argv[++i];
			else if (strncmp(a, option_vars[k].opt, ol) == 0 && a[ol] == '=')
				found = a + ol + 1;
		}
		if (found)
			return found;
	}
	return req_env(r, name);
}

/*
 * Interpreter settings CPython reads once, when it starts: a run gets a
 * zygote started with the same. (The child applies PYTHONPATH,
 * PYTHONWARNINGS, PYTHONDONTWRITEBYTECODE, PYTHONUNBUFFERED and
 * PYTHONFAULTHANDLER itself.)
 */
static const char *const interp_vars[] = {
	"PYTHONHASHSEED",	 "PYTHONDEVMODE",      "PYTHONOPTIMIZE",
	"PYTHONMALLOC",		 "PYTHONUTF8",	       "PYTHONINTMAXSTRDIGITS",
	"PYTHONWARNDEFAULTENCODING", "PYTHONTRACEMALLOC", "PYTHONNODEBUGRANGES",
	"PYTHONPROFILEIMPORTTIME", "PYTHONNOUSERSITE",  "PYTHONUSERBASE",
	"PYTHONHOME",		 "PYTHONPLATLIBDIR",   "PYTHONSAFEPATH",
	"PYTHONPYCACHEPREFIX",	 "PYTHONCOERCECLOCALE", "PYTHONVERBOSE",
	"PYTHONDEBUG",		 "PYTHONMALLOCSTATS",  "PYTHONIOENCODING",
};

/* A setting as CPython takes it: empty is unset, and so is a random hash seed. */
static const char *
interp_value(const char *name, const char *v)
{
	if (!v || !*v)
		return NULL;
	if (strcmp(name, "PYTHONHASHSEED") == 0 && strcmp(v, "random") == 0)
		return NULL;
	return v;
}

/* A value's digest as the zygote writes it in E lines (_zygote._digest). */
static void
env_digest(const char *v, char *buf, size_t size)
{
	if (!v)
		snprintf(buf, size, "-");
	else
		snprintf(buf, size, "%016llx", fnv1a(FNV1A_BASIS, v, strlen(v)));
}

static void
why_add(char *why, size_t size, const char *name, const char *what)
{
	size_t l = strlen(why);
	if (l + strlen(name) + strlen(what) + 16 >= size) {
		if (l + 10 < size && !strstr(why, ", ..."))
			strcat(why, ", ...");
		return;
	}
	snprintf(why + l, size - l, "%s%s (%s)", l ? ", " : "", name, what);
}

/*
 * Whether a run's environment differs from what the serving generation
 * started with (interpreter settings) or what its imports outside the
 * project read (the E lines of its file list). If so, returns 1 with the
 * run's variant id (a digest of its values of all those variables, so
 * equal inputs find the same zygote) and the names that differ in why.
 */
static int
env_differs(const struct gen *g, const struct proto_request *r, char *id, size_t idsize,
	    char *why, size_t whysize)
{
	unsigned long long h = FNV1A_BASIS;
	int differ = 0;
	why[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(interp_vars); i++) {
		const char *mine = interp_value(interp_vars[i], getenv(interp_vars[i]));
		const char *theirs = interp_value(interp_vars[i], req_env(r, interp_vars[i]));
		h = fnv1a(h, interp_vars[i], strlen(interp_vars[i]) + 1);
		h = theirs ? fnv1a(h, theirs, strlen(theirs) + 1) : fnv1a(h, "\x01", 1);
		if (mine != theirs && !(mine && theirs && strcmp(mine, theirs) == 0)) {
			differ = 1;
			why_add(why, whysize, interp_vars[i], "an interpreter setting");
		}
	}
	for (const char *p = g->files ? g->files : ""; *p;) {
		size_t l = strcspn(p, "\n");
		const char *tab = l > 2 && p[0] == 'E' && p[1] == '\t' ? memchr(p + 2, '\t', l - 2)
								       : NULL;
		if (tab) {
			char name[256], want[24], have[24];
			snprintf(name, sizeof(name), "%.*s", (int)(tab - p - 2), p + 2);
			snprintf(want, sizeof(want), "%.*s", (int)(p + l - tab - 1), tab + 1);
			const char *theirs = run_env(r, name);
			env_digest(theirs, have, sizeof(have));
			h = fnv1a(h, name, strlen(name) + 1);
			h = theirs ? fnv1a(h, theirs, strlen(theirs) + 1)
				   : fnv1a(h, "\x01", 1);
			if (strcmp(want, have) != 0) {
				differ = 1;
				why_add(why, whysize, name, "read at import outside the project");
			}
		}
		p += l;
		if (*p)
			p++;
	}
	snprintf(id, idsize, "%012llx", h & 0xffffffffffffULL);
	return differ;
}

/* Tell the variant server id to stop; its answer is awaited before we exit. */
static void
stop_variant(const char *id)
{
	char inst[192], err[256];
	struct zpaths vp;
	snprintf(inst, sizeof(inst), "%s~%s", s.o->instance ? s.o->instance : "", id);
	if (paths_for_root(&vp, s.o->paths.root, inst, err, sizeof(err)) < 0)
		return;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.sock", s.o->paths.dir,
			     vp.name) >= sizeof(sa.sun_path))
		return;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd); /* not running */
		return;
	}
	struct proto_request req = { .kind = PROTO_KIND_STOP, .flags = DEFAULT_GRACE_MS };
	struct proto_buf b = { 0 };
	if (proto_request_encode(&b, &req, NULL) == 0 && write(fd, b.data, b.len) == (ssize_t)b.len &&
	    s.nvariant_fds < MAX_VARIANTS) {
		s.variant_fds[s.nvariant_fds++] = fd;
		log_info("stopping the zygote for another environment (instance %s)", inst);
	} else {
		close(fd);
	}
	proto_buf_free(&b);
}

/* A run goes to variant id: remember it, least recently used out. */
static void
variant_used(const char *id)
{
	int lru = 0;
	for (int i = 0; i < s.nvariants; i++) {
		if (strcmp(s.variants[i].id, id) == 0) {
			s.variants[i].used_ms = now_ms();
			return;
		}
		if (s.variants[i].used_ms < s.variants[lru].used_ms)
			lru = i;
	}
	int slot = s.nvariants;
	if (s.nvariants >= s.max_variants) {
		stop_variant(s.variants[lru].id);
		slot = lru;
	} else {
		s.nvariants++;
	}
	snprintf(s.variants[slot].id, sizeof(s.variants[slot].id), "%s", id);
	s.variants[slot].used_ms = now_ms();
}

/*
 * A run whose environment this generation cannot serve: tell the client
 * which zygote can (it starts it if needed). Returns 1 when the run was
 * sent away or refused.
 */
static int
route_elsewhere(int i)
{
	struct conn *c = s.conns[i];
	char id[20], why[400], text[700 + PATH_MAX];
	if (!env_differs(serving(), &c->dec.req, id, sizeof(id), why, sizeof(why)))
		return 0;
	if (s.is_variant || s.max_variants <= 0) {
		snprintf(text, sizeof(text),
			 "this run's environment differs from the zygote's in %s%s", why,
			 s.is_variant ? ", and this zygote was started for another environment: "
					"run 'pytest-zygote stop' and run again"
				      : ", and PYTEST_ZYGOTE_VARIANTS=0 allows no other zygote: "
					"run with the server's environment, or restart it with this one");
		conn_reply(i, PROTO_MSG_ERROR, text);
		return 1;
	}
	variant_used(id);
	snprintf(text, sizeof(text), "variant=%s\nreason=%s\npython=%s\n", id, why, s.o->python);
	conn_reply(i, PROTO_MSG_REDIRECT, text);
	return 1;
}

/* PYTEST_ZYGOTE_HASH_SEED=per-run in a run's environment, without a fixed
 * PYTHONHASHSEED: it needs a generation no run was forked from. -1: a bad value. */
static int
wants_new_seed(const struct proto_request *r)
{
	const char *v = req_env(r, "PYTEST_ZYGOTE_HASH_SEED");
	if (!v || !*v || strcmp(v, "generation") == 0)
		return 0;
	if (strcmp(v, "per-run") != 0)
		return -1;
	return !interp_value("PYTHONHASHSEED", req_env(r, "PYTHONHASHSEED"));
}

static void
request_complete(int i)
{
	struct conn *c = s.conns[i];
	int new_seed = 0;
	switch (c->dec.req.kind) {
	case PROTO_KIND_STATUS:
		watch_settle(); /* the changes made before asking are in the answer */
		reply_status(i);
		return;
	case PROTO_KIND_STOP:
		c->waiting = 1;
		begin_stop(c->dec.req.flags ? (int)c->dec.req.flags : DEFAULT_GRACE_MS);
		return;
	case PROTO_KIND_RUN:
		/* Settle the dirty set now, not when the events happen to be read:
		 * a save followed at once by a run must be seen by that run. */
		watch_settle();
		if (s.ext_fd >= 0)
			ext_drain();
		if (s.stopping) {
			conn_reply(i, PROTO_MSG_ERROR, "the server is stopping; start it again");
			return;
		}
		new_seed = wants_new_seed(&c->dec.req);
		if (new_seed < 0) {
			conn_reply(i, PROTO_MSG_ERROR,
				   "PYTEST_ZYGOTE_HASH_SEED must be per-run or generation");
			return;
		}
		if (serving() && !s.fresh_needed && route_elsewhere(i))
			return;
		if (new_seed && serving() && !s.fresh_needed && serving()->seed_used) {
			/* Every run of this kind gets a generation of its own, so a
			 * hash seed of its own, as a cold run would. */
			if (!c->noticed) {
				const char *t = "waiting for a zygote with a new hash seed "
						"(PYTEST_ZYGOTE_HASH_SEED=per-run)";
				fdpass_send_msg(c->fd, PROTO_MSG_NOTICE, t, strlen(t) + 1);
				c->noticed = 1;
			}
			c->waiting = 1;
			if (s.next < 0)
				spawn_generation(1);
			return;
		}
		/* fall through */
	case PROTO_KIND_WAIT:
		if (serving() && !(s.fresh_needed && c->dec.req.kind == PROTO_KIND_RUN)) {
			if (c->dec.req.kind == PROTO_KIND_RUN && s.max_runs > 0 &&
			    s.running >= s.max_runs) {
				/* At the limit: queue, first come first served. */
				c->waiting = 1;
				c->queued_ms = now_ms();
				c->queue_seq = ++s.queue_seq;
				s.queued++;
				return;
			}
			if (c->dec.req.kind == PROTO_KIND_RUN) {
				hand_over(i);
				/* The next such run's generation warms meanwhile. */
				if (new_seed > 0 && s.next < 0 && !s.stopping)
					spawn_generation(1);
			} else {
				reply_status(i);
			}
			return;
		}
		if (s.fresh_needed && c->dec.req.kind == PROTO_KIND_RUN) {
			/* Say why the run waits; the client prints it on stderr. */
			char text[700];
			snprintf(text, sizeof(text), "waiting for a fresh zygote: %s", s.fresh_reason);
			fdpass_send_msg(c->fd, PROTO_MSG_NOTICE, text, strlen(text) + 1);
		}
		c->waiting = 1;
		return;
	}
}

/* Start queued runs, oldest first, while there is room under max_runs. */
static void
dispatch_queue(void)
{
	while (s.queued > 0 && serving() && !s.stopping &&
	       (s.max_runs <= 0 || s.running < s.max_runs)) {
		int best = -1;
		for (int i = 0; i < s.nconns; i++)
			if (s.conns[i]->queued_ms &&
			    (best < 0 || s.conns[i]->queue_seq < s.conns[best]->queue_seq))
				best = i;
		if (best < 0)
			return;
		struct conn *c = s.conns[best];
		c->queued_ms = 0;
		c->waiting = 0;
		s.queued--;
		request_complete(best);
	}
}

/* A generation became warm: serve what waited for it. */
static void
serve_waiting(void)
{
	for (int i = s.nconns - 1; i >= 0; i--) {
		struct conn *c = s.conns[i];
		if (!c->waiting || c->queued_ms || c->dec.req.kind == PROTO_KIND_STOP)
			continue;
		c->waiting = 0;
		request_complete(i);
	}
	dispatch_queue();
}

/* Tell runs that have waited about a second for a free slot why they wait. */
static long long
notice_queued(long long now)
{
	long long wake = -1;
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		if (!c->queued_ms || c->noticed)
			continue;
		long long due = c->queued_ms + 1000;
		if (now < due) {
			wake = wake < 0 || due < wake ? due : wake;
			continue;
		}
		char text[160];
		snprintf(text, sizeof(text), "waiting: %d runs in progress (max_runs=%d)", s.running,
			 s.max_runs);
		fdpass_send_msg(c->fd, PROTO_MSG_NOTICE, text, strlen(text) + 1);
		c->noticed = 1;
	}
	return wake;
}

/*
 * A parked client sent something: Ctrl-C (or another terminating signal)
 * before its run started cancels it; other signals (a terminal resize) have
 * nobody to go to yet.
 */
static void
waiting_readable(int i)
{
	struct conn *c = s.conns[i];
	ssize_t n = fdpass_reader_fill(&c->rd, c->fd);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		conn_close(i);
		return;
	}
	struct proto_hdr h;
	const char *p;
	int m;
	while ((m = fdpass_reader_next(&c->rd, &h, &p)) > 0) {
		int32_t sig;
		if (h.type != PROTO_MSG_SIGNAL || proto_get_i32(p, h.len, &sig) < 0) {
			conn_reply(i, PROTO_MSG_ERROR, "unexpected message while waiting");
			return;
		}
		if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT ||
		    sig == SIGKILL) {
			int32_t code = 128 + sig;
			const char *msg = "interrupted before the run started";
			fdpass_send_msg(c->fd, PROTO_MSG_NOTICE, msg, strlen(msg) + 1);
			fdpass_send_msg(c->fd, PROTO_MSG_EXIT, &code, sizeof(code));
			conn_close(i);
			return;
		}
	}
	if (m < 0)
		conn_reply(i, PROTO_MSG_ERROR, "message too large");
}

static void
conn_readable(int i)
{
	struct conn *c = s.conns[i];
	for (;;) {
		ssize_t n = fdpass_reader_fill(&c->rd, c->fd);
		if (n == -EAGAIN)
			return;
		if (n == -EMSGSIZE) {
			conn_reply(i, PROTO_MSG_ERROR,
				   "too many file descriptors in one message (a run sends 3)");
			return;
		}
		if (n == 0 && (c->rd.len > c->rd.consumed || c->dec.state == PROTO_ST_BODY)) {
			/* A client that only shut down its side can still read why. */
			conn_reply(i, PROTO_MSG_ERROR,
				   c->rd.len > c->rd.consumed
					   ? "the request was cut off in the middle of a message"
					   : "the request ended before its DONE message");
			return;
		}
		if (n <= 0) {
			conn_close(i);
			return;
		}
		struct proto_hdr h;
		const char *p;
		int m;
		while ((m = fdpass_reader_next(&c->rd, &h, &p)) > 0) {
			if (c->dec.state == PROTO_ST_DONE)
				break; /* data after the request (e.g. an early SIGNAL): keep it */
			int fds[PROTO_MAX_FDS];
			int nfds = 0;
			if (h.type == PROTO_MSG_FDS && h.len == sizeof(uint32_t)) {
				uint32_t count;
				memcpy(&count, p, sizeof(count));
				if (count <= PROTO_MAX_FDS)
					nfds = fdpass_reader_take_fds(&c->rd, fds, (int)count);
			}
			int r = proto_decoder_feed(&c->dec, h.type, p, h.len, fds, nfds);
			if (r == 0 && h.type == PROTO_MSG_FDS && c->rd.nfds > 0) {
				/* Only FDS carries descriptors: these are extra. */
				r = -EPROTO;
				snprintf(c->dec.error, sizeof(c->dec.error),
					 "more file descriptors than the FDS message announced");
			}
			if (r < 0) {
				log_info("closing a connection: %s", log_escape(c->dec.error));
				conn_reply(i, PROTO_MSG_ERROR, c->dec.error);
				return;
			}
			if (r == 1) {
				request_complete(i);
				return;
			}
		}
		if (m < 0) {
			conn_reply(i, PROTO_MSG_ERROR,
				   "a message larger than 1 MiB (the limit for one message; "
				   "arguments and environment each must fit in it)");
			return;
		}
	}
}

static void
accept_clients(void)
{
	for (;;) {
		int fd = accept4(s.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of descriptors: pause accepting instead of spinning. */
				log_warn("out of file descriptors; not accepting for 100 ms");
				s.accept_paused_until = now_ms() + 100;
			}
			return;
		}
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
		    cred.uid != getuid()) {
			char msg[160];
			snprintf(msg, sizeof(msg),
				 "refused: this zygote belongs to uid %u; start your own with "
				 "'pytest-zygote start'",
				 (unsigned)getuid());
			fdpass_send_msg(fd, PROTO_MSG_ERROR, msg, strlen(msg) + 1);
			log_warn("refused a connection from uid %u", (unsigned)cred.uid);
			close_draining(fd);
			continue;
		}
		if (s.nconns >= MAX_CONNS) {
			const char *msg = "too many connections; try again shortly";
			fdpass_send_msg(fd, PROTO_MSG_ERROR, msg, strlen(msg) + 1);
			close_draining(fd);
			continue;
		}
		struct conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		fdpass_reader_init(&c->rd);
		proto_decoder_init(&c->dec);
		s.conns[s.nconns++] = c;
	}
}

/*
 * Start a new generation warming up in the background; it becomes s.next.
 * replay: it is only for a new hash seed, so if nothing changed since the
 * last warm-up it may replay that one's learning run.
 */
static int
spawn_generation(int replay)
{
	int slot = -1;
	for (int i = 0; i < MAX_GENS && slot < 0; i++)
		if (!s.gens[i].pid)
			slot = i;
	if (slot < 0) {
		log_warn("too many generations alive; not starting another yet");
		return -1;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("socketpair: %s", strerror(errno));
		return -1;
	}
	int number = ++s.generations;
	replay = replay && s.dirty_total == 0 && !s.fresh_needed;
	pid_t sup = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		/* fd layout of a zygote: 0 /dev/null, 1 the log, 2 our stderr, 3 control. */
		spawn_reset_signals();
		int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		int logfd = open(s.o->paths.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (devnull >= 0)
			dup2(devnull, 0);
		if (logfd >= 0)
			dup2(logfd, 1);
		dup2(sv[1], 3);
		char gen[16], supbuf[16], pages[PATH_MAX + 128], learned[PATH_MAX + 128];
		snprintf(gen, sizeof(gen), "%d", number);
		snprintf(supbuf, sizeof(supbuf), "%d", (int)sup);
		pages_path(pages, sizeof(pages));
		/* Where warm-up keeps what its learning run reported; a
		 * generation started only for a new hash seed (nothing changed)
		 * replays that instead of running it again. */
		learned_path(learned, sizeof(learned));
		setenv("PYTEST_ZYGOTE_LEARNED", learned, 1);
		if (replay)
			setenv("PYTEST_ZYGOTE_REPLAY", "1", 1);
		/*
		 * Every generation (and server) of a project gets the same
		 * address-space layout, so a new generation can prepare its first
		 * spare with the pages the previous one learned (pages_path).
		 * Test children give randomisation back to what they exec.
		 */
		const char *sl = getenv("PYTEST_ZYGOTE_STABLE_LAYOUT");
		const char *stable = NULL;
		int pers = personality(0xffffffff);
		if ((!sl || strcmp(sl, "0") != 0) && pers != -1 && !(pers & ADDR_NO_RANDOMIZE) &&
		    personality((unsigned long)pers | ADDR_NO_RANDOMIZE) != -1)
			stable = "--stable-layout";
		execl(s.o->self_exe, "pytest-zygote", "__zygote", "--ctl-fd", "3", "--root",
		      s.o->paths.root, "--python", s.o->python, "--generation", gen,
		      "--supervisor", supbuf, "--pages", pages, stable, (char *)NULL);
		fprintf(stderr, "pytest-zygote: cannot run '%s': %s\n", s.o->self_exe,
			strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	struct gen *g = &s.gens[slot];
	fdpass_reader_finish(&g->rd);
	free(g->files);
	memset(g, 0, sizeof(*g));
	g->pid = pid;
	g->ctl = sv[0];
	g->number = number;
	g->started_ms = now_ms();
	fdpass_reader_init(&g->rd);
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	s.next = slot;
	/* What changed so far is this generation's to absorb. */
	for (int i = 0; i < s.ndirty; i++)
		free(s.dirty[i]);
	s.ndirty = 0;
	s.dirty_total = 0;
	log_debug("generation %d: zygote pid %d", number, (int)pid);
	return 0;
}

/* Relevant names in a directory outside the project: code and install records. */
static int
ext_relevant(const struct inotify_event *ev)
{
	const char *n = ev->len ? ev->name : "";
	size_t l = strlen(n);
	if (strcmp(n, "__pycache__") == 0 || (l > 4 && strcmp(n + l - 4, ".pyc") == 0))
		return 0;
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
		return 1;
	if (ev->mask & IN_ISDIR)
		return 1; /* a package or a .dist-info appeared or went */
	static const char *const ends[] = { ".py", ".pth", ".so", ".egg-link" };
	for (size_t i = 0; i < ARRAY_SIZE(ends); i++) {
		size_t el = strlen(ends[i]);
		if (l > el && strcmp(n + l - el, ends[i]) == 0)
			return 1;
	}
	return 0;
}

/* Watch the directories outside the project that the current generation imported from. */
static void
ext_rebuild(const char *files)
{
	if (s.ext_fd >= 0)
		close(s.ext_fd);
	s.ext_fd = -1;
	for (int i = 0; i < s.ndata_dirs; i++)
		free(s.data_dirs[i].dir);
	free(s.data_dirs);
	s.data_dirs = NULL;
	s.ndata_dirs = 0;
	if (!files || s.poll_ms > 0)
		return;
	s.ext_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (s.ext_fd < 0) {
		log_warn("inotify: %s; changes to installed packages are not noticed "
			 "(run 'pytest-zygote restart' after installing)",
			 strerror(errno));
		return;
	}
	int n = 0;
	for (const char *p = files; *p;) {
		size_t l = strcspn(p, "\n");
		if (l > 2 && p[0] == 'X' && p[1] == '\t') {
			char dir[PATH_MAX];
			snprintf(dir, sizeof(dir), "%.*s", (int)(l - 2), p + 2);
			if (inotify_add_watch(s.ext_fd, dir,
					      IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
						      IN_CREATE | IN_DELETE | IN_DELETE_SELF |
						      IN_MOVE_SELF | IN_ONLYDIR) >= 0)
				n++;
		} else if (l > 2 && (p[0] == 'D' || p[0] == 'F') && p[1] == '\t') {
			/* A project file an import read: watch its directory. */
			char dir[PATH_MAX];
			snprintf(dir, sizeof(dir), "%.*s", (int)(l - 2), p + 2);
			char *slash = strrchr(dir, '/');
			if (slash && slash != dir)
				*slash = '\0';
			int wd = inotify_add_watch(s.ext_fd, dir,
						   IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
							   IN_CREATE | IN_DELETE | IN_ATTRIB |
							   IN_ONLYDIR | IN_MASK_ADD);
			int known = 0;
			for (int i = 0; i < s.ndata_dirs && !known; i++)
				known = s.data_dirs[i].wd == wd;
			struct data_dir *d = wd < 0 || known ? NULL
				: realloc(s.data_dirs, sizeof(*d) * (size_t)(s.ndata_dirs + 1));
			if (d) {
				s.data_dirs = d;
				d[s.ndata_dirs].wd = wd;
				d[s.ndata_dirs].dir = strdup(dir);
				if (d[s.ndata_dirs].dir)
					s.ndata_dirs++;
			}
		}
		p += l;
		if (*p)
			p++;
	}
	log_debug("watching %d directories outside the project and %d of files imports read", n,
		  s.ndata_dirs);
}

/* Is there a line "KIND<TAB>path" in a generation's file list? */
static int
files_has(const char *files, char kind, const char *path)
{
	size_t pl = strlen(path);
	for (const char *p = files ? files : ""; *p;) {
		size_t l = strcspn(p, "\n");
		if (l == pl + 2 && p[0] == kind && p[1] == '\t' && memcmp(p + 2, path, pl) == 0)
			return 1;
		p += l;
		if (*p)
			p++;
	}
	return 0;
}

static const char *
current_files(void)
{
	return s.cur >= 0 && s.gens[s.cur].pid ? s.gens[s.cur].files : NULL;
}

/* Ask for a fresh generation; runs wait for it. */
static void
need_fresh(const char *why)
{
	if (!s.fresh_needed)
		log_info("fresh zygote needed: %s", why);
	if (!s.fresh_needed || s.next < 0)
		snprintf(s.fresh_reason, sizeof(s.fresh_reason), "%s", why);
	s.fresh_needed = 1;
	s.fresh_since_ms = now_ms();
	/* A generation already warming may have imported the old files: only
	 * one started from now on can be trusted. */
	if (s.next >= 0) {
		struct gen *g = &s.gens[s.next];
		if (g->started_ms < s.fresh_since_ms) {
			g->draining = 1;
			kill(g->pid, SIGKILL);
			s.next = -1;
		}
	}
	if (s.next < 0 && !s.stopping)
		spawn_generation(0);
}

static void
ext_drain(void)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(s.ext_fd, buf, sizeof(buf));
		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				need_fresh("too many changes outside the project to follow");
				continue;
			}
			const char *ddir = NULL;
			for (int i = 0; i < s.ndata_dirs && !ddir; i++)
				if (s.data_dirs[i].wd == ev->wd)
					ddir = s.data_dirs[i].dir;
			if (ddir && ev->len) {
				/* A file an import read: the child follows a project
				 * module's (D), a fresh generation the others' (F). */
				char path[PATH_MAX];
				snprintf(path, sizeof(path), "%s/%s", ddir, ev->name);
				if (files_has(current_files(), 'D', path) ||
				    files_has(current_files(), 'F', path))
					on_change(path, NULL);
			}
			if (ddir || !ext_relevant(ev))
				continue;
			char why[400];
			snprintf(why, sizeof(why), "'%s' changed outside the project",
				 ev->len ? ev->name : "a watched directory");
			need_fresh(why);
		}
	}
}

/* pytest's configuration files at the root: a change needs a fresh generation. */
static int
is_config(const char *path)
{
	static const char *const names[] = { "pytest.ini", ".pytest.ini", "pyproject.toml",
					     "setup.cfg", "tox.ini" };
	size_t rl = strlen(s.o->paths.root);
	if (strncmp(path, s.o->paths.root, rl) != 0 || path[rl] != '/')
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(path + rl + 1, names[i]) == 0)
			return 1;
	return 0;
}

/* A file in the project changed (or may have). */
static void
on_change(const char *path, void *arg)
{
	(void)arg;
	char why[PATH_MAX + 128];
	const char *files = current_files();
	if (is_config(path)) {
		snprintf(why, sizeof(why), "the pytest configuration '%s' changed", path);
		need_fresh(why);
		return;
	}
	/* Modules a child cannot import again: pytest holds objects of them,
	 * or their importer is outside the project. */
	if (files_has(files, 'P', path)) {
		snprintf(why, sizeof(why),
			 "'%s' changed, and pytest or a plugin imported it before the project", path);
		need_fresh(why);
		return;
	}
	if (files_has(files, 'F', path)) {
		snprintf(why, sizeof(why),
			 "'%s' changed, and a module outside the project read it at import", path);
		need_fresh(why);
		return;
	}
	if (s.reload_fresh && files_has(files, 'M', path)) {
		snprintf(why, sizeof(why), "'%s' changed (reload = fresh)", path);
		need_fresh(why);
		return;
	}
	s.dirty_total++;
	s.last_change_ms = now_ms();
	for (int i = 0; i < s.ndirty; i++)
		if (strcmp(s.dirty[i], path) == 0)
			return;
	if (s.ndirty < MAX_DIRTY) {
		char *d = strdup(path);
		if (d)
			s.dirty[s.ndirty++] = d;
	}
}

/* Drain the project watcher. */
static void
watch_settle(void)
{
	if (!s.watch)
		return;
	int r = s.poll_ms > 0 ? watch_poll(s.watch, on_change, NULL)
			      : watch_drain(s.watch, on_change, NULL);
	if (r == WATCH_OVERFLOW) {
		/* Events were lost: any file may have changed. Children check
		 * every imported file anyway; a fresh generation catches up. */
		static int warned;
		const char *w = watch_warning(s.watch);
		if (w && !warned++)
			log_warn("%s", w);
		s.dirty_total++;
		s.last_change_ms = now_ms();
	}
}

static void
gen_ready(struct gen *g, const char *text)
{
	snprintf(g->info, sizeof(g->info), "%s", text);
	char v[900];
	if (*info_get(g->info, "error", v, sizeof(v))) {
		log_error("generation %d failed: %s", g->number, v);
		if (!s.ever_ready) {
			/* Stop listening before `start` hears of it: a client it
			 * lets go at once must find no server, not one going away. */
			begin_stop(0);
			report("error %s", v);
			return; /* it exits; reap() gives up */
		}
		/* A restart failed: tell whoever waits for it, then keep trying. */
		char msg[1000];
		snprintf(msg, sizeof(msg), "the zygote cannot start: %s", v);
		for (int i = s.nconns - 1; i >= 0; i--)
			if (s.conns[i]->waiting && s.conns[i]->dec.req.kind != PROTO_KIND_STOP)
				conn_reply(i, PROTO_MSG_ERROR, msg);
		return;
	}
	g->ready = 1;
	g->warmup_s = atof(info_get(g->info, "warmup_ms", v, sizeof(v))) / 1000.0;
	char mods[32], th[32], st[300];
	info_get(g->info, "modules", mods, sizeof(mods));
	info_get(g->info, "threads", th, sizeof(th));
	info_get(g->info, "status", st, sizeof(st));
	log_info("generation %d ready: %s modules, warm-up %.2f s", g->number, mods, g->warmup_s);
	if (s.ever_ready)
		s.refreshes++;
	s.ever_ready = 1;
	s.early_failures = 0;

	/* Take over from the current generation, which drains. */
	int idx = (int)(g - s.gens);
	if (s.cur >= 0 && s.cur != idx && s.gens[s.cur].pid) {
		struct gen *old = &s.gens[s.cur];
		old->draining = 1;
		int32_t grace = DRAIN_GRACE_MS;
		if (old->ctl < 0 ||
		    fdpass_send_msg(old->ctl, PROTO_MSG_Z_DRAIN, &grace, sizeof(grace)) < 0)
			kill(old->pid, SIGKILL);
	}
	s.cur = idx;
	if (s.next == idx)
		s.next = -1;
	if (s.fresh_needed && g->started_ms >= s.fresh_since_ms)
		s.fresh_needed = 0;
	ext_rebuild(g->files);

	report("ready pid=%d modules=%s warmup_s=%.2f threads=%s status=%s", (int)getpid(), mods,
	       g->warmup_s, th, st);
	if (s.o->ready_fd >= 0) {
		ssize_t w = write(s.o->ready_fd, "\n", 1);
		(void)w;
		close(s.o->ready_fd);
		((struct supervisor_opts *)s.o)->ready_fd = -1;
	}
	serve_waiting();
}

static void
gen_readable(struct gen *g)
{
	ssize_t n = fdpass_reader_fill(&g->rd, g->ctl);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		/* The zygote is exiting; SIGCHLD tells how. Stop polling it. */
		close(g->ctl);
		g->ctl = -1;
		g->ready = 0;
		return;
	}
	struct proto_hdr h;
	const char *p;
	while (fdpass_reader_next(&g->rd, &h, &p) > 0) {
		int terminated = h.len > 0 && p[h.len - 1] == '\0';
		switch (h.type) {
		case PROTO_MSG_Z_READY:
			if (terminated && !g->draining)
				gen_ready(g, p);
			break;
		case PROTO_MSG_Z_DONE:
			if (g->running > 0) {
				g->running--;
				s.running--;
			}
			dispatch_queue();
			break;
		case PROTO_MSG_Z_PROGRESS:
			if (!terminated || g->ready)
				break;
			snprintf(g->progress, sizeof(g->progress), "%s", p);
			if (!s.ever_ready)
				report_progress(p);
			break;
		case PROTO_MSG_Z_FILES:
			if (!terminated)
				break;
			free(g->files);
			g->files = strdup(p);
			if (s.cur == (int)(g - s.gens))
				ext_rebuild(g->files);
			break;
		default:
			log_warn("unexpected message %u from the zygote", h.type);
		}
	}
}

static void
finish_and_exit(void)
{
	unlink(s.o->paths.sock);
	unlink_pages();
	/* Gone before anyone hears "stopped", so a next `start` finds no lock. */
	pidfile_remove(s.pfh);
	s.pfh = NULL;
	char text[128];
	snprintf(text, sizeof(text), "stopped=1\npid=%d\n", (int)getpid());
	for (int i = s.nconns - 1; i >= 0; i--) {
		if (s.conns[i]->waiting && s.conns[i]->dec.req.kind == PROTO_KIND_STOP)
			conn_reply(i, PROTO_MSG_STATUS, text);
		else
			conn_reply(i, PROTO_MSG_ERROR, "the server stopped");
	}
	log_info("stopped");
	exit(0);
}

/* Stopping: exit once the generations are gone and the variants answered. */
static void
maybe_finish(void)
{
	for (int i = 0; i < MAX_GENS; i++)
		if (s.gens[i].pid)
			return;
	if (s.nvariant_fds > 0 && now_ms() < s.variants_deadline)
		return;
	finish_and_exit();
}

static void
begin_stop(int grace_ms)
{
	if (s.stopping)
		return;
	s.stopping = 1;
	s.grace_ms = grace_ms;
	close(s.listen_fd); /* new clients see "no zygote running" */
	s.listen_fd = -1;
	unlink(s.o->paths.sock);
	for (int i = 0; i < s.nvariants; i++)
		stop_variant(s.variants[i].id);
	s.nvariants = 0;
	s.variants_deadline = now_ms() + grace_ms + 10000;
	int alive = 0;
	for (int i = 0; i < MAX_GENS; i++) {
		struct gen *g = &s.gens[i];
		if (!g->pid)
			continue;
		alive++;
		int32_t grace = g->ready && !g->draining ? grace_ms : 0;
		if (g->ctl < 0 || fdpass_send_msg(g->ctl, PROTO_MSG_Z_DRAIN, &grace, sizeof(grace)) < 0)
			kill(g->pid, SIGKILL);
		g->draining = 1;
	}
	if (!alive)
		maybe_finish();
}

/*
 * Our only children are zygote generations. Anything else was re-parented
 * to us (we are a subreaper) because a generation died or exited while its
 * runs, or what they started, were alive: kill it, whole subtrees.
 */
static void
kill_strays(void)
{
	pid_t keep[MAX_GENS];
	int n = 0;
	for (int i = 0; i < MAX_GENS; i++)
		if (s.gens[i].pid)
			keep[n++] = s.gens[i].pid;
	int k = proctree_kill_strays(keep, n);
	if (k > 0)
		log_info("killed %d processes left behind by a zygote generation", k);
}

static void
reap(void)
{
	int st, reaped = 0;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		reaped = 1;
		int idx = -1;
		for (int i = 0; i < MAX_GENS && idx < 0; i++)
			if (s.gens[i].pid == pid)
				idx = i;
		if (idx < 0)
			continue; /* an orphan we inherited as subreaper */
		struct gen *g = &s.gens[idx];
		int was_ready = g->ready, was_draining = g->draining;
		/* Its runs ended with it (their clients saw the connection close). */
		s.running -= g->running;
		g->running = 0;
		if (g->ctl >= 0)
			close(g->ctl);
		g->ctl = -1;
		g->pid = 0;
		g->ready = 0;
		if (idx == s.next)
			s.next = -1;
		if (s.stopping) {
			maybe_finish();
			continue;
		}
		if (was_draining) {
			log_debug("generation %d drained", g->number);
			continue;
		}
		if (idx == s.cur)
			s.cur = -1;
		if (WIFSIGNALED(st))
			log_warn("zygote generation %d died of signal %d", g->number, WTERMSIG(st));
		else
			log_warn("zygote generation %d exited with status %d", g->number,
				 WEXITSTATUS(st));
		if (!s.ever_ready) {
			/* Never warmed up: starting failed. Say why and give up. */
			char v[900];
			if (!*info_get(g->info, "error", v, sizeof(v)))
				snprintf(v, sizeof(v),
					 "the zygote exited during warm-up (status %d); see %.700s",
					 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
					 s.o->paths.log);
			report("error %s", v);
			begin_stop(0);
			continue;
		}
		(void)was_ready;
		/* Back off when generations keep dying; runs wait for the next one. */
		s.early_failures++;
		s.respawn_at = now_ms() + (s.early_failures > 3 ? 1000 : 0);
	}
	if (reaped)
		kill_strays();
	dispatch_queue();
}

static int
setup_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s.o->paths.sock);
	s.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s.listen_fd < 0)
		return -errno;
	/* We hold the pid file lock, so a socket file here was left by a dead
	 * server: replace it (and what it learned). */
	unlink(s.o->paths.sock);
	unlink_pages();
	mode_t old = umask(0177);
	int r = bind(s.listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(s.listen_fd, 128) < 0)
		return -errno;
	return 0;
}

int
supervisor_default_max_runs(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 1)
		cpus = 1;
	return cpus * 2 > 8 ? (int)(cpus * 2 > SUPERVISOR_MAX_RUNS_LIMIT ? SUPERVISOR_MAX_RUNS_LIMIT
									 : cpus * 2)
			    : 8;
}

/* Settings from the environment (the config file comes later), and the project watcher. */
static int
env_int(const char *name, int def, int lo, int hi)
{
	const char *v = getenv(name);
	char *end;
	if (!v || !*v)
		return def;
	long x = strtol(v, &end, 10);
	if (*end || x < lo || x > hi) {
		log_warn("%s=%s is not a number between %d and %d; using %d", name, v, lo, hi,
			 def);
		return def;
	}
	return (int)x;
}

/* Split a colon-separated list into a NULL-terminated vector (in a static buffer). */
static const char **
split_globs(const char *list, const char **vec, size_t cap, char *buf, size_t bufsize)
{
	size_t n = 0;
	snprintf(buf, bufsize, "%s", list);
	for (char *save = NULL, *t = strtok_r(buf, ":", &save); t && n + 1 < cap;
	     t = strtok_r(NULL, ":", &save))
		if (*t)
			vec[n++] = t;
	vec[n] = NULL;
	return vec;
}

static void
watch_start(void)
{
	/* Watch globs: the user's (PYTEST_ZYGOTE_WATCH_GLOBS, colon-separated),
	 * pytest-hot-reloading's (PYTEST_DAEMON_WATCH_GLOBS), or every .py file;
	 * pytest's configuration files are always watched. Ignore globs:
	 * PYTEST_ZYGOTE_IGNORE_GLOBS replaces the defaults;
	 * PYTEST_DAEMON_IGNORE_WATCH_GLOBS ignores more. */
	static const char *const config_files[] = { "pytest.ini", ".pytest.ini", "pyproject.toml",
						    "setup.cfg", "tox.ini" };
	static const char *globs[72], *ignore[64], *whole[64], *whole_ignore[64];
	static char gbuf[4096], ibuf[4096], wbuf[4096], wibuf[4096];
	const char *wg = getenv("PYTEST_ZYGOTE_WATCH_GLOBS");
	/* pytest-hot-reloading's variables, with its meaning (watch.h: whole_globs). */
	const char *dw = getenv("PYTEST_DAEMON_WATCH_GLOBS");
	const char *di = getenv("PYTEST_DAEMON_IGNORE_WATCH_GLOBS");
	split_globs(dw ? dw : "", whole, ARRAY_SIZE(whole), wbuf, sizeof(wbuf));
	split_globs(di ? di : "", whole_ignore, ARRAY_SIZE(whole_ignore), wibuf, sizeof(wibuf));
	split_globs(wg && *wg ? wg : whole[0] ? "" : "**/*.py", globs, 64, gbuf, sizeof(gbuf));
	size_t n = 0;
	while (globs[n])
		n++;
	for (size_t i = 0; i < ARRAY_SIZE(config_files); i++)
		globs[n++] = config_files[i];
	globs[n] = NULL;
	const char *ig = getenv("PYTEST_ZYGOTE_IGNORE_GLOBS");
	if (ig && *ig)
		split_globs(ig, ignore, ARRAY_SIZE(ignore), ibuf, sizeof(ibuf));
	s.settle_ms = env_int("PYTEST_ZYGOTE_SETTLE_MS", DEFAULT_SETTLE_MS, 0, 3600000);
	s.max_runs = env_int("PYTEST_ZYGOTE_MAX_RUNS", supervisor_default_max_runs(), 0,
			     SUPERVISOR_MAX_RUNS_LIMIT);
	s.poll_ms = env_int("PYTEST_ZYGOTE_POLL_MS", 0, 0, 3600000);
	s.max_variants = env_int("PYTEST_ZYGOTE_VARIANTS", 3, 0, MAX_VARIANTS);
	s.idle_ms = env_int("PYTEST_ZYGOTE_VARIANT_IDLE", 1800, 1, 7 * 86400) * 1000LL;
	const char *rl = getenv("PYTEST_ZYGOTE_RELOAD");
	s.reload_fresh = rl && strcmp(rl, "fresh") == 0;
	if (rl && *rl && !s.reload_fresh && strcmp(rl, "child") != 0)
		log_warn("PYTEST_ZYGOTE_RELOAD=%s is not child or fresh; using child", rl);
	struct watch_opts wo = {
		.root = s.o->paths.root,
		.globs = globs,
		.ignore = ig && *ig ? ignore : NULL,
		.poll = s.poll_ms > 0,
		.whole_globs = whole,
		.whole_ignore = whole_ignore,
	};
	int r = watch_create(&s.watch, &wo);
	if (r < 0) {
		log_warn("cannot watch %s: %s; runs still check every imported file, but no "
			 "fresh generation follows edits",
			 s.o->paths.root, strerror(-r));
		s.watch = NULL;
		return;
	}
	if (watch_warning(s.watch))
		log_warn("%s", watch_warning(s.watch));
	if (watch_fd(s.watch) < 0 && s.poll_ms <= 0) {
		/* No inotify instance to be had (max_user_instances): poll instead. */
		s.poll_ms = 1000;
	}
	if (s.poll_ms > 0)
		s.next_poll_ms = now_ms() + s.poll_ms;
	log_debug("watching %zu directories under %s", watch_count(s.watch), s.o->paths.root);
}

int
supervisor_main(const struct supervisor_opts *o)
{
	s.o = o;
	s.start_ms = now_ms();
	s.last_run_ms = s.start_ms;
	s.is_variant = o->instance && strchr(o->instance, '~');
	pid_t other = 0;

	s.pfh = pidfile_open(o->paths.pid, 0600, &other);
	if (!s.pfh) {
		if (errno == EEXIST) {
			report("running pid=%d", (int)other);
			log_info("already running for %s (pid %d)", o->paths.root, (int)other);
			return 0;
		}
		log_error("cannot open pid file '%s': %s", o->paths.pid, strerror(errno));
		report("error cannot open pid file '%s': %s", o->paths.pid, strerror(errno));
		return ZEXIT_NOSTART;
	}
	int lockfd = pidfile_fileno(s.pfh);
	if (lockfd >= 0)
		fcntl(lockfd, F_SETFD, FD_CLOEXEC);
	int r = setup_socket();
	if (r < 0) {
		log_error("cannot listen on '%s': %s", o->paths.sock, strerror(-r));
		report("error cannot listen on '%s': %s", o->paths.sock, strerror(-r));
		pidfile_remove(s.pfh);
		return ZEXIT_NOSTART;
	}
	pidfile_write(s.pfh);
	if (s.is_variant)
		setproctitle("supervisor %s (for another environment, %s)", o->paths.root,
			     o->instance);
	else
		setproctitle("supervisor %s", o->paths.root);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	watch_start();

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	s.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s.sigfd < 0 || spawn_generation(0) < 0) {
		report("error cannot start the zygote: %s", strerror(errno));
		unlink(o->paths.sock);
		unlink_pages();
		pidfile_remove(s.pfh);
		return ZEXIT_NOSTART;
	}

	enum { P_SIG, P_LISTEN, P_WATCH, P_EXT, P_GENS };
	for (;;) {
		struct pollfd pfd[P_GENS + MAX_GENS + MAX_VARIANTS + MAX_CONNS];
		int n = 0;
		long long now = now_ms();
		long long wake = -1; /* absolute ms, -1: none */
		pfd[n++] = (struct pollfd){ .fd = s.sigfd, .events = POLLIN };
		int accepting = s.listen_fd >= 0 && now >= s.accept_paused_until;
		pfd[n++] = (struct pollfd){ .fd = accepting ? s.listen_fd : -1, .events = POLLIN };
		if (!accepting && s.listen_fd >= 0)
			wake = s.accept_paused_until;
		pfd[n++] = (struct pollfd){ .fd = s.watch && s.poll_ms <= 0 ? watch_fd(s.watch) : -1,
					    .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s.ext_fd, .events = POLLIN };
		for (int i = 0; i < MAX_GENS; i++)
			pfd[n++] = (struct pollfd){ .fd = s.gens[i].pid ? s.gens[i].ctl : -1,
						    .events = POLLIN };
		int first_variant = n;
		for (int i = 0; i < s.nvariant_fds; i++)
			pfd[n++] = (struct pollfd){ .fd = s.variant_fds[i], .events = POLLIN };
		int first_conn = n;
		for (int i = 0; i < s.nconns; i++)
			/* Parked requests are watched for hang-up and Ctrl-C. */
			pfd[n++] = (struct pollfd){ .fd = s.conns[i]->fd, .events = POLLIN };

		/* Timers: respawn after a crash, refresh after the settle time, polling. */
		if (!s.stopping && s.cur < 0 && s.next < 0 && s.ever_ready) {
			if (now >= s.respawn_at) {
				spawn_generation(0);
				continue;
			}
			wake = wake < 0 || s.respawn_at < wake ? s.respawn_at : wake;
		}
		/* A variant refreshes only once a run came after the change (its
		 * children re-import meanwhile): several variants of an idle
		 * environment do not all warm up after every save. */
		if (!s.stopping && s.dirty_total > 0 && s.next < 0 && s.cur >= 0 &&
		    (!s.is_variant || s.last_run_ms >= s.last_change_ms)) {
			long long due = s.last_change_ms + s.settle_ms;
			if (now >= due) {
				log_info("files changed (%ld); warming a fresh generation",
					 s.dirty_total);
				spawn_generation(0);
				continue;
			}
			wake = wake < 0 || due < wake ? due : wake;
		}
		if (s.watch && s.poll_ms > 0) {
			if (now >= s.next_poll_ms) {
				watch_settle();
				s.next_poll_ms = now + s.poll_ms;
			}
			wake = wake < 0 || s.next_poll_ms < wake ? s.next_poll_ms : wake;
		}
		if (s.stopping && s.nvariant_fds > 0)
			wake = wake < 0 || s.variants_deadline < wake ? s.variants_deadline : wake;
		if (s.is_variant && !s.stopping && s.running == 0 && s.nconns == 0) {
			/* A zygote for another environment stops when unused. */
			long long due = s.last_run_ms + s.idle_ms;
			if (now >= due) {
				log_info("no runs for %lld s: stopping (a zygote for another environment)",
					 s.idle_ms / 1000);
				begin_stop(0);
				continue;
			}
			wake = wake < 0 || due < wake ? due : wake;
		}
		if (s.queued > 0) {
			long long due = notice_queued(now);
			if (due >= 0)
				wake = wake < 0 || due < wake ? due : wake;
		}
		int timeout = wake < 0 ? -1 : (int)(wake > now ? wake - now : 0);
		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll: %s", strerror(errno));
			return 1;
		}
		/* Changes first, so a run that arrives with them sees them. */
		if (pfd[P_WATCH].revents & POLLIN)
			watch_settle();
		if (pfd[P_EXT].revents & POLLIN)
			ext_drain();
		/* Connections by fd, since the handlers reorder s.conns. */
		for (int j = first_conn; j < n; j++) {
			if (!pfd[j].revents)
				continue;
			for (int i = 0; i < s.nconns; i++) {
				if (s.conns[i]->fd != pfd[j].fd)
					continue;
				if (s.conns[i]->waiting)
					waiting_readable(i); /* Ctrl-C or hang-up while parked */
				else
					conn_readable(i);
				break;
			}
		}
		/* Variants we asked to stop: their answer (or hang-up) means gone. */
		for (int j = first_conn - 1; j >= first_variant; j--) {
			if (!pfd[j].revents)
				continue;
			for (int i = 0; i < s.nvariant_fds; i++)
				if (s.variant_fds[i] == pfd[j].fd) {
					close(s.variant_fds[i]);
					s.variant_fds[i] = s.variant_fds[--s.nvariant_fds];
					break;
				}
		}
		if (s.stopping && (s.nvariant_fds == 0 || now_ms() >= s.variants_deadline))
			maybe_finish();
		if (pfd[P_LISTEN].revents & POLLIN)
			accept_clients();
		for (int i = 0; i < MAX_GENS; i++)
			if (pfd[P_GENS + i].revents && s.gens[i].pid && s.gens[i].ctl >= 0)
				gen_readable(&s.gens[i]);
		if (pfd[P_SIG].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(s.sigfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGCHLD)
					continue;
				log_info("signal %d: stopping", (int)si.ssi_signo);
				begin_stop(DEFAULT_GRACE_MS);
			}
			reap();
		}
	}
}
