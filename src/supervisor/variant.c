/*
 * Variants: a run whose interpreter settings or import-time variables differ
 * from the serving generation's goes to a zygote (server) of its own; this
 * decides and remembers which, and stops them. Must not answer clients
 * (conn.c does), nor start or stop generations.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "zygote/common.h"
#include "zygote/log.h"
#include "zygote/paths.h"
#include "zygote/proto.h"
#include "internal.h"

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
	"PYTHONHASHSEED",
	"PYTHONDEVMODE",
	"PYTHONOPTIMIZE",
	"PYTHONMALLOC",
	"PYTHONUTF8",
	"PYTHONINTMAXSTRDIGITS",
	"PYTHONWARNDEFAULTENCODING",
	"PYTHONTRACEMALLOC",
	"PYTHONNODEBUGRANGES",
	"PYTHONPROFILEIMPORTTIME",
	"PYTHONNOUSERSITE",
	"PYTHONUSERBASE",
	"PYTHONHOME",
	"PYTHONPLATLIBDIR",
	"PYTHONSAFEPATH",
	"PYTHONPYCACHEPREFIX",
	"PYTHONCOERCECLOCALE",
	"PYTHONVERBOSE",
	"PYTHONDEBUG",
	"PYTHONMALLOCSTATS",
	"PYTHONIOENCODING",
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

/* A value's digest as the zygote writes it in E lines (_zy/inputs.py, _digest). */
static void
env_digest(const char *v, char *buf, size_t size)
{
	if (!v)
		snprintf(buf, size, "-");
	else
		snprintf(buf, size, "%016llx", fnv1a(FNV1A_BASIS, v, strlen(v)));
}

/* Add "name (what)" to the list in why, or ", ..." once it is full. */
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
int
variant_env_differs(const struct gen *g, const struct proto_request *r, char *id, size_t idsize,
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
		const char *tab =
			l > 2 && p[0] == 'E' && p[1] == '\t' ? memchr(p + 2, '\t', l - 2) : NULL;
		if (tab) {
			char name[256], want[24], have[24];
			snprintf(name, sizeof(name), "%.*s", (int)(tab - p - 2), p + 2);
			snprintf(want, sizeof(want), "%.*s", (int)(p + l - tab - 1), tab + 1);
			const char *theirs = run_env(r, name);
			env_digest(theirs, have, sizeof(have));
			h = fnv1a(h, name, strlen(name) + 1);
			h = theirs ? fnv1a(h, theirs, strlen(theirs) + 1) : fnv1a(h, "\x01", 1);
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
void
variant_stop(const char *id)
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
	if (proto_request_encode(&b, &req, NULL) == 0 &&
	    write(fd, b.data, b.len) == (ssize_t)b.len && s.nvariant_fds < MAX_VARIANTS) {
		s.variant_fds[s.nvariant_fds++] = fd;
		log_info("stopping the zygote for another environment (instance %s)", inst);
	} else {
		close(fd);
	}
	proto_buf_free(&b);
}

/* A run goes to variant id: remember it, least recently used out. */
void
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
		variant_stop(s.variants[lru].id);
		slot = lru;
	} else {
		s.nvariants++;
	}
	snprintf(s.variants[slot].id, sizeof(s.variants[slot].id), "%s", id);
	s.variants[slot].used_ms = now_ms();
}

/* PYTEST_ZYGOTE_HASH_SEED=per-run in a run's environment, without a fixed
 * PYTHONHASHSEED: it needs a generation no run was forked from. -1: a bad value. */
int
variant_wants_new_seed(const struct proto_request *r)
{
	const char *v = req_env(r, "PYTEST_ZYGOTE_HASH_SEED");
	if (!v || !*v || strcmp(v, "generation") == 0)
		return 0;
	if (strcmp(v, "per-run") != 0)
		return -1;
	return !interp_value("PYTHONHASHSEED", req_env(r, "PYTHONHASHSEED"));
}
