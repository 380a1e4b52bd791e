/*
 * The watcher's open-addressing hash table (see watch-internal.h): directories
 * by watch descriptor, files by relative path; linear probing, no tombstones.
 * Memory only: no I/O, no logging, no global state.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "watch-internal.h"

/* FNV-1a over a string. */
uint64_t
table_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

/* Spread a watch descriptor over the table. */
uint64_t
table_hash_wd(int wd)
{
	uint64_t h = (uint64_t)(unsigned)wd * 0x9E3779B97F4A7C15ULL;
	return h ^ (h >> 29);
}

/* The slot holding key (or wd when key is NULL), or -1. */
long
table_find(const struct table *t, uint64_t h, const char *key, int wd)
{
	if (!t->cap)
		return -1;
	size_t mask = t->cap - 1;
	for (size_t i = h & mask; t->v[i].key; i = (i + 1) & mask) {
		if (t->v[i].h != h)
			continue;
		if (key ? strcmp(t->v[i].key, key) == 0 : t->v[i].wd == wd)
			return (long)i;
	}
	return -1;
}

/* Double the table (or make the first one). */
static int
table_grow(struct table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64;
	struct ent *v = calloc(cap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		if (!t->v[i].key)
			continue;
		size_t j = t->v[i].h & (cap - 1);
		while (v[j].key)
			j = (j + 1) & (cap - 1);
		v[j] = t->v[i];
	}
	free(t->v);
	t->v = v;
	t->cap = cap;
	return 0;
}

/* Insert key (owned by the table from now on, freed on failure); the slot or -ENOMEM. */
long
table_insert(struct table *t, uint64_t h, char *key, int wd)
{
	if ((t->n + 1) * 4 > t->cap * 3 && table_grow(t) < 0) {
		free(key);
		return -ENOMEM;
	}
	size_t mask = t->cap - 1, i = h & mask;
	while (t->v[i].key)
		i = (i + 1) & mask;
	memset(&t->v[i], 0, sizeof(t->v[i]));
	t->v[i].key = key;
	t->v[i].h = h;
	t->v[i].wd = wd;
	t->n++;
	return (long)i;
}

/* Empty slot i, shifting later entries of its cluster back (no tombstones). */
void
table_del(struct table *t, size_t i)
{
	size_t mask = t->cap - 1, j = i;
	free(t->v[i].key);
	for (;;) {
		j = (j + 1) & mask;
		if (!t->v[j].key)
			break;
		size_t k = t->v[j].h & mask;
		/* Entry j stays if its home k lies cyclically in (i, j]. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		t->v[i] = t->v[j];
		i = j;
	}
	memset(&t->v[i], 0, sizeof(t->v[i]));
	t->n--;
}

/* Free every key and the slots. */
void
table_free(struct table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->v[i].key);
	free(t->v);
	memset(t, 0, sizeof(*t));
}
