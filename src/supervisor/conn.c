/*
 * Client connections: accept (own uid only), decode the request, answer,
 * park or queue it, hand a run to the serving generation. Every connection
 * is a peer (peer.h) on a non-blocking socket: nothing here waits on a
 * client or a zygote, and a bad client costs its own connection only. A
 * reply a client does not read at once lingers until it is out.
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

/* Close a client's peer after a reply: now if the reply is out, else once
 * it is (s.lingering, polled for POLLOUT, dropped after LINGER_MS). */
static void
release(struct peer *p)
{
	if (!peer_wants_write(p)) {
		close_draining(p);
		return;
	}
	if (s.nlingering >= MAX_CONNS) {
		peer_destroy(p);
		return;
	}
	s.lingering[s.nlingering].peer = p;
	s.lingering[s.nlingering].until_ms = now_ms() + LINGER_MS;
	s.nlingering++;
}

/* Close connection i and free it; the last connection takes its index. */
static void
conn_close(int i)
{
	struct conn *c = s.conns[i];
	if (c->queued_ms)
		s.queued--;
	proto_decoder_finish(&c->dec);
	if (c->peer)
		release(c->peer);
	free(c);
	s.conns[i] = s.conns[--s.nconns];
}

/* Send one message to connection i, then close it. */
void
conn_reply(int i, uint32_t type, const char *text)
{
	peer_send_text(s.conns[i]->peer, type, text);
	conn_close(i);
}

/* Send connection i an ERROR with text and then an EXIT with code, then close it. */
void
conn_fail(int i, const char *text, int code)
{
	peer_send_text(s.conns[i]->peer, PROTO_MSG_ERROR, text);
	peer_send_i32(s.conns[i]->peer, PROTO_MSG_EXIT, code);
	conn_close(i);
}

/* POLLOUT (or an error) on connection i: write what it has queued. 0 when
 * the connection was closed (the client is gone). */
int
conn_writable(int i)
{
	if (peer_flush(s.conns[i]->peer) < 0) {
		conn_close(i);
		return 0;
	}
	return 1;
}

/* POLLOUT on lingering connection k: write its reply, close it once out. */
void
conn_linger_writable(int k)
{
	struct peer *p = s.lingering[k].peer;
	int r = peer_flush(p);
	if (r == 0 && peer_wants_write(p))
		return;
	if (r < 0)
		peer_destroy(p);
	else
		close_draining(p);
	s.lingering[k] = s.lingering[--s.nlingering];
}

/* Drop lingering connections whose time is up; the next deadline, or -1. */
long long
conn_linger_expire(long long now)
{
	long long wake = -1;
	for (int k = s.nlingering - 1; k >= 0; k--) {
		if (now < s.lingering[k].until_ms) {
			if (wake < 0 || s.lingering[k].until_ms < wake)
				wake = s.lingering[k].until_ms;
			continue;
		}
		log_info("a client did not read its reply for %d s (%zu bytes left); closing its "
			 "connection",
			 LINGER_MS / 1000, peer_queued(s.lingering[k].peer));
		peer_destroy(s.lingering[k].peer);
		s.lingering[k] = s.lingering[--s.nlingering];
	}
	return wake;
}

/* Answer connection i with the status text. */
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
	int32_t id = ++s.next_run;
	struct gen *g = gen_serving();
	/*
	 * Z_RUN with the client connection, then the request with the
	 * client's descriptors, queued whole: a zygote that does not read
	 * (stopped, swapped out, in a debugger) costs a queue, never a wait,
	 * and never a message cut in half.
	 */
	int conn_fd = peer_fd(c->peer);
	int r = peer_send_request(g->ctl, id, &conn_fd, 1, &c->dec.req);
	if (r < 0) {
		log_warn("cannot hand run %d to the zygote: %s", (int)id, strerror(-r));
		if (peer_error(g->ctl))
			gen_drop(g, r); /* reap() starts the next generation */
		conn_reply(i, PROTO_MSG_ERROR,
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
	peer_destroy(c->peer);
	c->peer = NULL;
	conn_close(i);
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
		conn_reply(i, PROTO_MSG_ERROR, text);
		return 1;
	}
	variant_used(id);
	snprintf(text, sizeof(text), "variant=%s\nreason=%s\npython=%s\n", id, why, s.o->python);
	conn_reply(i, PROTO_MSG_REDIRECT, text);
	return 1;
}

/* A request was read in full: answer it, park it or hand the run over. */
static void
request_complete(int i)
{
	struct conn *c = s.conns[i];
	int new_seed = 0, stale = 0;
	switch (c->dec.req.kind) {
	case PROTO_KIND_STATUS:
		changes_watch_settle(); /* the changes made before asking are in the answer */
		reply_status(i);
		return;
	case PROTO_KIND_STOP:
		c->waiting = 1;
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
			conn_reply(i, PROTO_MSG_ERROR, "the server is stopping; start it again");
			return;
		}
		stale = changes_run_waits(c);
		new_seed = variant_wants_new_seed(&c->dec.req);
		if (new_seed < 0) {
			conn_reply(i, PROTO_MSG_ERROR,
				   "PYTEST_ZYGOTE_HASH_SEED must be per-run or generation");
			return;
		}
		if (gen_serving() && !stale && route_elsewhere(i))
			return;
		if (new_seed && gen_serving() && !stale && gen_serving()->seed_used) {
			/* Every run of this kind gets a generation of its own, so a
			 * hash seed of its own, as a cold run would. */
			if (!c->noticed) {
				const char *t = "waiting for a zygote with a new hash seed "
						"(PYTEST_ZYGOTE_HASH_SEED=per-run)";
				peer_send_text(c->peer, PROTO_MSG_NOTICE, t);
				c->noticed = 1;
			}
			c->waiting = 1;
			if (s.next < 0)
				gen_spawn(1);
			return;
		}
		/* fall through */
	case PROTO_KIND_WAIT:
		if (gen_serving() && !stale) {
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
					gen_spawn(1);
			} else {
				reply_status(i);
			}
			return;
		}
		if (stale) {
			/* Say why the run waits; the client prints it on stderr. */
			char text[2000];
			changes_wait_reason(text, sizeof(text));
			peer_send_text(c->peer, PROTO_MSG_NOTICE, text);
		}
		c->waiting = 1;
		return;
	}
}

/* Start queued runs, oldest first, while there is room under max_runs. */
void
conn_dispatch_queue(void)
{
	while (s.queued > 0 && gen_serving() && !s.stopping &&
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
void
conn_serve_waiting(void)
{
	for (int i = s.nconns - 1; i >= 0; i--) {
		struct conn *c = s.conns[i];
		if (!c->waiting || c->queued_ms || c->dec.req.kind == PROTO_KIND_STOP)
			continue;
		c->waiting = 0;
		request_complete(i);
	}
	conn_dispatch_queue();
}

/* A fresh generation started: tell the runs that wait for one what they wait for now. */
void
conn_notice_fresh(void)
{
	char text[2000];
	changes_wait_reason(text, sizeof(text));
	for (int i = 0; i < s.nconns; i++)
		if (s.conns[i]->waiting && s.conns[i]->fresh_after_ms && !s.conns[i]->queued_ms)
			peer_send_text(s.conns[i]->peer, PROTO_MSG_NOTICE, text);
}

/* Tell runs that have waited about a second for a free slot why they wait. */
long long
conn_notice_queued(long long now)
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
		snprintf(text, sizeof(text), "waiting: %d runs in progress (max_runs=%d)",
			 s.running, s.max_runs);
		peer_send_text(c->peer, PROTO_MSG_NOTICE, text);
		c->noticed = 1;
	}
	return wake;
}

/* One message from a parked client (see conn_waiting_readable). */
static int
waiting_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	int i = *(int *)arg;
	int32_t sig;
	if (f->type != PROTO_MSG_SIGNAL || proto_get_i32(f->payload, f->len, &sig) < 0) {
		conn_reply(i, PROTO_MSG_ERROR, "unexpected message while waiting");
		return PEER_STOP;
	}
	if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT || sig == SIGKILL) {
		peer_send_text(p, PROTO_MSG_NOTICE, "interrupted before the run started");
		peer_send_i32(p, PROTO_MSG_EXIT, 128 + sig);
		conn_close(i);
		return PEER_STOP;
	}
	return 0;
}

/*
 * A parked client sent something: Ctrl-C (or another terminating signal)
 * before its run started cancels it; other signals (a terminal resize) have
 * nobody to go to yet.
 */
void
conn_waiting_readable(int i)
{
	int r = peer_read(s.conns[i]->peer, waiting_frame, &i);
	if (r == 1 || r == PEER_STOP)
		return;
	if (r == -EMSGSIZE)
		conn_reply(i, PROTO_MSG_ERROR, "message too large");
	else
		conn_close(i);
}

/* One message of a request: feed the decoder, act once it is complete. */
static int
request_frame(struct peer *p, struct peer_frame *f, void *arg)
{
	int i = *(int *)arg;
	struct conn *c = s.conns[i];
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
		conn_reply(i, PROTO_MSG_ERROR, c->dec.error);
		return PEER_STOP;
	}
	if (r == 1) {
		/* What follows the request (an early SIGNAL) stays buffered. */
		request_complete(i);
		return PEER_STOP;
	}
	return 0;
}

/* Read what connection i sent and act on a complete request. */
void
conn_readable(int i)
{
	struct conn *c = s.conns[i];
	int r = peer_read(c->peer, request_frame, &i);
	if (r == 1 || r == PEER_STOP)
		return;
	if (r == -ETOOMANYREFS) {
		conn_reply(i, PROTO_MSG_ERROR,
			   "too many file descriptors in one message (a run sends 3)");
	} else if (r == -EMSGSIZE && c->dec.state == PROTO_ST_HELLO) {
		/* Nothing accepted yet: these bytes are no request of ours at all. */
		const char *t = "not a pytest-zygote request: its first bytes are no HELLO message "
				"(something else is writing to this socket)";
		log_info("closing a connection: %s", t);
		conn_reply(i, PROTO_MSG_ERROR, t);
	} else if (r == -EMSGSIZE) {
		conn_reply(i, PROTO_MSG_ERROR,
			   "a message larger than 1 MiB (the limit for one message; "
			   "arguments and environment each must fit in it)");
	} else if (r == 0 && (peer_read_partial(c->peer) || c->dec.state == PROTO_ST_BODY)) {
		/* A client that only shut down its side can still read why. */
		conn_reply(i, PROTO_MSG_ERROR,
			   peer_read_partial(c->peer)
				   ? "the request was cut off in the middle of a message"
				   : "the request ended before its DONE message");
	} else {
		conn_close(i);
	}
}

/* Accept every pending connection from our own uid. */
void
conn_accept_clients(void)
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
			struct peer *p = peer_create(fd);
			if (p) {
				peer_send_text(p, PROTO_MSG_ERROR, msg);
				release(p);
			}
			log_warn("refused a connection from uid %u", (unsigned)cred.uid);
			continue;
		}
		if (s.nconns >= MAX_CONNS) {
			struct peer *p = peer_create(fd);
			if (p) {
				peer_send_text(p, PROTO_MSG_ERROR,
					       "too many connections; try again shortly");
				release(p);
			}
			continue;
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
		s.conns[s.nconns++] = c;
	}
}
