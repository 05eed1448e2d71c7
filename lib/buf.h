/* buf.h: growable byte buffer, always NUL-terminated after its data. */
#ifndef VHOSTMTA_BUF_H
#define VHOSTMTA_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data; /* NULL until the first write; buf_cstr() never is */
	size_t len;
	size_t cap;
};

#define BUF_INIT { NULL, 0, 0 }

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);               /* len = 0, keeps memory */
void buf_reserve(struct buf *b, size_t more); /* room for more bytes + NUL */
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
const char *buf_cstr(const struct buf *b);    /* "" for an empty buffer */
/* buf_steal: hand the NUL-terminated data to the caller; b becomes empty. */
char *buf_steal(struct buf *b);

/* buf_put_printable: append s[0..n) with every byte that is not printable
 * ASCII written as \xNN (and '\\' as "\\\\"): safe for logs and line files. */
void buf_put_printable(struct buf *b, const char *s, size_t n);
/* buf_put_json: append s as a JSON string literal, quotes included. */
void buf_put_json(struct buf *b, const char *s);

#endif
