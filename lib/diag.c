/* diag.c: "FILE:LINE: error: WHAT" diagnostics with a replaceable sink. */
#include <stdarg.h>
#include <stdio.h>

#include "diag.h"

static void emit(struct diag *d, enum diag_level level, const char *file,
		 unsigned long line, const char *fmt, va_list ap)
	__attribute__((format(printf, 5, 0)));
static void emit(struct diag *d, enum diag_level level, const char *file,
		 unsigned long line, const char *fmt, va_list ap)
{
	char msg[2048];

	vsnprintf(msg, sizeof msg, fmt, ap);
	if (level == DIAG_ERROR)
		d->errors++;
	else
		d->warnings++;
	if (d->sink) {
		d->sink(d->ctx, level, file, line, msg);
		return;
	}
	const char *what = level == DIAG_ERROR ? "error" : "warning";
	if (line)
		fprintf(stderr, "%s:%lu: %s: %s\n", file, line, what, msg);
	else
		fprintf(stderr, "%s: %s: %s\n", file, what, msg);
}

void diag_error(struct diag *d, const char *file, unsigned long line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(d, DIAG_ERROR, file, line, fmt, ap);
	va_end(ap);
}

void diag_warn(struct diag *d, const char *file, unsigned long line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(d, DIAG_WARNING, file, line, fmt, ap);
	va_end(ap);
}
