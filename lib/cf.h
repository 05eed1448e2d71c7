/* cf.h: one instance's configuration: raw values as written (in a .cf file
 * with main.cf syntax, or set by the manager from the map), then expanded
 * ($name, ${name}, $(name), ${name?text}, ${name:text}, $$) and checked by
 * type. Diagnostics name the file and line where the value was set. */
#ifndef VHOSTMTA_CF_H
#define VHOSTMTA_CF_H

#include <stdbool.h>
#include <stddef.h>

#include "diag.h"
#include "param.h"

struct buf;

struct cf_value {
	char *raw;          /* as written; NULL: the table's default */
	const char *file;   /* where it was set (not owned) */
	unsigned long line; /* 0: no line */
};

struct cf {
	struct cf_value v[P__COUNT];
	char *exp[P__COUNT];     /* expanded value, after cf_finalize */
	long long num[P__COUNT]; /* PT_INT/PT_TIME(s)/PT_BOOL/PT_ENUM index */
	bool final;
};

void cf_init(struct cf *cf);
void cf_free(struct cf *cf);

/* cf_set: record value for the parameter named name[0..namelen). An
 * unknown name or a value with control characters is a diag error
 * ("unknown parameter NAME"); a parameter set twice is a warning and the
 * later value wins, as in Postfix. file must outlive cf. */
bool cf_set(struct cf *cf, const char *name, size_t namelen, const char *value,
	    const char *file, unsigned long line, struct diag *d);
void cf_set_id(struct cf *cf, enum param_id id, const char *value,
	       const char *file, unsigned long line);

/* main.cf syntax: "name = value"; a line starting with white space
 * continues the previous one; blank lines and lines whose first
 * non-blank character is '#' are ignored. */
bool cf_parse_text(struct cf *cf, const char *file, const char *text, size_t len,
		   struct diag *d);
bool cf_parse_file(struct cf *cf, const char *path, struct diag *d);

/* cf_finalize: expand and check every parameter; report each problem at
 * the place its value was set. Returns true when there were no errors. */
bool cf_finalize(struct cf *cf, const char *file, struct diag *d);

/* After a successful cf_finalize. */
const char *cf_str(const struct cf *cf, enum param_id id);
long long cf_num(const struct cf *cf, enum param_id id);
bool cf_is_set(const struct cf *cf, enum param_id id);

/* cf_write_value: "name = value\n" in main.cf syntax, long values folded
 * onto continuation lines, so that cf_parse_text reads back value. */
void cf_write_value(struct buf *out, const char *name, const char *value);

#endif
