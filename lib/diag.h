/* diag.h: diagnostics about an input file, one line each:
 * "FILE:LINE: error: WHAT" (or "warning:"). Checkers report every problem
 * they find through a struct diag and count them, so one run shows all
 * errors. The default sink writes to stderr through log.h; tests install
 * their own sink to assert on file, line and text. */
#ifndef VHOSTMTA_DIAG_H
#define VHOSTMTA_DIAG_H

enum diag_level { DIAG_ERROR, DIAG_WARNING };

typedef void diag_sink_fn(void *ctx, enum diag_level level, const char *file,
			  unsigned long line, const char *msg);

struct diag {
	diag_sink_fn *sink; /* NULL: stderr */
	void *ctx;
	unsigned errors;
	unsigned warnings;
};

#define DIAG_INIT { NULL, NULL, 0, 0 }

void diag_error(struct diag *d, const char *file, unsigned long line,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void diag_warn(struct diag *d, const char *file, unsigned long line,
	       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
