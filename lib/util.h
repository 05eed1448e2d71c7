/* util.h: memory helpers that never return NULL, and small string helpers.
 * Allocation failure is an environment failure: the helpers log and exit. */
#ifndef VHOSTMTA_UTIL_H
#define VHOSTMTA_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
/* xreallocarray: p resized to n * size elements, overflow checked. */
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* ASCII-only case-insensitive comparisons (locale never matters in mail). */
int ascii_strcasecmp(const char *a, const char *b);
int ascii_strncasecmp(const char *a, const char *b, size_t n);
char ascii_tolower(char c);

bool str_has_prefix(const char *s, const char *prefix);

/* str_parse_ull: whole-string unsigned decimal, no sign, no blanks,
 * value <= max. Returns false on anything else. */
bool str_parse_ull(const char *s, unsigned long long max, unsigned long long *out);

/* str_show: s[0..n) safe to quote in an error message: bytes other than
 * printable ASCII, quotes and backslashes become \xNN, and input past
 * STR_SHOW_MAX bytes is cut to "..." so it cannot crowd out the rest of
 * the message. Returns out. */
#define STR_SHOW_MAX 64
#define STR_SHOW_BUF (STR_SHOW_MAX * 4 + 4)
const char *str_show(const char *s, size_t n, char out[STR_SHOW_BUF]);

/* Postfix list syntax: items separated by white space and/or commas.
 * list_next() returns the next item of *cursor (not NUL-terminated: *len
 * gives its length) and advances the cursor, or NULL at the end. */
const char *list_next(const char **cursor, size_t *len);

/* String hash table (open addressing) mapping a NUL-terminated key to a
 * pointer. Keys are not copied: they must outlive the table. */
struct htab {
	const char **keys;
	void **vals;
	size_t cap, len;
	bool nocase;
};
void htab_init(struct htab *h, bool nocase);
void htab_free(struct htab *h);
/* htab_insert: returns NULL after inserting, or the existing value if key
 * is already present (then nothing is changed). */
void *htab_insert(struct htab *h, const char *key, void *val);
void *htab_get(const struct htab *h, const char *key);

#endif
