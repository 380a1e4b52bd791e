/*
 * SCM_RIGHTS over AF_UNIX stream sockets, and a buffered message reader with
 * an fd queue (the shape of tmux's imsg). Helpers return -errno and never log.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "zygote/fdpass.h"

int
fdpass_send(int sock, const void *buf, size_t len, const int *fds, int nfds, size_t fds_offset)
{
	const char *p = buf;
	size_t done = 0;

	if (nfds < 0 || nfds > FDPASS_MAX_QUEUED || (nfds > 0 && fds_offset >= len))
		return -EINVAL;
	while (done < len) {
		struct msghdr msg = { 0 };
		struct iovec iov;
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_QUEUED)];
		} control;
		size_t chunk = len - done;
		int attach = nfds > 0 && done <= fds_offset && fds_offset < done + chunk;

		if (nfds > 0 && done < fds_offset && fds_offset < done + chunk) {
			/* Send the bytes before the fd-bearing one first. */
			chunk = fds_offset - done;
			attach = 0;
		}
		iov.iov_base = (void *)(p + done);
		iov.iov_len = chunk;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		if (attach) {
			memset(&control, 0, sizeof(control));
			msg.msg_control = control.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
			struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
		}
		ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/* A non-blocking socket with a full buffer: the peer is
				 * reading, give it a moment rather than fail the message. */
				struct pollfd room = { .fd = sock, .events = POLLOUT };
				int k = poll(&room, 1, FDPASS_SEND_WAIT_MS);
				if (k > 0 || (k < 0 && errno == EINTR))
					continue;
				return k == 0 ? -ETIMEDOUT : -errno;
			}
			return -errno;
		}
		if (attach)
			nfds = 0; /* the kernel took them with the first byte */
		done += (size_t)n;
	}
	return 0;
}

void
fdpass_reader_init(struct fdpass_reader *r)
{
	memset(r, 0, sizeof(*r));
}

void
fdpass_reader_finish(struct fdpass_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->len = r->consumed = r->cap = 0;
	for (int i = 0; i < r->nfds; i++)
		close(r->fds[i]);
	r->nfds = 0;
}

static void
queue_fds(struct fdpass_reader *r, struct msghdr *msg)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *in = (int *)CMSG_DATA(c);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, &in[i], sizeof(fd));
			if (r->nfds < FDPASS_MAX_QUEUED)
				r->fds[r->nfds++] = fd;
			else
				close(fd);
		}
	}
}

ssize_t
fdpass_reader_fill(struct fdpass_reader *r, int sock)
{
	/* Drop what was handed out, then make room. */
	if (r->consumed > 0) {
		memmove(r->buf, r->buf + r->consumed, r->len - r->consumed);
		r->len -= r->consumed;
		r->consumed = 0;
	}
	/* Grow while there is little room; a frame is never over 1 MiB, so
	 * 4 MiB of buffer is always enough when the caller drains messages. */
	if (r->cap - r->len < 65536 && r->cap < (4u << 20)) {
		size_t cap = r->cap ? r->cap * 2 : 65536;
		char *b = realloc(r->buf, cap);
		if (!b)
			return -ENOMEM;
		r->buf = b;
		r->cap = cap;
	}
	if (r->cap == r->len)
		return -EMSGSIZE;

	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_QUEUED)];
	} control;
	struct iovec iov = { .iov_base = r->buf + r->len, .iov_len = r->cap - r->len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = sizeof(control.buf),
	};
	ssize_t n;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	queue_fds(r, &msg);
	if (msg.msg_flags & MSG_CTRUNC)
		return -EMSGSIZE; /* too many fds at once: a protocol error */
	r->len += (size_t)n;
	return n;
}

int
fdpass_reader_next(struct fdpass_reader *r, struct proto_hdr *ret_hdr, const char **ret_payload)
{
	struct proto_hdr h;
	if (r->consumed == r->len)
		return 0; /* nothing buffered; r->buf may still be NULL */
	long n = proto_frame(r->buf + r->consumed, r->len - r->consumed, &h);
	if (n <= 0)
		return (int)n;
	*ret_hdr = h;
	*ret_payload = r->buf + r->consumed + sizeof(h);
	r->consumed += (size_t)n;
	return 1;
}

int
fdpass_reader_take_fds(struct fdpass_reader *r, int *fds, int n)
{
	int k = n < r->nfds ? n : r->nfds;
	memcpy(fds, r->fds, sizeof(int) * (size_t)k);
	memmove(r->fds, r->fds + k, sizeof(int) * (size_t)(r->nfds - k));
	r->nfds -= k;
	return k;
}

int
fdpass_read_msg(struct fdpass_reader *r, int sock, struct proto_hdr *ret_hdr,
		const char **ret_payload)
{
	for (;;) {
		int m = fdpass_reader_next(r, ret_hdr, ret_payload);
		if (m != 0)
			return m;
		ssize_t n = fdpass_reader_fill(r, sock);
		if (n <= 0)
			return (int)n;
	}
}

int
fdpass_send_msg(int sock, uint32_t type, const void *payload, size_t len)
{
	struct proto_buf b = { 0 };
	int r = proto_buf_put(&b, type, payload, len);
	if (r == 0)
		r = fdpass_send(sock, b.data, b.len, NULL, 0, 0);
	proto_buf_free(&b);
	return r;
}
