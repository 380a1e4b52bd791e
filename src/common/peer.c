/*
 * One peer: frames with their descriptors in (fdpass.c's reader), whole
 * frames with theirs out through a bounded queue (peer.h). Never logs, never
 * blocks on a non-blocking socket, returns -errno. The queue holds
 * duplicates of the descriptors a frame carries, so a caller may close its
 * own at once; they are closed once sent, or when the frame is dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "zygote/fdpass.h"
#include "zygote/peer.h"
#include "zygote/proto.h"

/* At most this many queued items go out in one sendmsg. */
#define PEER_IOV 64

/* Whole frames (one or more), with descriptors on their first byte. */
struct peer_out {
	struct peer_out *next;
	size_t len;
	size_t sent;
	int nfds; /* duplicates; 0 once they went with the first byte */
	int fds[PEER_MAX_FDS];
	char data[];
};

struct peer {
	int fd;
	struct fdpass_reader rd;
	peer_fds_fn *fds_of;
	struct peer_out *head;
	struct peer_out **tail;
	size_t queued; /* bytes not yet written */
	int queued_fds;
	size_t max_bytes;
	int max_fds;
	int error; /* sticky: -ENOBUFS or the socket's error */
};

struct peer *
peer_create(int fd)
{
	struct peer *p = calloc(1, sizeof(*p));
	if (!p) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	p->fd = fd;
	fdpass_reader_init(&p->rd);
	p->fds_of = proto_msg_fds;
	p->tail = &p->head;
	p->max_bytes = PEER_MAX_QUEUED;
	p->max_fds = PEER_MAX_QUEUED_FDS;
	return p;
}

static void
out_free(struct peer_out *o)
{
	for (int i = 0; i < o->nfds; i++)
		close(o->fds[i]);
	free(o);
}

static void
out_free_list(struct peer_out *o)
{
	while (o) {
		struct peer_out *next = o->next;
		out_free(o);
		o = next;
	}
}

void
peer_destroy(struct peer *p)
{
	if (!p)
		return;
	out_free_list(p->head);
	fdpass_reader_finish(&p->rd);
	if (p->fd >= 0)
		close(p->fd);
	free(p);
}

int
peer_fd(const struct peer *p)
{
	return p->fd;
}

void
peer_set_limit(struct peer *p, size_t max_bytes, int max_fds)
{
	p->max_bytes = max_bytes;
	p->max_fds = max_fds;
}

void
peer_set_fds_rule(struct peer *p, peer_fds_fn *fn)
{
	p->fds_of = fn ? fn : proto_msg_fds;
}

int
peer_wants_write(const struct peer *p)
{
	return p->head != NULL && p->error == 0;
}

size_t
peer_queued(const struct peer *p)
{
	return p->queued;
}

/* The sent bytes leave the head of the queue. */
static void
advance(struct peer *p, size_t n)
{
	p->queued -= n;
	while (n > 0) {
		struct peer_out *o = p->head;
		size_t left = o->len - o->sent;
		if (n < left) {
			o->sent += n;
			return;
		}
		n -= left;
		p->head = o->next;
		if (!p->head)
			p->tail = &p->head;
		out_free(o);
	}
}

int
peer_flush(struct peer *p)
{
	if (p->error)
		return p->error;
	while (p->head) {
		struct iovec iov[PEER_IOV];
		int n = 0;
		/* Items after the head go along unless they carry descriptors:
		 * those must be on the first byte of a sendmsg of their own. */
		for (struct peer_out *o = p->head; o && n < PEER_IOV; o = o->next) {
			if (o != p->head && o->nfds > 0)
				break;
			iov[n].iov_base = o->data + o->sent;
			iov[n].iov_len = o->len - o->sent;
			n++;
		}
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int) * PEER_MAX_FDS)];
		} control;
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		struct peer_out *h = p->head;
		if (h->nfds > 0) {
			memset(&control, 0, sizeof(control));
			msg.msg_control = control.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)h->nfds);
			struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)h->nfds);
			memcpy(CMSG_DATA(c), h->fds, sizeof(int) * (size_t)h->nfds);
		}
		ssize_t w = sendmsg(p->fd, &msg, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0; /* the rest waits for POLLOUT */
			p->error = -errno;
			return p->error;
		}
		if (h->nfds > 0 && w > 0) {
			/* The kernel took the descriptors with the first byte. */
			for (int i = 0; i < h->nfds; i++)
				close(h->fds[i]);
			p->queued_fds -= h->nfds;
			h->nfds = 0;
		}
		advance(p, (size_t)w);
	}
	return 0;
}

/*
 * Append buf (whole frames) as items cut at cuts[0..n) (cuts[0] == 0, rising),
 * item k carrying nfds[k] duplicates of fds[k]; all or nothing. Then write.
 */
static int
enqueue(struct peer *p, const char *buf, size_t len, const size_t *cuts, const int *const *fds,
	const int *nfds, int n)
{
	if (p->error)
		return p->error;
	int total_fds = 0;
	for (int k = 0; k < n; k++) {
		if (nfds[k] < 0 || nfds[k] > PEER_MAX_FDS || (nfds[k] > 0 && !fds[k]))
			return -EINVAL;
		total_fds += nfds[k];
	}
	/* The bound: a peer that already has frames waiting, and would have
	 * more than it allows, is not reading. An idle peer takes any send. */
	if (p->head && (p->queued + len > p->max_bytes || p->queued_fds + total_fds > p->max_fds)) {
		p->error = -ENOBUFS;
		return p->error;
	}
	struct peer_out *list = NULL, **lt = &list;
	int r = 0;
	for (int k = 0; k < n && r == 0; k++) {
		size_t end = k + 1 < n ? cuts[k + 1] : len;
		if (end == cuts[k]) {
			if (nfds[k] > 0)
				r = -EINVAL; /* descriptors need a byte to ride on */
			continue;
		}
		struct peer_out *o = malloc(sizeof(*o) + (end - cuts[k]));
		if (!o) {
			r = -ENOMEM;
			break;
		}
		o->next = NULL;
		o->len = end - cuts[k];
		o->sent = 0;
		o->nfds = 0;
		memcpy(o->data, buf + cuts[k], o->len);
		*lt = o;
		lt = &o->next;
		for (int i = 0; i < nfds[k]; i++) {
			int d = fcntl(fds[k][i], F_DUPFD_CLOEXEC, 3);
			if (d < 0) {
				r = -errno;
				break;
			}
			o->fds[o->nfds++] = d;
		}
	}
	if (r < 0) {
		out_free_list(list);
		return r;
	}
	*p->tail = list;
	if (list)
		p->tail = lt;
	p->queued += len;
	p->queued_fds += total_fds;
	return peer_flush(p);
}

int
peer_send(struct peer *p, uint32_t type, const void *payload, size_t len, const int *fds, int nfds)
{
	struct proto_buf b = { 0 };
	int r = proto_buf_put(&b, type, payload, len);
	if (r == 0) {
		size_t cut = 0;
		r = enqueue(p, b.data, b.len, &cut, &fds, &nfds, 1);
	}
	proto_buf_free(&b);
	return r;
}

int
peer_send_text(struct peer *p, uint32_t type, const char *text)
{
	return peer_send(p, type, text, strlen(text) + 1, NULL, 0);
}

int
peer_send_i32(struct peer *p, uint32_t type, int32_t v)
{
	return peer_send(p, type, &v, sizeof(v), NULL, 0);
}

int
peer_send_request(struct peer *p, int32_t run_id, const int *run_fds, int nrun_fds,
		  const struct proto_request *req)
{
	struct proto_buf b = { 0 };
	size_t cuts[3];
	const int *fds[3];
	int nfds[3], n = 0, r = 0;
	if (run_id >= 0) {
		r = proto_buf_put_i32(&b, PROTO_MSG_Z_RUN, run_id);
		cuts[n] = 0;
		fds[n] = run_fds;
		nfds[n++] = nrun_fds;
	}
	size_t start = b.len, fds_off = (size_t)-1;
	if (r == 0)
		r = proto_request_encode(&b, req, &fds_off);
	if (r == 0) {
		cuts[n] = start;
		fds[n] = NULL;
		nfds[n++] = 0;
		if (fds_off != (size_t)-1) {
			cuts[n] = fds_off;
			fds[n] = req->fds;
			nfds[n++] = req->nfds;
		}
		r = enqueue(p, b.data, b.len, cuts, fds, nfds, n);
	}
	proto_buf_free(&b);
	return r;
}

int
peer_read(struct peer *p, peer_handler_fn *fn, void *arg)
{
	ssize_t n = fdpass_reader_fill(&p->rd, p->fd);
	if (n == -EMSGSIZE)
		/* MSG_CTRUNC (a full buffer cannot happen: frames are at most
		 * 1 MiB and the buffer grows to 4 MiB while they are drained). */
		return -ETOOMANYREFS;
	if (n < 0 && n != -EAGAIN)
		return (int)n;
	for (;;) {
		struct proto_hdr h;
		const char *payload;
		int m = fdpass_reader_next(&p->rd, &h, &payload);
		if (m < 0)
			return m;
		if (m == 0)
			break;
		struct peer_frame f = { .type = h.type, .len = h.len, .payload = payload };
		int want = p->fds_of(h.type, payload, h.len);
		if (want > PEER_MAX_FDS)
			want = PEER_MAX_FDS;
		if (want > 0)
			f.nfds = fdpass_reader_take_fds(&p->rd, f.fds, want);
		int r = fn(p, &f, arg);
		for (int i = 0; i < f.nfds; i++)
			if (f.fds[i] >= 0)
				close(f.fds[i]);
		if (r != 0)
			return PEER_STOP;
	}
	return n == 0 ? 0 : 1;
}

int
peer_error(const struct peer *p)
{
	return p->error;
}

int
peer_read_partial(const struct peer *p)
{
	return p->rd.len > p->rd.consumed;
}

int
peer_unclaimed_fds(const struct peer *p)
{
	return p->rd.nfds;
}
