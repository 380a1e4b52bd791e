/*
 * Client connections: accept (own uid only), decode the request, answer,
 * park or queue it, hand a run to the serving generation. Every connection
 * is a peer (peer.h) on a non-blocking socket: nothing here waits on a
 * client or a zygote, and a bad client costs its own connection only. A
 * reply a client does not read at once lingers until it is out.
 *
 * A connection is a struct conn with one state (internal.h); every function
 * here takes the connection itself. A closed one stays in s.conns, CLOSED,
 * until the loop calls conn_sweep, so no handler ever holds a freed one.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/peer.h"
#include "zygote/proto.h"
#include "internal.h"

/* What one client may have queued: replies and notices are small. */
#define CONN_MAX_QUEUED (1u << 20)

/*
 * Close a client's socket after its reply is out. Unread bytes in our receive
 * queue would make the kernel reset the connection, and the client would see
 * ECONNRESET instead of our reply: read what is there first.
 */
static void
close_draining(struct peer *p)
{
	char buf[4096];
	int fd = peer_fd(p);
	shutdown(fd, SHUT_WR);
	for (int k = 0; k < 64 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; k++)
		;
	peer_destroy(p);
}

/* Move c to state st, keeping the counts of queued runs and of watchers. */
static void
set_state(struct conn *c, enum conn_state st)
{
	if (c->state == CONN_QUEUED)
		s.queued--;
	if (st == CONN_QUEUED)
		s.queued++;
	if (c->state == CONN_WATCHING)
		s.watchers--;
	if (st == CONN_WATCHING)
		s.watchers++;
	if (s.watchers <= 0) {
		/* Nobody to tell: forget what was collected for them. */
		for (int i = 0; i < s.nwatch_paths; i++)
			free(s.watch_paths[i]);
		s.nwatch_paths = 0;
		s.watch_more = 0;
		s.watch_last_ms = 0;
	}
	c->state = st;
}

/* The client is gone (or is given up on): close at once, nothing more to say. */
static void
conn_drop(struct conn *c)
{
	proto_decoder_finish(&c->dec);
	peer_destroy(c->peer);
	c->peer = NULL;
	set_state(c, CONN_CLOSED);
}

/* c was answered: close it now if the reply is out, else once it is
 * (LINGERING: polled for POLLOUT, dropped after LINGER_MS). */
static void
conn_finish(struct conn *c)
{
	proto_decoder_finish(&c->dec);
	if (peer_wants_write(c->peer)) {
		set_state(c, CONN_LINGERING);
		c->deadline_ms = now_ms() + LINGER_MS;
		return;
	}
	close_draining(c->peer);
	c->peer = NULL;
	set_state(c, CONN_CLOSED);
}

/* Send one message to c, then close it. */
void
conn_reply(struct conn *c, uint32_t type, const char *text)
{
	peer_send_text(c->peer, type, text);
	conn_finish(c);
}

/* Send c an ERROR with text and then an EXIT with code, then close it. */
static void
conn_fail(struct conn *c, const char *text, int code)
{
	peer_send_text(c->peer, PROTO_MSG_ERROR, text);
	peer_send_i32(c->peer, PROTO_MSG_EXIT, code);
	conn_finish(c);
}

/* Free the CLOSED connections; the others keep their order (accept order). */
void
conn_sweep(void)
{
	int n = 0;
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		if (c->state == CONN_CLOSED)
			free(c);
		else
			s.conns[n++] = c;
	}
	s.nconns = n;
}

/* A lingering reply: write it, close the connection once it is out. */
static void
linger_flush(struct conn *c)
{
	int r = peer_flush(c->peer);
	if (r == 0 && peer_wants_write(c->peer))
		return;
	if (r < 0) {
		conn_drop(c);
		return;
	}
	close_draining(c->peer);
	c->peer = NULL;
	set_state(c, CONN_CLOSED);
}

/* POLLOUT on c: write what it has queued. */
void
conn_writable(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	if (c->state == CONN_LINGERING)
		linger_flush(c);
	else if (peer_flush(c->peer) < 0)
		conn_drop(c); /* the client is gone */
}

/* Answer c with the status text. */
static void
reply_status(struct conn *c)
{
	char text[16384];
	status_text(text, sizeof(text));
	conn_reply(c, PROTO_MSG_STATUS, text);
}

/*
 * The request as the client sent it, plus the generation's check list
 * (changes.c, changes_gen_entry): the files that may differ from its snapshot,
 * which the child compares instead of every file. A PYTEST_ZYGOTE_CHECK the
 * client sent is dropped: the list is the server's to give. Without a list
 * (lost, or the request would grow too large) the child checks every file.
 */
static int
send_run(struct gen *g, int32_t id, int conn_fd, const struct proto_request *req)
{
	static const char name[] = "PYTEST_ZYGOTE_CHECK=", epoch[] = "PYTEST_ZYGOTE_EPOCH=";
	_cleanup_free_ char *entry = changes_gen_entry(g);
	_cleanup_free_ char **env = malloc(sizeof(*env) * (req->envc + 3));
	if (!env)
		return peer_send_request(g->ctl, id, &conn_fd, 1, req);
	char seen[sizeof(epoch) + 24];
	snprintf(seen, sizeof(seen), "%s%llu", epoch, s.changes_seen);
	size_t n = 0;
	for (size_t i = 0; i < req->envc; i++)
		if (strncmp(req->env[i], name, sizeof(name) - 1) != 0 &&
		    strncmp(req->env[i], epoch, sizeof(epoch) - 1) != 0)
			env[n++] = req->env[i];
	size_t own = n;
	if (entry) {
		/* With the list, how many changes the server has seen: two runs
		 * with the same count saw the same project (ahead.c). */
		env[n++] = entry;
		env[n++] = seen;
	}
	env[n] = NULL;
	struct proto_request copy = *req;
	copy.env = env;
	copy.envc = n;
	int r = peer_send_request(g->ctl, id, &conn_fd, 1, &copy);
	if (r == -EMSGSIZE || r == -E2BIG) {
		/* Too large with the list: without it, every file is checked. */
		env[own] = NULL;
		copy.envc = own;
		r = peer_send_request(g->ctl, id, &conn_fd, 1, &copy);
	}
	return r;
}

/* Hand a complete run request to the current generation. */
static void
hand_over(struct conn *c)
{
	int32_t id = ++s.next_run;
	struct gen *g = gen_serving();
	/*
	 * Z_RUN with the client connection, then the request with the
	 * client's descriptors, queued whole: a zygote that does not read
	 * (stopped, swapped out, in a debugger) costs a queue, never a wait,
	 * and never a message cut in half.
	 */
	int conn_fd = peer_fd(c->peer);
	int r = send_run(g, id, conn_fd, &c->dec.req);
	if (r < 0) {
		log_warn("cannot hand run %d to the zygote: %s", (int)id, strerror(-r));
		if (peer_error(g->ctl))
			gen_drop(g, r); /* reap() starts the next generation */
		conn_reply(c, PROTO_MSG_ERROR,
			   "the zygote is not answering; it is being restarted");
		return;
	}
	s.runs++;
	s.running++;
	g->running++;
	g->seed_used = 1;
	s.last_run_ms = now_ms();
	/* The zygote (or the queue to it) holds the connection and the fds now:
	 * a plain close, since shutdown() would act on the socket the zygote
	 * shares. A notice still queued for the client goes if it can. */
	peer_flush(c->peer);
	conn_drop(c);
}

/*
 * A run whose environment this generation cannot serve: tell the client
 * which zygote can (it starts it if needed). Returns 1 when the run was
 * sent away or refused.
 */
static int
route_elsewhere(struct conn *c)
{
	char id[20], why[400], text[700 + PATH_MAX];
	if (!variant_env_differs(gen_serving(), &c->dec.req, id, sizeof(id), why, sizeof(why)))
		return 0;
	if (s.is_variant || s.max_variants <= 0) {
		snprintf(
			text, sizeof(text),
			"this run's environment differs from the zygote's in %s%s", why,
			s.is_variant
				? ", and this zygote was started for another environment: "
				  "run 'pytest-zygote stop' and run again"
				: ", and PYTEST_ZYGOTE_VARIANTS=0 allows no other zygote: "
				  "run with the server's environment, or restart it with this one");
		conn_reply(c, PROTO_MSG_ERROR, text);
		return 1;
	}
	variant_used(id);
	snprintf(text, sizeof(text), "variant=%s\nreason=%s\npython=%s\n", id, why, s.o->python);
	conn_reply(c, PROTO_MSG_REDIRECT, text);
	return 1;
}

/*
 * Park a REQUESTED connection in st (WAITING or QUEUED). Parked runs never
 * take the last CONN_RESERVE slots, so that `status` and `stop` always find
 * one: -1 when the run was refused for that.
 */
static int
park(struct conn *c, enum conn_state st)
{
	int parked = 0;
	for (int i = 0; i < s.nconns; i++)
		if (s.conns[i]->state == CONN_WAITING || s.conns[i]->state == CONN_QUEUED)
			parked++;
	if (parked >= MAX_CONNS - CONN_RESERVE) {
		char text[160];
		snprintf(text, sizeof(text),
			 "too many runs waiting (%d); try again when some have finished", parked);
		conn_reply(c, PROTO_MSG_ERROR, text);
		return -1;
	}
	set_state(c, st);
	if (st == CONN_WAITING && !c->wait_since_ms)
		c->wait_since_ms = now_ms();
	if (st == CONN_QUEUED) {
		c->queue_seq = ++s.queue_seq;
		c->deadline_ms = now_ms() + 1000; /* then say why it waits */
	}
	return 0;
}

/* The CHANGES text: the files watched, then the paths (the header of each). */
static void
watch_text(char *buf, size_t size, int with_paths)
{
	long files = changes_watched_files();
	int len = snprintf(buf, size, "files=%ld\n", files < 0 ? 0 : files);
	for (int i = 0; with_paths && i < s.nwatch_paths && len >= 0 && (size_t)len < size; i++)
		len += snprintf(buf + len, size - (size_t)len, "changed=%s\n", s.watch_paths[i]);
	if (with_paths && s.watch_more > 0 && len >= 0 && (size_t)len < size)
		snprintf(buf + len, size - (size_t)len, "more=%ld\n", s.watch_more);
}

/*
 * A WATCH: the connection stays, without a deadline, and gets a CHANGES
 * after each settled batch of changes. At most MAX_WATCHERS at once: each
 * holds a slot and costs a walk of the tree per batch.
 */
static void
watch_begin(struct conn *c)
{
	char text[128];
	if (s.stopping) {
		conn_reply(c, PROTO_MSG_ERROR, "the server is stopping; start it again");
		return;
	}
	if (s.watchers >= MAX_WATCHERS) {
		snprintf(text, sizeof(text),
			 "too many watch clients (%d) on this server; end one of them (q or "
			 "Ctrl-C) and try again",
			 MAX_WATCHERS);
		conn_reply(c, PROTO_MSG_ERROR, text);
		return;
	}
	changes_watch_settle(); /* changes before the watch began are not its */
	proto_decoder_finish(&c->dec);
	set_state(c, CONN_WATCHING);
	watch_text(text, sizeof(text), 0);
	if (peer_send_text(c->peer, PROTO_MSG_CHANGES, text) < 0)
		conn_drop(c);
}

/* Send the watchers what changed since the last time, and forget it. */
void
conn_watch_notify(void)
{
	/* PROTO_CHANGES_MAX_PATHS paths of at most PATH_MAX, and the counts */
	static char text[PROTO_CHANGES_MAX_PATHS * (PATH_MAX + 9) + 64];
	watch_text(text, sizeof(text), 1);
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		/* One that has not read a megabyte of these is stuck (stopped
		 * with Ctrl-Z): it goes, as a client not reading its reply. */
		if (c->state == CONN_WATCHING &&
		    peer_send_text(c->peer, PROTO_MSG_CHANGES, text) < 0) {
			log_info("a watch client does not read its messages; closing its "
				 "connection");
			conn_drop(c);
		}
	}
	for (int i = 0; i < s.nwatch_paths; i++)
		free(s.watch_paths[i]);
	s.nwatch_paths = 0;
	s.watch_more = 0;
	s.watch_last_ms = 0;
}

/* A watcher sent something: only its hang-up is expected. */
static int
watching_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	(void)p;
	(void)f;
	conn_reply(arg, PROTO_MSG_ERROR, "unexpected message from a watch client");
	return PEER_STOP;
}

/* POLLIN on a watcher: its end (q, Ctrl-C, a kill), or a message it must not send. */
static void
watching_readable(struct conn *c)
{
	int r = peer_read(c->peer, watching_frame, c);
	if (r == 1 || r == PEER_STOP)
		return;
	conn_drop(c);
}

/* A REQUESTED connection: answer it, park it or hand the run over. */
static void
request_complete(struct conn *c)
{
	int new_seed = 0, stale = 0;
	switch (c->dec.req.kind) {
	case PROTO_KIND_WATCH:
		watch_begin(c);
		return;
	case PROTO_KIND_STATUS:
		changes_watch_settle(); /* the changes made before asking are in the answer */
		reply_status(c);
		return;
	case PROTO_KIND_STOP:
		set_state(c, CONN_STOPPING);
		/* Dependency exception: a call into the loop, which answers it. */
		supervisor_begin_stop(c->dec.req.flags ? (int)c->dec.req.flags : DEFAULT_GRACE_MS);
		return;
	case PROTO_KIND_RUN:
		/* Settle the dirty set now, not when the events happen to be read:
		 * a save followed at once by a run must be seen by that run. */
		changes_watch_settle();
		if (s.ext_fd >= 0)
			changes_ext_drain();
		if (s.stopping) {
			conn_reply(c, PROTO_MSG_ERROR, "the server is stopping; start it again");
			return;
		}
		stale = changes_run_waits(c);
		/* A worker runs in its run's generation, with its hash seed. */
		new_seed = c->dec.req.flags & PROTO_FLAG_WORKER
				   ? 0
				   : variant_wants_new_seed(&c->dec.req);
		if (new_seed < 0) {
			conn_reply(c, PROTO_MSG_ERROR,
				   "PYTEST_ZYGOTE_HASH_SEED must be per-run or generation");
			return;
		}
		if (gen_serving() && !stale && route_elsewhere(c))
			return;
		if (new_seed && gen_serving() && !stale && gen_serving()->seed_used) {
			/* Every run of this kind gets a generation of its own, so a
			 * hash seed of its own, as a cold run would. */
			if (!c->told) {
				const char *t = "waiting for a zygote with a new hash seed "
						"(PYTEST_ZYGOTE_HASH_SEED=per-run)";
				peer_send_text(c->peer, PROTO_MSG_NOTICE, t);
				c->told = 1;
			}
			if (park(c, CONN_WAITING) == 0 && s.next < 0)
				gen_spawn(1);
			return;
		}
		/* fall through */
	case PROTO_KIND_WAIT:
		if (gen_serving() && !stale) {
			if (c->dec.req.kind == PROTO_KIND_RUN && s.max_runs > 0 &&
			    s.running >= s.max_runs && !(c->dec.req.flags & PROTO_FLAG_WORKER)) {
				/* At the limit: queue, first come first served. */
				(void)park(c, CONN_QUEUED);
				return;
			}
			if (c->dec.req.kind == PROTO_KIND_RUN) {
				hand_over(c);
				/* The next such run's generation warms meanwhile. */
				if (new_seed > 0 && s.next < 0 && !s.stopping)
					gen_spawn(1);
			} else {
				reply_status(c);
			}
			return;
		}
		if (stale) {
			/* Say why the run waits; the client prints it on stderr. */
			char text[2000];
			changes_wait_reason(text, sizeof(text));
			peer_send_text(c->peer, PROTO_MSG_NOTICE, text);
		}
		(void)park(c, CONN_WAITING);
		return;
	}
}

/* Start queued runs, oldest first, while there is room under max_runs. */
void
conn_dispatch_queue(void)
{
	while (s.queued > 0 && gen_serving() && !s.stopping &&
	       (s.max_runs <= 0 || s.running < s.max_runs)) {
		struct conn *best = NULL;
		for (int i = 0; i < s.nconns; i++) {
			struct conn *c = s.conns[i];
			if (c->state == CONN_QUEUED && (!best || c->queue_seq < best->queue_seq))
				best = c;
		}
		if (!best)
			return;
		set_state(best, CONN_REQUESTED);
		request_complete(best);
	}
}

/* A generation became warm: serve what waited for it, oldest first. */
void
conn_serve_waiting(void)
{
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		if (c->state != CONN_WAITING)
			continue;
		set_state(c, CONN_REQUESTED);
		request_complete(c);
	}
	conn_dispatch_queue();
}

/* Tell a run that has waited about a second for a free slot why it waits. */
static void
tell_queued(struct conn *c)
{
	char text[160];
	snprintf(text, sizeof(text), "waiting: %d runs in progress (max_runs=%d)", s.running,
		 s.max_runs);
	peer_send_text(c->peer, PROTO_MSG_NOTICE, text);
	c->told = 1;
}

/* A generation that runs wait for cannot start: end them with msg. Runs
 * queued for a free slot wait for the generation serving, not this one. */
void
conn_fail_waiting(const char *msg)
{
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		if (c->state != CONN_WAITING)
			continue;
		if (c->dec.req.kind == PROTO_KIND_RUN)
			conn_fail(c, msg, ZEXIT_NOSTART);
		else if (!gen_serving())
			conn_reply(c, PROTO_MSG_ERROR, msg);
	}
}

/* A fresh generation started: tell the runs that wait for one what they wait for now. */
void
conn_notice_fresh(void)
{
	char text[2000];
	changes_wait_reason(text, sizeof(text));
	for (int i = 0; i < s.nconns; i++)
		if (s.conns[i]->state == CONN_WAITING && s.conns[i]->fresh_after_ms)
			peer_send_text(s.conns[i]->peer, PROTO_MSG_NOTICE, text);
}

/* A run (or `start`) waited wait_timeout for a generation: say what it
 * waited for and end it; the server goes on warming. */
static void
give_up_waiting(struct conn *c, long long now)
{
	char what[2000], text[2000 + 4096 + 300];
	if (s.fresh_needed && c->fresh_after_ms) {
		changes_wait_reason(what, sizeof(what));
	} else if (s.next >= 0) {
		char phase[64];
		const struct gen *g = &s.gens[s.next];
		snprintf(what, sizeof(what), "generation %d has been warming up for %.0f s (%s)",
			 g->number, (double)(now - g->started_ms) / 1000.0,
			 *gen_info_get(g->progress, "phase", phase, sizeof(phase)) ? phase
										   : "starting");
	} else {
		snprintf(what, sizeof(what), "no generation is warming up");
	}
	snprintf(text, sizeof(text),
		 "no zygote became ready within %.0f s (wait_timeout): %s. The log is %s. Run "
		 "again to wait longer, or set PYTEST_ZYGOTE_WAIT_TIMEOUT (0: no bound) and "
		 "restart the server",
		 (double)s.wait_timeout_ms / 1000.0, what, s.o->paths.log);
	log_info("a %s waited %.0f s for a generation; giving up (wait_timeout)",
		 c->dec.req.kind == PROTO_KIND_RUN ? "run" : "client",
		 (double)(now - c->wait_since_ms) / 1000.0);
	if (c->dec.req.kind == PROTO_KIND_RUN)
		conn_fail(c, text, ZEXIT_NOSTART);
	else
		conn_reply(c, PROTO_MSG_ERROR, text);
}

/* The connections' timers; the next time one is due, or -1. */
long long
conn_expire(long long now)
{
	long long wake = -1;
	int idle = 0;
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		if (c->state == CONN_WAITING && c->wait_since_ms && s.wait_timeout_ms > 0) {
			long long due = c->wait_since_ms + s.wait_timeout_ms;
			if (now >= due)
				give_up_waiting(c, now);
			else
				wake = wake < 0 || due < wake ? due : wake;
			continue;
		}
		if (c->state != CONN_READING && c->state != CONN_LINGERING &&
		    !(c->state == CONN_QUEUED && !c->told))
			continue;
		if (now < c->deadline_ms) {
			wake = wake < 0 || c->deadline_ms < wake ? c->deadline_ms : wake;
			continue;
		}
		if (c->state == CONN_QUEUED) {
			tell_queued(c);
		} else if (c->state == CONN_READING) {
			char text[160];
			snprintf(
				text, sizeof(text),
				"no whole request within %d s of connecting; closing the connection",
				CONN_REQUEST_MS / 1000);
			conn_reply(c, PROTO_MSG_ERROR, text);
			idle++;
		} else {
			log_info("a client did not read its reply for %d s (%zu bytes left); "
				 "closing its connection",
				 LINGER_MS / 1000, peer_queued(c->peer));
			conn_drop(c);
		}
	}
	if (idle)
		log_info(
			"closed %d connection%s that sent no whole request within %d s of connecting",
			idle, idle == 1 ? "" : "s", CONN_REQUEST_MS / 1000);
	return wake;
}

/* One message from a parked client (see conn_readable). */
static int
parked_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	struct conn *c = arg;
	int32_t sig;
	if (f->type != PROTO_MSG_SIGNAL || proto_get_i32(f->payload, f->len, &sig) < 0) {
		conn_reply(c, PROTO_MSG_ERROR, "unexpected message while waiting");
		return PEER_STOP;
	}
	if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT || sig == SIGKILL) {
		peer_send_text(p, PROTO_MSG_NOTICE, "interrupted before the run started");
		peer_send_i32(p, PROTO_MSG_EXIT, 128 + sig);
		conn_finish(c);
		return PEER_STOP;
	}
	return 0;
}

/*
 * A parked client sent something: Ctrl-C (or another terminating signal)
 * before its run started cancels it; other signals (a terminal resize) have
 * nobody to go to yet.
 */
static void
parked_readable(struct conn *c)
{
	int r = peer_read(c->peer, parked_frame, c);
	if (r == 1 || r == PEER_STOP)
		return;
	if (r == -EMSGSIZE)
		conn_reply(c, PROTO_MSG_ERROR, "message too large");
	else
		conn_drop(c);
}

/* One message of a request: feed the decoder; the messages read with the
 * end of the request are a parked client's (request_readable). */
static int
request_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	struct conn *c = arg;
	if (c->state == CONN_REQUESTED)
		return parked_frame(p, f, arg);
	/* The decoder owns the descriptors from here, and closes them on error. */
	int r = proto_decoder_feed(&c->dec, f->type, f->payload, f->len, f->fds, f->nfds);
	f->nfds = 0;
	if (r == 0 && f->type == PROTO_MSG_FDS && peer_unclaimed_fds(p) > 0) {
		/* Only FDS carries descriptors: these are extra. */
		r = -EPROTO;
		snprintf(c->dec.error, sizeof(c->dec.error),
			 "more file descriptors than the FDS message announced");
	}
	if (r < 0) {
		log_info("closing a connection: %s", log_escape(c->dec.error));
		conn_reply(c, c->dec.mismatch ? PROTO_MSG_MISMATCH : PROTO_MSG_ERROR, c->dec.error);
		return PEER_STOP;
	}
	if (r == 1)
		set_state(c, CONN_REQUESTED);
	return 0;
}

/*
 * Read what c sent while its request is being read. Once it is complete,
 * the messages that came in the same read are taken before it is acted on:
 * a Ctrl-C sent right after the request cancels the run as when it is
 * parked, instead of staying in our buffer, unseen, while the run is handed
 * over or waits.
 */
static void
request_readable(struct conn *c)
{
	int r = peer_read(c->peer, request_frame, c);
	/* A message cut off at the end of that read: its rest is in the socket
	 * (a client writes a message at once). Read it here, or a zygote
	 * would be handed half a message. */
	for (int k = 0; k < 8 && r == 1 && c->state == CONN_REQUESTED && peer_read_partial(c->peer);
	     k++)
		r = peer_read(c->peer, request_frame, c);
	if (c->state == CONN_REQUESTED && (r == 1 || r == 0)) {
		if (peer_read_partial(c->peer))
			conn_reply(c, PROTO_MSG_ERROR,
				   "the request was followed by part of a message");
		else
			request_complete(c); /* at end of file too: it can still read a reply */
		return;
	}
	if (r == 1 || r == PEER_STOP)
		return;
	if (r == -ETOOMANYREFS) {
		conn_reply(c, PROTO_MSG_ERROR,
			   "too many file descriptors in one message (a run sends 3)");
	} else if (r == -EMSGSIZE && c->dec.state == PROTO_ST_HELLO) {
		/* Nothing accepted yet: these bytes are no request of ours at all. */
		const char *t = "not a pytest-zygote request: its first bytes are no HELLO message "
				"(something else is writing to this socket)";
		log_info("closing a connection: %s", t);
		conn_reply(c, PROTO_MSG_ERROR, t);
	} else if (r == -EMSGSIZE) {
		conn_reply(c, PROTO_MSG_ERROR,
			   "a message larger than 1 MiB (the limit for one message; "
			   "arguments and environment each must fit in it)");
	} else if (r == 0 && (peer_read_partial(c->peer) || c->dec.state == PROTO_ST_BODY)) {
		/* A client that only shut down its side can still read why. */
		conn_reply(c, PROTO_MSG_ERROR,
			   peer_read_partial(c->peer)
				   ? "the request was cut off in the middle of a message"
				   : "the request ended before its DONE message");
	} else {
		conn_drop(c);
	}
}

/* POLLIN (or hang-up, error) on c, by its state. */
void
conn_readable(struct conn *c)
{
	switch (c->state) {
	case CONN_READING:
		request_readable(c);
		break;
	case CONN_WAITING:
	case CONN_QUEUED:
	case CONN_STOPPING:
		parked_readable(c); /* Ctrl-C or hang-up while parked */
		break;
	case CONN_WATCHING:
		watching_readable(c);
		break;
	case CONN_LINGERING:
		linger_flush(c); /* a hang-up: the flush says the client is gone */
		break;
	case CONN_REQUESTED:
	case CONN_CLOSED:
		break;
	}
}

/* A connection we refuse: one error message, then close. */
static void
refuse(int fd, const char *text)
{
	struct peer *p = peer_create(fd);
	if (!p)
		return;
	peer_send_text(p, PROTO_MSG_ERROR, text);
	/* A short text on a new connection is out at once. */
	close_draining(p);
}

/*
 * The table is full: close the oldest connection that has not sent a whole
 * request, to make room. Reserving slots instead would not do: what a
 * connection wants is known only once its request is read, so idle ones
 * would take the reserve too. A client sends its request at once, so the one
 * that has waited longest is the likeliest to be idle (and it goes by
 * CONN_REQUEST_MS anyway). 0, or -1 when every connection is a request
 * being served (parked runs leave CONN_RESERVE slots to the others).
 */
static int
evict_idle(void)
{
	for (int i = 0; i < s.nconns; i++) {
		struct conn *c = s.conns[i];
		if (c->state != CONN_READING)
			continue;
		char text[160];
		snprintf(text, sizeof(text),
			 "too many connections (%d): closing this one, which sent no request, "
			 "to serve a newer one",
			 MAX_CONNS);
		conn_reply(c, PROTO_MSG_ERROR, text);
		/* Its slot is needed now; the loop calls us where no handler
		 * holds a connection, so it can be freed at once. */
		if (c->state == CONN_LINGERING)
			conn_drop(c);
		conn_sweep();
		return 0;
	}
	/* Else a reply the client has not read (it would go after LINGER_MS). */
	for (int i = 0; i < s.nconns; i++) {
		if (s.conns[i]->state != CONN_LINGERING)
			continue;
		conn_drop(s.conns[i]);
		conn_sweep();
		return 0;
	}
	return -1;
}

/* Accept every pending connection from our own uid. */
void
conn_accept_clients(void)
{
	int evicted = 0;
	for (;;) {
		int fd = accept4(s.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Out of descriptors: pause accepting instead of spinning. */
				log_warn("out of file descriptors; not accepting for 100 ms");
				s.accept_paused_until = now_ms() + 100;
			}
			break;
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
			refuse(fd, msg);
			log_warn("refused a connection from uid %u", (unsigned)cred.uid);
			continue;
		}
		if (s.nconns >= MAX_CONNS) {
			if (evict_idle() < 0) {
				refuse(fd, "too many connections; try again shortly");
				continue;
			}
			evicted++;
		}
		struct conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->peer = peer_create(fd);
		if (!c->peer) {
			free(c);
			continue;
		}
		peer_set_limit(c->peer, CONN_MAX_QUEUED, 16);
		proto_decoder_init(&c->dec);
		c->state = CONN_READING;
		c->deadline_ms = now_ms() + CONN_REQUEST_MS;
		s.conns[s.nconns++] = c;
	}
	if (evicted)
		log_warn("too many connections (%d): closed the oldest %d that had sent no request",
			 MAX_CONNS, evicted);
}
