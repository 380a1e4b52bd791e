/*
 * Client connections: accept (own uid only), decode the request, answer,
 * park or queue it, hand a run to the serving generation. Sockets are
 * non-blocking: nothing here waits on a client, and a bad client costs its
 * own connection only.
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
#include "zygote/fdpass.h"
#include "zygote/log.h"
#include "zygote/proto.h"
#include "internal.h"

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

/* Close connection i and free it; the last connection takes its index. */
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

/* Send one message to connection i, then close it. */
void
conn_reply(int i, uint32_t type, const char *text)
{
	/* The socket is non-blocking; a reply is small and the buffer empty. */
	fdpass_send_msg(s.conns[i]->fd, type, text, strlen(text) + 1);
	conn_close(i);
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
	struct proto_buf b = { 0 };
	size_t fds_off;
	int32_t id = ++s.next_run;
	struct gen *g = gen_serving();
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
		conn_reply(i, PROTO_MSG_ERROR,
			   "the zygote is not answering; it is being restarted");
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
	int new_seed = 0;
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
		new_seed = variant_wants_new_seed(&c->dec.req);
		if (new_seed < 0) {
			conn_reply(i, PROTO_MSG_ERROR,
				   "PYTEST_ZYGOTE_HASH_SEED must be per-run or generation");
			return;
		}
		if (gen_serving() && !s.fresh_needed && route_elsewhere(i))
			return;
		if (new_seed && gen_serving() && !s.fresh_needed && gen_serving()->seed_used) {
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
				gen_spawn(1);
			return;
		}
		/* fall through */
	case PROTO_KIND_WAIT:
		if (gen_serving() && !(s.fresh_needed && c->dec.req.kind == PROTO_KIND_RUN)) {
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
		if (s.fresh_needed && c->dec.req.kind == PROTO_KIND_RUN) {
			/* Say why the run waits; the client prints it on stderr. */
			char text[700];
			snprintf(text, sizeof(text), "waiting for a fresh zygote: %s",
				 s.fresh_reason);
			fdpass_send_msg(c->fd, PROTO_MSG_NOTICE, text, strlen(text) + 1);
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
void
conn_waiting_readable(int i)
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

/* Read what connection i sent and act on a complete request. */
void
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
