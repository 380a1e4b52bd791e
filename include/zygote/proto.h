/*
 * The wire protocol between client, supervisor and zygote generations.
 * Pure encode/decode over byte buffers: no I/O, no logging. Every byte from a
 * client is untrusted; the decoder enforces the limits below and never reads
 * past the buffer it is given. fds ride along with PROTO_MSG_FDS (see fdpass.h).
 *
 * A message is an 8-byte header {uint32 type, uint32 len} in host byte order
 * (both ends are on one machine) followed by len bytes of payload.
 */
#ifndef ZYGOTE_PROTO_H
#define ZYGOTE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAGIC 0x47595a50u /* "PZYG" */

/*
 * Versions, in the HELLO. A run is sent as version 2: HELLO, then BUILD (the
 * client's build id), and a server of another build answers MISMATCH
 * instead of running it; a server from before version 2 answers an ERROR
 * that starts with PROTO_VERSION_ERROR. STATUS, STOP, WAIT and WATCH are sent as
 * version 1 (HELLO, DONE), which every server answers whatever its build:
 * stop is the way out of a mismatch, so never change what they send. Bump
 * PROTO_VERSION when a message of a run changes meaning; the build id
 * already tells every other difference apart.
 */
#define PROTO_VERSION 2u
#define PROTO_VERSION_STABLE 1u
#define PROTO_VERSION_ERROR "protocol version mismatch"
#define PROTO_BUILD_MAX 64 /* a build id, without its NUL */

#define PROTO_MAX_PAYLOAD (1u << 20) /* one message */
#define PROTO_MAX_REQUEST (4u << 20) /* a whole request (also bounds future messages) */
#define PROTO_MAX_STRINGS 65536u     /* argv or env entries */
#define PROTO_MAX_FDS 3u             /* stdin, stdout, stderr */

enum proto_msg {
	/* client -> supervisor: the request, in this order */
	PROTO_MSG_HELLO = 1, /* struct proto_hello */
	PROTO_MSG_ARGV = 2,  /* NUL-terminated strings, back to back */
	PROTO_MSG_CWD = 3,   /* one NUL-terminated path */
	PROTO_MSG_ENV = 4,   /* NUL-terminated "K=V" strings */
	PROTO_MSG_FDS = 5,   /* uint32 count; that many fds (the client's 0,1,2) ride along */
	PROTO_MSG_DONE = 6,  /* no payload; the request is complete */
	PROTO_MSG_BUILD = 7, /* the client's build id, NUL-terminated: right after a
			      * version-2 HELLO, there only */

	/* client -> zygote, after DONE, while a run is in progress */
	PROTO_MSG_SIGNAL = 20, /* int32 signal number to forward to the run */

	/* server -> client */
	PROTO_MSG_EXIT = 40,     /* int32 exit code; the run is over */
	PROTO_MSG_ERROR = 41,    /* text: a refusal, shown to the user; then close */
	PROTO_MSG_NOTICE = 42,   /* text for the client's stderr; more follows */
	PROTO_MSG_STATUS = 43,   /* text: key=value lines; then close */
	PROTO_MSG_REDIRECT = 44, /* text: "variant=ID\nreason=..\npython=..\n": the run needs a
				  * zygote warmed with its environment (the
				  * instance NAME~ID); then close */
	PROTO_MSG_MISMATCH = 45, /* text: "version=..\nbuild=..\nprotocol=N\n" of a server of
				  * another build, which refuses the run; then close */
	PROTO_MSG_CHANGES = 46,  /* text to a WATCH client: "files=N\n", then one
				  * "changed=PATH\n" per changed file (at most
				  * PROTO_CHANGES_MAX_PATHS, then "more=K\n"); the first,
				  * with no paths, says the watch is on. More follow. */

	/* supervisor <-> zygote generation (trusted, internal) */
	PROTO_MSG_Z_READY = 60,    /* text: key=value lines about the warm-up */
	PROTO_MSG_Z_RUN = 61,      /* int32 run id; the client connection rides along.
				 * The request follows as HELLO .. DONE. */
	PROTO_MSG_Z_DONE = 62,     /* int32 run id then int32 exit code */
	PROTO_MSG_Z_DRAIN = 63,    /* uint32 grace ms: finish runs, then exit */
	PROTO_MSG_Z_FILES = 65,    /* text: "X<TAB>dir" lines to watch outside the root */
	PROTO_MSG_Z_PROGRESS = 66, /* text: "phase=..\nmodules=N\n" while warming up */
	PROTO_MSG_Z_LEAN = 67,     /* int32 1: a new generation warms, hold no spare and
				    * nothing collected ahead; 0: it failed, go back */
	PROTO_MSG_Z_PREPARED = 68, /* int32 1: the practice run is over and the first
				    * spare forked (status: preparing=0) */
	PROTO_MSG_Z_GO = 69,       /* int32 1: the generation this one replaced has exited
				    * (or has runs to finish): start the practice run */
};

enum proto_kind {
	PROTO_KIND_RUN = 1,    /* run pytest with ARGV in CWD with ENV and FDS */
	PROTO_KIND_STATUS = 2, /* reply with PROTO_MSG_STATUS */
	PROTO_KIND_STOP = 3,   /* drain and exit; reply STATUS when done */
	PROTO_KIND_WAIT = 4,   /* reply STATUS once a generation is warm */
	PROTO_KIND_WATCH = 5,  /* stay connected: a CHANGES after each settled batch of
				* changes (pytest-zygote watch) */
	PROTO_KIND_LAST = PROTO_KIND_WATCH,
};

/* The paths one CHANGES message names; the rest are counted in "more=". */
#define PROTO_CHANGES_MAX_PATHS 64

struct proto_hdr {
	uint32_t type;
	uint32_t len;
};

struct proto_hello {
	uint32_t magic;
	uint32_t version;
	uint32_t kind;  /* enum proto_kind */
	uint32_t flags; /* PROTO_FLAG_* */
};

#define PROTO_FLAG_WAIT_FRESH 1u /* reserved */
/* A RUN that is a pytest-xdist worker of a run in progress (`pytest-zygote
 * worker`): its argv is Python's (-u -c CODE), it is never queued under
 * max_runs (its run holds a slot) and never gets a generation of its own. */
#define PROTO_FLAG_WORKER 2u
/* RUN: the client's fd N (0, 1 or 2) was closed; FDS carries /dev/null in its
 * place and the test child closes N, as a process started that way has it. */
#define PROTO_FLAG_CLOSED_FD0 (1u << 8)

/* A decoded request. Strings point into owned storage freed by proto_request_free. */
struct proto_request {
	uint32_t kind;
	uint32_t flags;
	char **argv; /* NULL-terminated */
	size_t argc;
	char *cwd;
	char **env; /* NULL-terminated */
	size_t envc;
	int fds[PROTO_MAX_FDS]; /* -1 when absent */
	int nfds;
};

/* Where a request decoder is. Each message is accepted only in its state. */
enum proto_state {
	PROTO_ST_HELLO = 0, /* expecting HELLO */
	PROTO_ST_BODY,      /* ARGV/CWD/ENV/FDS in that order, each at most once */
	PROTO_ST_DONE,      /* request complete */
	PROTO_ST_ERROR,     /* a protocol error was seen; close the connection */
};

struct proto_decoder {
	enum proto_state state;
	unsigned seen; /* bitmask of body messages already seen */
	int versioned; /* the HELLO was version 2: BUILD comes first */
	size_t total;  /* payload bytes accepted so far */
	struct proto_request req;
	int mismatch; /* the error is a run of another build: error holds MISMATCH's text */
	char error[160];
};

void proto_decoder_init(struct proto_decoder *d);
/* Frees what the decoder owns (closes fds not stolen). Accepts a zeroed decoder. */
void proto_decoder_finish(struct proto_decoder *d);

/*
 * Feed one message of a request. fds are the descriptors that arrived with
 * it (ownership passes to the decoder, which closes them on error). Returns 0
 * when accepted, 1 when the request is now complete (state DONE), or -EPROTO
 * with d->error set (state ERROR; the version case says which side to
 * upgrade). A run whose BUILD is not this build's sets d->mismatch: reply
 * PROTO_MSG_MISMATCH with d->error, not PROTO_MSG_ERROR.
 */
int proto_decoder_feed(struct proto_decoder *d, uint32_t type, const void *payload, uint32_t len,
		       int *fds, int nfds);

/*
 * Parse the header at the start of buf (avail bytes). Returns the total
 * message size (header + payload) when a whole message is present, 0 when more
 * bytes are needed, or -EMSGSIZE when the header announces an oversized payload.
 */
long proto_frame(const void *buf, size_t avail, struct proto_hdr *ret_hdr);

/* Append one message to a growable buffer. Returns 0 or -ENOMEM, -EMSGSIZE
 * (payload over PROTO_MAX_PAYLOAD) or -E2BIG (too many strings). */
struct proto_buf {
	char *data;
	size_t len;
	size_t cap;
};
void proto_buf_free(struct proto_buf *b);
int proto_buf_put(struct proto_buf *b, uint32_t type, const void *payload, size_t len);
int proto_buf_put_strings(struct proto_buf *b, uint32_t type, char *const *strv);
int proto_buf_put_i32(struct proto_buf *b, uint32_t type, int32_t v);

/*
 * Encode a whole request (HELLO .. DONE) into b: a run as version 2 with this
 * build's id, everything else as version 1. The FDS message is encoded
 * with req->nfds as its count; the caller sends the fds with the byte at
 * *ret_fds_offset (the start of the FDS message).
 */
int proto_request_encode(struct proto_buf *b, const struct proto_request *req,
			 size_t *ret_fds_offset);

/*
 * Look up key in STATUS / Z_READY text ("key=value" lines). Copies the value
 * (truncated to size) into buf and returns 1, or sets buf to "" and returns 0.
 */
int proto_kv_get(const char *text, const char *key, char *buf, size_t size);

/*
 * How many descriptors ride along with a message (the table in
 * docs/design.md): FDS the count it announces (none when that is over
 * PROTO_MAX_FDS: the decoder refuses it), Z_RUN one (the client connection),
 * every other message none. The spare's Z_RUN carries two (spare.c).
 */
int proto_msg_fds(uint32_t type, const void *payload, uint32_t len);

/* Decode one int32 payload. Returns 0 or -EPROTO. */
int proto_get_i32(const void *payload, uint32_t len, int32_t *ret);

#endif
