/*
 * What the watcher's files share: the hash table (table.c) and the globs
 * (glob.c) that watch.c uses. Private to src/supervisor/: the API is
 * include/zygote/watch.h, and struct watch stays inside watch.c.
 */
#ifndef ZYGOTE_WATCH_INTERNAL_H
#define ZYGOTE_WATCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Hidden: the server links libpython statically with --export-dynamic, so
 * every global of ours is in its dynamic symbol table, where it could
 * interpose on a same-named symbol of an extension module. These names were
 * static before the files were split and must not be exported now.
 */
#pragma GCC visibility push(hidden)

#define MAX_COMPONENTS 256

/* A glob split into its components. */
struct zglob {
	char *buf;   /* the components, NUL-separated */
	char **comp; /* n pointers into buf (or to a static "**") */
	size_t n;
	int dironly; /* an ignore glob that names directories only */
};

/* A slot of an open-addressing table: directories by wd, files by path. */
struct ent {
	char *key; /* relative path ("" for the root); NULL: an empty slot */
	uint64_t h;
	int wd;        /* directories: the watch descriptor */
	unsigned gen;  /* the walk that last saw it */
	int64_t mtime; /* files: st_mtim in ns, st_size, st_ino, st_ctim in ns */
	int64_t size;
	uint64_t ino;
	int64_t ctime;
};

struct table {
	struct ent *v;
	size_t cap; /* 0 or a power of two */
	size_t n;
};

/* table.c */

/* FNV-1a over a string. */
uint64_t table_hash_str(const char *s);

/* Spread a watch descriptor over the table. */
uint64_t table_hash_wd(int wd);

/* The slot holding key (or wd when key is NULL), or -1. */
long table_find(const struct table *t, uint64_t h, const char *key, int wd);

/* Insert key (owned by the table from now on, freed on failure); the slot or -ENOMEM. */
long table_insert(struct table *t, uint64_t h, char *key, int wd);

/* Empty slot i, shifting later entries of its cluster back (no tombstones). */
void table_del(struct table *t, size_t i);

/* Free every key and the slots. */
void table_free(struct table *t);

/* glob.c (watch_glob_match is in zygote/watch.h) */

/* Split a copy of s into buf at '/', dropping empty and "." components;
 * the number of components, or -1 if it does not fit. */
int glob_split(const char *s, char *buf, size_t size, char **comp, size_t max);

/* Normalize a NULL-terminated list of pytest-hot-reloading's whole-path
 * globs (root: where relative ones start); 0, -EINVAL or -ENOMEM. What was
 * made so far is in *ret, *ret_n even on failure: free it with
 * glob_strv_free. */
int glob_whole_compile(char ***ret, size_t *ret_n, const char *const *src, const char *root);

/* Free n strings and the array. Accepts NULL. */
void glob_strv_free(char **v, size_t n);

/* Do the glob components g match the path components p exactly? */
int glob_match_comps(char *const *g, size_t gn, char *const *p, size_t pn);

/* Could a path below the directory d (components) match the glob g? */
int glob_could_contain(char *const *g, size_t gn, char *const *d, size_t dn);

/* Compile a NULL-terminated list of globs relative to root (ignore: they are
 * ignore globs); 0, -EINVAL or -ENOMEM. On failure free *ret with globs_free. */
int globs_compile(struct zglob **ret, size_t *ret_n, const char *const *src, const char *root,
		  int ignore);

/* Free a compiled list. Accepts NULL. */
void globs_free(struct zglob *g, size_t n);

/* Could a file below the directory dir ("/abs/dir/") match the whole-path
 * glob g? */
int glob_whole_could_contain(const char *g, const char *dir);

#pragma GCC visibility pop

#endif
