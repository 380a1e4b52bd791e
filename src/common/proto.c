/*
 * Encoding and decoding of protocol messages over plain byte buffers.
 * Pure functions: no I/O, no logging, no global state, so they can be unit
 * tested and fuzzed. The decoder is a state machine: a message is accepted only
 * in the state where it belongs; anything else is a protocol error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-id.h"
#include "config.h"
#include "zygote/proto.h"

#define SEEN_ARGV 1u
#define SEEN_CWD 2u
#define SEEN_ENV 4u
#define SEEN_FDS 8u
#define SEEN_BUILD 16u

void
proto_decoder_init(struct proto_decoder *d)
{
	memset(d, 0, sizeof(*d));
	d->state = PROTO_ST_HELLO;
	for (unsigned i = 0; i < PROTO_MAX_FDS; i++)
		d->req.fds[i] = -1;
}

static void
strv_free(char **v)
{
	if (!v)
		return;
	/* All strings of one vector live in one block that starts at v[0]. */
	free(v[0] ? v[0] : NULL);
	free(v);
}

void
proto_decoder_finish(struct proto_decoder *d)
{
	strv_free(d->req.argv);
	strv_free(d->req.env);
	free(d->req.cwd);
	for (unsigned i = 0; i < PROTO_MAX_FDS; i++) {
		if (d->req.fds[i] >= 0)
			close(d->req.fds[i]);
		d->req.fds[i] = -1;
	}
	d->req.argv = d->req.env = NULL;
	d->req.cwd = NULL;
}

static int
fail(struct proto_decoder *d, int *fds, int nfds, const char *msg)
{
	for (int i = 0; i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	snprintf(d->error, sizeof(d->error), "%s", msg);
	d->state = PROTO_ST_ERROR;
	return -EPROTO;
}

/*
 * Split a payload of back-to-back NUL-terminated strings into a vector. The
 * payload must end with a NUL; empty payload means an empty vector.
 */
static int
split_strings(const char *p, uint32_t len, char ***ret_v, size_t *ret_n)
{
	size_t n = 0;
	if (len > 0 && p[len - 1] != '\0')
		return -EPROTO;
	for (uint32_t i = 0; i < len; i++)
		if (p[i] == '\0')
			n++;
	if (n > PROTO_MAX_STRINGS)
		return -E2BIG;
	char **v = calloc(n + 1, sizeof(char *));
	if (!v)
		return -ENOMEM;
	if (n > 0) {
		char *block = malloc(len);
		if (!block) {
			free(v);
			return -ENOMEM;
		}
		memcpy(block, p, len);
		size_t k = 0;
		for (char *s = block; k < n; s += strlen(s) + 1)
			v[k++] = s;
	}
	*ret_v = v;
	*ret_n = n;
	return 0;
}

int
proto_decoder_feed(struct proto_decoder *d, uint32_t type, const void *payload, uint32_t len,
		   int *fds, int nfds)
{
	const char *p = payload;

	if (d->state == PROTO_ST_ERROR || d->state == PROTO_ST_DONE)
		return fail(d, fds, nfds, "message received after the request ended");
	if (len > PROTO_MAX_PAYLOAD)
		return fail(d, fds, nfds, "a message too large");
	d->total += len;
	if (d->total > PROTO_MAX_REQUEST)
		return fail(d, fds, nfds, "request too large (over 4 MiB)");
	if (nfds > 0 && type != PROTO_MSG_FDS)
		return fail(d, fds, nfds, "file descriptors sent with a non-FDS message");

	if (d->state == PROTO_ST_HELLO) {
		struct proto_hello h;
		if (type != PROTO_MSG_HELLO || len != sizeof(h))
			return fail(d, fds, nfds, "expected a HELLO message first");
		memcpy(&h, p, sizeof(h));
		if (h.magic != PROTO_MAGIC)
			return fail(d, fds, nfds, "not a pytest-zygote client (bad magic)");
		if (h.version != PROTO_VERSION && h.version != PROTO_VERSION_STABLE) {
			snprintf(d->error, sizeof(d->error),
				 PROTO_VERSION_ERROR
				 ": client speaks %u, server speaks %u; "
				 "restart the server with 'pytest-zygote restart' so both are "
				 "the same build",
				 h.version, PROTO_VERSION);
			d->state = PROTO_ST_ERROR;
			return -EPROTO;
		}
		if (h.kind < PROTO_KIND_RUN || h.kind > PROTO_KIND_LAST)
			return fail(d, fds, nfds, "unknown request kind");
		d->req.kind = h.kind;
		d->req.flags = h.flags;
		d->versioned = h.version == PROTO_VERSION;
		d->state = PROTO_ST_BODY;
		return 0;
	}

	/* PROTO_ST_BODY */
	int r;
	if (d->versioned && !(d->seen & SEEN_BUILD) && type != PROTO_MSG_BUILD)
		return fail(d, fds, nfds, "expected BUILD after a version 2 HELLO");
	switch (type) {
	case PROTO_MSG_BUILD:
		if (!d->versioned || (d->seen & SEEN_BUILD))
			return fail(d, fds, nfds, "BUILD out of order");
		if (len < 2 || len > PROTO_BUILD_MAX + 1 || p[len - 1] != '\0' ||
		    strlen(p) != len - 1)
			return fail(d, fds, nfds, "malformed BUILD (need one build id)");
		for (uint32_t i = 0; i + 1 < len; i++)
			if (p[i] <= ' ' || p[i] > '~')
				return fail(d, fds, nfds, "malformed BUILD (need one build id)");
		d->seen |= SEEN_BUILD;
		/* Only a run depends on both ends being one build; a status or a
		 * stop is answered whatever the client's build. */
		if (d->req.kind == PROTO_KIND_RUN && strcmp(p, PYZ_BUILD_ID) != 0) {
			snprintf(d->error, sizeof(d->error), "version=%s\nbuild=%s\nprotocol=%u\n",
				 PYZ_VERSION, PYZ_BUILD_ID, PROTO_VERSION);
			d->mismatch = 1;
			d->state = PROTO_ST_ERROR;
			return -EPROTO;
		}
		return 0;
	case PROTO_MSG_ARGV:
		if (d->seen & (SEEN_ARGV | SEEN_CWD | SEEN_ENV | SEEN_FDS))
			return fail(d, fds, nfds, "ARGV out of order");
		r = split_strings(p, len, &d->req.argv, &d->req.argc);
		if (r < 0)
			return fail(
				d, fds, nfds,
				r == -E2BIG ? "ARGV has too many arguments (over 65536)"
				: r == -ENOMEM
					? "out of memory"
					: "malformed ARGV (each argument must end with a NUL byte)");
		d->seen |= SEEN_ARGV;
		return 0;
	case PROTO_MSG_CWD:
		if (d->seen & (SEEN_CWD | SEEN_ENV | SEEN_FDS))
			return fail(d, fds, nfds, "CWD out of order");
		if (len < 2 || p[len - 1] != '\0' || memchr(p, '\0', len) != p + len - 1 ||
		    p[0] != '/')
			return fail(d, fds, nfds, "malformed CWD (need one absolute path)");
		d->req.cwd = strdup(p);
		if (!d->req.cwd)
			return fail(d, fds, nfds, "out of memory");
		d->seen |= SEEN_CWD;
		return 0;
	case PROTO_MSG_ENV:
		if (d->seen & (SEEN_ENV | SEEN_FDS))
			return fail(d, fds, nfds, "ENV out of order");
		r = split_strings(p, len, &d->req.env, &d->req.envc);
		if (r < 0)
			return fail(
				d, fds, nfds,
				r == -E2BIG ? "ENV has too many variables (over 65536)"
				: r == -ENOMEM
					? "out of memory"
					: "malformed ENV (each entry must end with a NUL byte)");
		for (size_t i = 0; i < d->req.envc; i++) {
			const char *eq = strchr(d->req.env[i], '=');
			if (!eq || eq == d->req.env[i])
				return fail(d, fds, nfds, "malformed ENV entry (need K=V)");
		}
		d->seen |= SEEN_ENV;
		return 0;
	case PROTO_MSG_FDS: {
		uint32_t count;
		if (d->seen & SEEN_FDS)
			return fail(d, fds, nfds, "FDS out of order");
		if (len != sizeof(count))
			return fail(d, fds, nfds, "malformed FDS");
		memcpy(&count, p, sizeof(count));
		if (count > PROTO_MAX_FDS || (int)count != nfds)
			return fail(d, fds, nfds, "FDS count does not match the descriptors sent");
		for (int i = 0; i < nfds; i++)
			d->req.fds[i] = fds[i];
		d->req.nfds = nfds;
		d->seen |= SEEN_FDS;
		return 0;
	}
	case PROTO_MSG_DONE:
		if (len != 0)
			return fail(d, fds, nfds, "malformed DONE");
		if (d->req.kind == PROTO_KIND_RUN &&
		    (d->seen & (SEEN_ARGV | SEEN_CWD | SEEN_ENV | SEEN_FDS)) !=
			    (SEEN_ARGV | SEEN_CWD | SEEN_ENV | SEEN_FDS))
			return fail(d, fds, nfds, "incomplete run request");
		if (d->req.kind == PROTO_KIND_RUN && d->req.nfds != (int)PROTO_MAX_FDS)
			return fail(d, fds, nfds, "a run needs three descriptors");
		d->state = PROTO_ST_DONE;
		return 1;
	default:
		return fail(d, fds, nfds, "unexpected message in a request");
	}
}

int
proto_msg_fds(uint32_t type, const void *payload, uint32_t len)
{
	uint32_t count;
	switch (type) {
	case PROTO_MSG_FDS:
		if (len != sizeof(count))
			return 0;
		memcpy(&count, payload, sizeof(count));
		return count <= PROTO_MAX_FDS ? (int)count : 0;
	case PROTO_MSG_Z_RUN:
		return 1;
	default:
		return 0;
	}
}

long
proto_frame(const void *buf, size_t avail, struct proto_hdr *ret_hdr)
{
	struct proto_hdr h;
	if (avail < sizeof(h))
		return 0;
	memcpy(&h, buf, sizeof(h));
	if (h.len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (avail < sizeof(h) + h.len)
		return 0;
	*ret_hdr = h;
	return (long)(sizeof(h) + h.len);
}

void
proto_buf_free(struct proto_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int
buf_reserve(struct proto_buf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra)
		cap *= 2;
	char *d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

int
proto_buf_put(struct proto_buf *b, uint32_t type, const void *payload, size_t len)
{
	if (len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	struct proto_hdr h = { .type = type, .len = (uint32_t)len };
	if (buf_reserve(b, sizeof(h) + len) < 0)
		return -ENOMEM;
	memcpy(b->data + b->len, &h, sizeof(h));
	if (len)
		memcpy(b->data + b->len + sizeof(h), payload, len);
	b->len += sizeof(h) + len;
	return 0;
}

int
proto_buf_put_strings(struct proto_buf *b, uint32_t type, char *const *strv)
{
	size_t len = 0, n = 0;
	for (; strv && strv[n]; n++)
		len += strlen(strv[n]) + 1;
	if (len > PROTO_MAX_PAYLOAD || n > PROTO_MAX_STRINGS)
		return -E2BIG;
	struct proto_hdr h = { .type = type, .len = (uint32_t)len };
	if (buf_reserve(b, sizeof(h) + len) < 0)
		return -ENOMEM;
	memcpy(b->data + b->len, &h, sizeof(h));
	char *w = b->data + b->len + sizeof(h);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(strv[i]) + 1;
		memcpy(w, strv[i], l);
		w += l;
	}
	b->len += sizeof(h) + len;
	return 0;
}

int
proto_buf_put_i32(struct proto_buf *b, uint32_t type, int32_t v)
{
	return proto_buf_put(b, type, &v, sizeof(v));
}

int
proto_get_i32(const void *payload, uint32_t len, int32_t *ret)
{
	if (len != sizeof(int32_t))
		return -EPROTO;
	memcpy(ret, payload, sizeof(int32_t));
	return 0;
}

int
proto_request_encode(struct proto_buf *b, const struct proto_request *req, size_t *ret_fds_offset)
{
	int versioned = req->kind == PROTO_KIND_RUN;
	struct proto_hello h = {
		.magic = PROTO_MAGIC,
		.version = versioned ? PROTO_VERSION : PROTO_VERSION_STABLE,
		.kind = req->kind,
		.flags = req->flags,
	};
	int r = proto_buf_put(b, PROTO_MSG_HELLO, &h, sizeof(h));
	if (r == 0 && versioned)
		r = proto_buf_put(b, PROTO_MSG_BUILD, PYZ_BUILD_ID, sizeof(PYZ_BUILD_ID));
	if (r < 0)
		return r;
	if (req->kind == PROTO_KIND_RUN) {
		uint32_t count = (uint32_t)req->nfds;
		if ((r = proto_buf_put_strings(b, PROTO_MSG_ARGV, req->argv)) < 0)
			return r;
		if ((r = proto_buf_put(b, PROTO_MSG_CWD, req->cwd, strlen(req->cwd) + 1)) < 0)
			return r;
		if ((r = proto_buf_put_strings(b, PROTO_MSG_ENV, req->env)) < 0)
			return r;
		size_t off = b->len;
		if ((r = proto_buf_put(b, PROTO_MSG_FDS, &count, sizeof(count))) < 0)
			return r;
		if (ret_fds_offset)
			*ret_fds_offset = off;
	} else if (ret_fds_offset) {
		*ret_fds_offset = (size_t)-1;
	}
	return proto_buf_put(b, PROTO_MSG_DONE, NULL, 0);
}

int
proto_kv_get(const char *text, const char *key, char *buf, size_t size)
{
	size_t kl = strlen(key);
	for (const char *p = text; p && *p;) {
		if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t l = strcspn(p + kl + 1, "\n");
			if (l >= size)
				l = size - 1;
			memcpy(buf, p + kl + 1, l);
			buf[l] = '\0';
			return 1;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	if (size)
		buf[0] = '\0';
	return 0;
}
