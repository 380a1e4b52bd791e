/*
 * Globs for the watcher: paths split into components, "**" across them,
 * whether a directory could hold a match, pytest-hot-reloading's whole-path
 * globs. Knows nothing of struct watch and never logs; only compiling a
 * whole-path glob looks outside its arguments ($HOME, stat, realpath).
 */
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "zygote/common.h"
#include "zygote/watch.h"
#include "watch-internal.h"

/* Split a copy of s into buf at '/', dropping empty and "." components;
 * the number of components, or -1 if it does not fit. */
int
glob_split(const char *s, char *buf, size_t size, char **comp, size_t max)
{
	size_t len = strlen(s), n = 0;
	if (len >= size)
		return -1;
	memcpy(buf, s, len + 1);
	for (char *p = buf; *p;) {
		char *slash = strchr(p, '/');
		char *next = slash ? slash + 1 : p + strlen(p);
		if (slash)
			*slash = '\0';
		if (*p && strcmp(p, ".") != 0) {
			if (n == max)
				return -1;
			comp[n++] = p;
		}
		p = next;
	}
	return (int)n;
}

/*
 * A glob of pytest-hot-reloading's, made as it made them: "~" is the home
 * directory, a relative glob is taken from root, a directory means everything
 * in it ("dir" + "/" + "*"), and the directories before the first wildcard are resolved
 * (symlinks), as root is. Returns a malloc'd pattern or NULL.
 */
static char *
whole_normalize(const char *src, const char *root)
{
	char buf[PATH_MAX], real[PATH_MAX];
	const char *home = getenv("HOME");
	int n;
	if (src[0] == '~' && (src[1] == '/' || !src[1]) && home)
		n = snprintf(buf, sizeof(buf), "%s%s", home, src + 1);
	else if (src[0] == '/')
		n = snprintf(buf, sizeof(buf), "%s", src);
	else
		n = snprintf(buf, sizeof(buf), "%s/%s", root,
			     strncmp(src, "./", 2) == 0 ? src + 2
			     : strcmp(src, ".")         ? src
							: "");
	if (n < 0 || (size_t)n >= sizeof(buf))
		return NULL;
	struct stat st;
	if (!strpbrk(buf, "*?[") && stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) {
		size_t l = strlen(buf);
		while (l > 1 && buf[l - 1] == '/')
			buf[--l] = '\0';
		if (l + 2 >= sizeof(buf))
			return NULL;
		memcpy(buf + l, "/*", 3);
	}
	/* Resolve the literal directory part: /a/link/x*.py -> /real/x*.py. */
	size_t lit = strcspn(buf, "*?[");
	char *slash = NULL;
	for (size_t i = 0; i < lit; i++)
		if (buf[i] == '/')
			slash = buf + i;
	if (slash && slash > buf) {
		*slash = '\0';
		int ok = realpath(buf, real) != NULL;
		*slash = '/';
		if (ok && strlen(real) + strlen(slash) < sizeof(real)) {
			strcat(real, strcmp(real, "/") ? slash : slash + 1);
			return strdup(real);
		}
	}
	return strdup(buf);
}

/* Normalize a NULL-terminated list of whole-path globs. */
int
glob_whole_compile(char ***ret, size_t *ret_n, const char *const *src, const char *root)
{
	size_t n = 0;
	*ret = NULL;
	*ret_n = 0;
	while (src && src[n])
		n++;
	if (n == 0)
		return 0;
	if (!(*ret = calloc(n, sizeof(char *))))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!((*ret)[i] = whole_normalize(src[i], root)))
			return -EINVAL;
		*ret_n = i + 1;
	}
	return 0;
}

/* Free n strings and the array. */
void
glob_strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* Is this glob component "**"? */
static int
is_starstar(const char *c)
{
	return c[0] == '*' && c[1] == '*' && c[2] == '\0';
}

/* Do the glob components g match the path components p exactly? */
int
glob_match_comps(char *const *g, size_t gn, char *const *p, size_t pn)
{
	while (gn > 0) {
		if (is_starstar(g[0])) {
			while (gn > 0 && is_starstar(g[0])) {
				g++;
				gn--;
			}
			if (gn == 0)
				return 1;
			/* The rest needs at least min components, exactly min without a "**". */
			size_t min = 0;
			for (size_t k = 0; k < gn; k++)
				min += !is_starstar(g[k]);
			if (min == gn)
				return pn >= gn && glob_match_comps(g, gn, p + pn - gn, gn);
			for (size_t i = 0; i + min <= pn; i++)
				if (glob_match_comps(g, gn, p + i, pn - i))
					return 1;
			return 0;
		}
		if (pn == 0 || fnmatch(g[0], p[0], FNM_PATHNAME) != 0)
			return 0;
		g++;
		gn--;
		p++;
		pn--;
	}
	return pn == 0;
}

/* Could a path below the directory d (components) match the glob g? */
int
glob_could_contain(char *const *g, size_t gn, char *const *d, size_t dn)
{
	for (; dn > 0; d++, dn--, g++, gn--) {
		if (gn == 0)
			return 0;
		if (is_starstar(g[0]))
			return 1;
		if (fnmatch(g[0], d[0], FNM_PATHNAME) != 0)
			return 0;
	}
	return gn > 0;
}

int
watch_glob_match(const char *glob, const char *relpath)
{
	char gbuf[PATH_MAX], pbuf[PATH_MAX];
	char *g[MAX_COMPONENTS], *p[MAX_COMPONENTS];
	int gn = glob_split(glob, gbuf, sizeof(gbuf), g, ARRAY_SIZE(g));
	int pn = glob_split(relpath, pbuf, sizeof(pbuf), p, ARRAY_SIZE(p));
	if (gn <= 0 || pn < 0)
		return 0;
	return glob_match_comps(g, (size_t)gn, p, (size_t)pn);
}

/* Parse one glob; an absolute one must lie under root and is made relative. */
static int
glob_compile(struct zglob *z, const char *src, const char *root, int ignore)
{
	static char starstar[] = "**";
	size_t rl = strlen(root);

	memset(z, 0, sizeof(*z));
	if (src[0] == '/') {
		if (strcmp(root, "/") == 0)
			rl = 0;
		else if (strncmp(src, root, rl) != 0 || (src[rl] != '/' && src[rl] != '\0'))
			return -EINVAL;
		src += rl;
	}
	size_t len = strlen(src);
	if (len >= PATH_MAX)
		return -EINVAL;
	z->dironly = ignore && len > 0 && src[len - 1] == '/';
	z->buf = malloc(len + 1);
	z->comp = calloc(len / 2 + 2, sizeof(char *));
	if (!z->buf || !z->comp)
		return -ENOMEM;
	/* At most len/2 + 1 components fit in len bytes; one more slot for "**". */
	int n = glob_split(src, z->buf, len + 1, z->comp + 1, len / 2 + 1);
	if (n <= 0)
		return -EINVAL;
	if (z->dironly && n == 1) {
		z->comp[0] = starstar; /* "name/": a directory of that name at any depth */
		n++;
	} else {
		memmove(z->comp, z->comp + 1, (size_t)n * sizeof(char *));
	}
	z->n = (size_t)n;
	return 0;
}

/* Compile a NULL-terminated list. */
int
globs_compile(struct zglob **ret, size_t *ret_n, const char *const *src, const char *root,
	      int ignore)
{
	size_t n = 0;
	while (src[n])
		n++;
	*ret = calloc(n ? n : 1, sizeof(**ret));
	*ret_n = 0;
	if (!*ret)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int r = glob_compile(&(*ret)[i], src[i], root, ignore);
		*ret_n = i + 1;
		if (r < 0)
			return r;
	}
	return 0;
}

/* Free a compiled list. */
void
globs_free(struct zglob *g, size_t n)
{
	for (size_t i = 0; g && i < n; i++) {
		free(g[i].buf);
		free(g[i].comp);
	}
	free(g);
}

/* Could a file below the directory dir ("/abs/dir/") match the whole-path
 * glob g? Only if g's part before its first wildcard and dir agree as far as
 * the shorter goes. */
int
glob_whole_could_contain(const char *g, const char *dir)
{
	size_t lit = strcspn(g, "*?[");
	size_t dl = strlen(dir);
	return strncmp(g, dir, lit < dl ? lit : dl) == 0;
}
