/* util.c: allocation helpers, ASCII string helpers, Postfix list splitting
 * and a string hash table. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

static void *check_alloc(void *p, size_t n)
{
	if (p == NULL && n != 0)
		msg_fatal("out of memory allocating %zu bytes", n);
	return p;
}

void *xmalloc(size_t n) { return check_alloc(malloc(n ? n : 1), n); }

void *xcalloc(size_t n, size_t size)
{
	return check_alloc(calloc(n ? n : 1, size ? size : 1), n * size);
}

void *xrealloc(void *p, size_t n) { return check_alloc(realloc(p, n ? n : 1), n); }

void *xreallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		msg_fatal("allocation size overflow (%zu * %zu)", n, size);
	return xrealloc(p, n * size);
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char ascii_tolower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

int ascii_strncasecmp(const char *a, const char *b, size_t n)
{
	for (; n > 0; a++, b++, n--) {
		int d = (unsigned char)ascii_tolower(*a) - (unsigned char)ascii_tolower(*b);
		if (d != 0 || *a == 0)
			return d;
	}
	return 0;
}

int ascii_strcasecmp(const char *a, const char *b) { return ascii_strncasecmp(a, b, SIZE_MAX); }

bool str_has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool str_parse_ull(const char *s, unsigned long long max, unsigned long long *out)
{
	unsigned long long v = 0;

	if (*s == 0)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		unsigned d = (unsigned)(*s - '0');
		if (d > max || v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

const char *str_show(const char *s, size_t n, char out[STR_SHOW_BUF])
{
	size_t o = 0;

	for (size_t i = 0; i < n && i < STR_SHOW_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, STR_SHOW_BUF - o, "\\x%02x", c);
	}
	if (n > STR_SHOW_MAX) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = 0;
	return out;
}

static bool is_sep(char c) { return c == ' ' || c == '\t' || c == ',' || c == '\n' || c == '\r'; }

const char *list_next(const char **cursor, size_t *len)
{
	const char *p = *cursor, *start;

	while (*p && is_sep(*p))
		p++;
	if (*p == 0) {
		*cursor = p;
		return NULL;
	}
	for (start = p; *p && !is_sep(*p); p++)
		;
	*len = (size_t)(p - start);
	*cursor = p;
	return start;
}

/* FNV-1a, folded to lower case when the table is case-insensitive. */
static size_t hash(const char *s, bool nocase)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)(nocase ? ascii_tolower(*s) : *s);
		h *= 1099511628211ULL;
	}
	return (size_t)(h ^ (h >> 32));
}

void htab_init(struct htab *h, bool nocase)
{
	memset(h, 0, sizeof *h);
	h->nocase = nocase;
}

void htab_free(struct htab *h)
{
	free(h->keys);
	free(h->vals);
	h->keys = NULL;
	h->vals = NULL;
	h->cap = h->len = 0;
}

static size_t slot(const struct htab *h, const char *key)
{
	size_t i = hash(key, h->nocase) & (h->cap - 1);
	while (h->keys[i] != NULL &&
	       (h->nocase ? ascii_strcasecmp(h->keys[i], key) : strcmp(h->keys[i], key)) != 0)
		i = (i + 1) & (h->cap - 1);
	return i;
}

static void grow(struct htab *h)
{
	struct htab old = *h;

	h->cap = old.cap ? old.cap * 2 : 16;
	h->keys = xcalloc(h->cap, sizeof *h->keys);
	h->vals = xcalloc(h->cap, sizeof *h->vals);
	for (size_t i = 0; i < old.cap; i++) {
		if (old.keys[i] != NULL) {
			size_t j = slot(h, old.keys[i]);
			h->keys[j] = old.keys[i];
			h->vals[j] = old.vals[i];
		}
	}
	free(old.keys);
	free(old.vals);
}

void *htab_insert(struct htab *h, const char *key, void *val)
{
	if ((h->len + 1) * 2 > h->cap)
		grow(h);
	size_t i = slot(h, key);
	if (h->keys[i] != NULL)
		return h->vals[i];
	h->keys[i] = key;
	h->vals[i] = val;
	h->len++;
	return NULL;
}

void *htab_get(const struct htab *h, const char *key)
{
	if (h->cap == 0)
		return NULL;
	size_t i = slot(h, key);
	return h->keys[i] ? h->vals[i] : NULL;
}
