/* param.h: the instance parameter table. Each parameter is declared once
 * in params.def (name, type, default, bounds, flags, one-line doc); that
 * table drives the .cf parser, type checks, --dump-defaults, the docs and
 * the manager's map checks. Names and semantics follow Postfix wherever
 * Postfix has the parameter. */
#ifndef VHOSTMTA_PARAM_H
#define VHOSTMTA_PARAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum param_type {
	PT_STR,      /* free text (no control characters) */
	PT_INT,      /* decimal integer within [min, max] */
	PT_BOOL,     /* yes | no */
	PT_TIME,     /* integer with optional unit s m h d w; the default
		      * string's unit is the default unit; min/max in seconds */
	PT_ENUM,     /* one of choices ("a|b|c") */
	PT_HOSTNAME, /* fully qualified host name */
	PT_IFLIST,   /* inet_interfaces grammar */
	PT_ADDRLIST, /* list of IP addresses (empty allowed) */
	PT_NETLIST,  /* mynetworks grammar */
	PT_ADDR4,    /* empty or one IPv4 address */
	PT_ADDR6,    /* empty or one IPv6 address */
	PT_NEXTHOP,  /* empty or a next hop (addr.h) */
	PT_PATH,     /* empty or an absolute path */
};

/* Flags. */
#define PF_IDENTITY 0x01 /* set by the map's attributes, never by <param> */
#define PF_MANAGER  0x02 /* written by the manager (render), not by users */
#define PF_RESTART  0x04 /* a change needs the listeners re-created */
#define PF_REQUIRED 0x08 /* must be set (no usable default) */
#define PF_OWN      0x10 /* vhostmta's own: Postfix has no such parameter */

enum param_id {
#define PARAM(name, type, def, min, max, choices, flags, doc) P_##name,
#include "params.def"
#undef PARAM
	P__COUNT
};

struct param_def {
	const char *name;
	enum param_type type;
	const char *def;     /* default value, may contain $name */
	long long min, max;  /* PT_INT, PT_TIME (seconds) */
	const char *choices; /* PT_ENUM: "a|b|c"; else NULL */
	unsigned flags;
	const char *doc;
};

extern const struct param_def param_table[P__COUNT];

/* param_lookup: id of the parameter named s[0..n), or -1. */
int param_lookup(const char *s, size_t n);
const char *param_type_name(enum param_type t);

/* param_check_value: check an expanded value against the parameter's type
 * and bounds. On success stores the number (PT_INT, PT_TIME in seconds,
 * PT_BOOL 0/1, PT_ENUM index) in *num when num is not NULL. On failure
 * writes a phrase into err, e.g. "value 0 is below the minimum 1". */
bool param_check_value(enum param_id id, const char *value, long long *num,
		       char *err, size_t errlen);

/* param_dump_defaults: "name = default" for every parameter, sorted. */
void param_dump_defaults(FILE *out);
/* param_write_doc: the parameter reference, Markdown, sorted by name. */
void param_write_doc(FILE *out);

#endif
