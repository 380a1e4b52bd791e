/*
 * Zygote generations: fork and exec one (fd layout in gen_spawn), read its
 * control socket, let a warm one take over while the old one drains. Never
 * initialises Python. Never calls into conn.c or the loop: what its
 * messages mean for connections goes back to the loop as struct gen_events.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/peer.h"
#include "zygote/proto.h"
#include "zygote/spawn.h"
#include "internal.h"

#define DRAIN_GRACE_MS 600000 /* an old generation's runs may take long */

/* A value of a generation's Z_READY text ("" when absent). */
const char *
gen_info_get(const char *info, const char *key, char *buf, size_t size)
{
	proto_kv_get(info, key, buf, size);
	return buf;
}

/*
 * Where zygotes keep the pages their runs wrote (zygote/learn.c, learn_save) for
 * the next generation: beside the socket, removed when the server stops.
 */
static void
pages_path(char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s.pages", s.o->paths.dir, s.o->paths.name);
}

/* What the last learning run reported (_zy/warmup.py, _learn_and_import), beside it. */
static void
learned_path(char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s.learned", s.o->paths.dir, s.o->paths.name);
}

/* Remove the pages and learned files beside the socket. */
void
gen_unlink_pages(void)
{
	char pages[PATH_MAX + 128];
	/* Relative to the directory the server started in: a new runtime
	 * directory at the same path (and its server's files) is never touched. */
	pages_path(pages, sizeof(pages));
	unlinkat(s.rt_dirfd, strrchr(pages, '/') + 1, 0);
	learned_path(pages, sizeof(pages));
	unlinkat(s.rt_dirfd, strrchr(pages, '/') + 1, 0);
}

/* The generation serving runs, if it is warm. */
struct gen *
gen_serving(void)
{
	if (s.cur < 0 || !s.gens[s.cur].pid || !s.gens[s.cur].ready || !s.gens[s.cur].ctl)
		return NULL;
	return &s.gens[s.cur];
}

/*
 * Start a new generation warming up in the background; it becomes s.next.
 * replay: it is only for a new hash seed, so if nothing changed since the
 * last warm-up it may replay that one's learning run.
 */
int
gen_spawn(int replay)
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
	/* Our end never blocks (O_NONBLOCK is per open file: the zygote's end
	 * stays blocking until it is warm). */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	struct peer *ctl = peer_create(sv[0]);
	if (!ctl) {
		log_error("cannot start a generation: %s", strerror(errno));
		close(sv[1]);
		return -1;
	}
	int number = ++s.generations;
	replay = replay && s.dirty_total == 0 && !s.fresh_needed;
	/* Runs go to the serving generation meanwhile (none waits for this one). */
	int serving = s.cur >= 0 && s.gens[s.cur].pid && s.gens[s.cur].ready && !s.fresh_needed;
	pid_t sup = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		peer_destroy(ctl);
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
		/* A refresh: another generation serves meanwhile, so this one
		 * imports after its learning run, not next to it (memory). */
		if (serving)
			setenv("PYTEST_ZYGOTE_LEARN_FIRST", "1", 1);
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
		      s.o->paths.root, "--python", s.o->python, "--generation", gen, "--supervisor",
		      supbuf, "--pages", pages, stable, (char *)NULL);
		fprintf(stderr, "pytest-zygote: cannot run '%s': %s\n", s.o->self_exe,
			strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	struct gen *g = &s.gens[slot];
	peer_destroy(g->ctl);
	free(g->files);
	changes_gen_end(g);
	memset(g, 0, sizeof(*g));
	changes_gen_begin(g);
	g->pid = pid;
	g->ctl = ctl;
	g->number = number;
	g->started_ms = now_ms();
	s.next = slot;
	/* What changed so far is this generation's to absorb. */
	s.fresh_first_ms = 0;
	for (int i = 0; i < s.ndirty; i++)
		free(s.dirty[i]);
	s.ndirty = 0;
	s.dirty_total = 0;
	log_debug("generation %d: zygote pid %d", number, (int)pid);
	/* The serving one holds no spare while this one warms (memory). */
	if (s.cur >= 0 && s.cur != slot && s.gens[s.cur].pid && s.gens[s.cur].ready &&
	    !s.gens[s.cur].draining)
		gen_send_i32(&s.gens[s.cur], PROTO_MSG_Z_LEAN, 1);
	return 0;
}

/*
 * A generation (after the first) could not warm up. The runs waiting for it
 * are told why, with exit 71, unless files it reads changed while it warmed
 * (an install in progress): then the next one, due once they stop, decides.
 * Runs never fall back to the generation serving: one that must wait was
 * sent here because that one predates a change it cannot follow. Runs in
 * progress, status and `start` stay with it.
 */
void
gen_warmup_failed(struct gen *g, const char *why, struct gen_events *ev)
{
	/* It exits (or did): no longer the one warming, so that a run arriving
	 * before it is reaped starts the next instead of waiting for it. */
	g->draining = 1;
	if (s.next == (int)(g - s.gens))
		s.next = -1;
	if (s.fresh_first_ms > g->started_ms) {
		log_warn("generation %d failed while files it reads kept changing; the next one "
			 "starts once they stop: %s",
			 g->number, why);
		return;
	}
	log_error("generation %d failed: %s", g->number, why);
	if (s.cur >= 0 && s.gens[s.cur].pid && !s.gens[s.cur].draining)
		gen_send_i32(&s.gens[s.cur], PROTO_MSG_Z_LEAN, 0);
	char *msg = ev->failed;
	size_t size = sizeof(ev->failed);
	ev->what |= GEN_EV_FAILED;
	if (s.fresh_needed) {
		snprintf(s.fresh_failed, sizeof(s.fresh_failed), "%s", why);
		snprintf(msg, size,
			 "the fresh zygote cannot start: %s\nThe running zygote started before "
			 "%.500s, so it cannot serve this run. Undo or complete that change "
			 "(reinstall what was removed) and run again: each run tries a fresh "
			 "zygote again. The whole error is in %s.",
			 why, s.fresh_reason, s.o->paths.log);
	} else {
		snprintf(msg, size, "the zygote cannot start: %s\nThe whole error is in %s.", why,
			 s.o->paths.log);
	}
}

/* A generation said Z_READY: it failed, or it takes over serving runs. */
static void
gen_ready(struct gen *g, const char *text, struct gen_events *ev)
{
	snprintf(g->info, sizeof(g->info), "%s", text);
	char v[900];
	if (*gen_info_get(g->info, "error", v, sizeof(v))) {
		if (!s.ever_ready) {
			log_error("generation %d failed: %s", g->number, v);
			ev->what |= GEN_EV_FIRST_FAILED;
			snprintf(ev->failed, sizeof(ev->failed), "%s", v);
			return; /* it exits; reap() gives up */
		}
		gen_warmup_failed(g, v, ev);
		return;
	}
	g->ready = 1;
	g->warmup_s = atof(gen_info_get(g->info, "warmup_ms", v, sizeof(v))) / 1000.0;
	char mods[32], th[32], st[300];
	gen_info_get(g->info, "modules", mods, sizeof(mods));
	gen_info_get(g->info, "threads", th, sizeof(th));
	gen_info_get(g->info, "status", st, sizeof(st));
	log_info("generation %d ready: %s modules, warm-up %.2f s", g->number, mods, g->warmup_s);
	if (s.ever_ready)
		s.refreshes++;
	s.ever_ready = 1;
	s.early_failures = 0;

	/*
	 * Take over from the current generation, which drains. An idle one
	 * exits at once: this one's practice run waits for that (Z_GO from
	 * reap()), so a refresh never holds both zygotes and a practice run.
	 * One with runs to finish lives as long as they do: no waiting.
	 */
	int idx = (int)(g - s.gens);
	g->go_after = 0;
	if (s.cur >= 0 && s.cur != idx && s.gens[s.cur].pid) {
		struct gen *old = &s.gens[s.cur];
		old->draining = 1;
		if (!old->running)
			g->go_after = old->pid;
		gen_send_i32(old, PROTO_MSG_Z_DRAIN, DRAIN_GRACE_MS);
	}
	if (!g->go_after)
		gen_send_i32(g, PROTO_MSG_Z_GO, 1);
	s.cur = idx;
	if (s.next == idx)
		s.next = -1;
	if (s.fresh_needed && g->started_ms >= s.fresh_since_ms)
		s.fresh_needed = 0;
	s.fresh_failed[0] = '\0';

	/* `start` returns now; the watches below are in place before this loop
	 * reads the first request. */
	status_report("ready pid=%d modules=%s warmup_s=%.2f threads=%s status=%s", (int)getpid(),
		      mods, g->warmup_s, th, st);
	if (s.o->ready_fd >= 0) {
		ssize_t w = write(s.o->ready_fd, "\n", 1);
		(void)w;
		close(s.o->ready_fd);
		((struct supervisor_opts *)s.o)->ready_fd = -1;
	}
	changes_ext_rebuild(g->files);
	ev->what |= GEN_EV_READY;
}

/* One message from a generation. PEER_STOP once its peer is gone (a message
 * it sent led to dropping it). */
struct gen_read {
	struct gen *g;
	struct gen_events *ev;
};

static int
gen_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	struct gen *g = ((struct gen_read *)arg)->g;
	struct gen_events *ev = ((struct gen_read *)arg)->ev;
	const char *text = f->payload;
	int terminated = f->len > 0 && text[f->len - 1] == '\0';
	switch (f->type) {
	case PROTO_MSG_Z_READY:
		if (terminated && !g->draining)
			gen_ready(g, text, ev);
		break;
	case PROTO_MSG_Z_PREPARED:
		g->prepared = 1;
		break;
	case PROTO_MSG_Z_DONE:
		if (g->running > 0) {
			g->running--;
			s.running--;
		}
		ev->what |= GEN_EV_SLOT_FREE;
		break;
	case PROTO_MSG_Z_PROGRESS:
		if (!terminated || g->ready)
			break;
		snprintf(g->progress, sizeof(g->progress), "%s", text);
		if (!s.ever_ready)
			status_report_progress(text);
		break;
	case PROTO_MSG_Z_FILES:
		if (!terminated)
			break;
		free(g->files);
		g->files = strdup(text);
		changes_gen_files(g);
		if (s.cur == (int)(g - s.gens))
			changes_ext_rebuild(g->files);
		break;
	default:
		log_warn("unexpected message %u from the zygote", f->type);
	}
	return g->ctl == p ? 0 : PEER_STOP;
}

/* Read a generation's control socket and act on what it says. */
void
gen_readable(struct gen *g, struct gen_events *ev)
{
	struct gen_read rd = { g, ev };
	int r = peer_read(g->ctl, gen_frame, &rd);
	if (r == 1 || r == PEER_STOP)
		return;
	/* The zygote is exiting; SIGCHLD tells how. Stop polling it. */
	peer_destroy(g->ctl);
	g->ctl = NULL;
	g->ready = 0;
}

/* POLLOUT on a generation's control socket: write what waits for it. */
void
gen_writable(struct gen *g)
{
	int r = peer_flush(g->ctl);
	if (r < 0)
		gen_drop(g, r);
}

/* Send g a message; a zygote that cannot take it is dropped. */
void
gen_send_i32(struct gen *g, uint32_t type, int32_t v)
{
	if (!g->ctl) {
		kill(g->pid, SIGKILL);
		return;
	}
	int r = peer_send_i32(g->ctl, type, v);
	if (r < 0)
		gen_drop(g, r);
}

/* A zygote whose control socket broke, or that stopped reading it: kill it. */
void
gen_drop(struct gen *g, int err)
{
	if (err == -ENOBUFS)
		log_warn("generation %d: the zygote (pid %d) is not reading its control socket "
			 "(%zu bytes wait for it, the limit is %u MiB); killing it: its runs end "
			 "with exit 75 (run again)",
			 g->number, (int)g->pid, peer_queued(g->ctl), PEER_MAX_QUEUED >> 20);
	else
		log_warn("generation %d: cannot write to the zygote (pid %d): %s; killing it",
			 g->number, (int)g->pid, strerror(-err));
	peer_destroy(g->ctl);
	g->ctl = NULL;
	g->ready = 0;
	kill(g->pid, SIGKILL);
}
