/* param.c: the parameter table built from params.def, lookup by name, the
 * per-type value checks, and the two listings generated from the table:
 * the defaults (postconf -d style) and the Markdown reference. */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "param.h"
#include "util.h"

const struct param_def param_table[P__COUNT] = {
#define PARAM(name, type, def, min, max, choices, flags, doc) \
	{ #name, type, def, min, max, choices, flags, doc },
#include "params.def"
#undef PARAM
};

#define QUOTE_MAX 64 /* bytes of a value quoted in an error before "..." */

/* ---- lookup ---------------------------------------------------------- */

/* Ids sorted by name, built once: binary search for lookup, and the order
 * of every listing. */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static enum param_id by_name[P__COUNT];
static size_t name_len[P__COUNT];

static int cmp_id_by_name(const void *a, const void *b)
{
	return strcmp(param_table[*(const enum param_id *)a].name,
		      param_table[*(const enum param_id *)b].name);
}

static void index_build(void)
{
	for (size_t i = 0; i < P__COUNT; i++) {
		by_name[i] = (enum param_id)i;
		name_len[i] = strlen(param_table[i].name);
	}
	qsort(by_name, P__COUNT, sizeof by_name[0], cmp_id_by_name);
}

static const enum param_id *sorted_ids(void)
{
	pthread_once(&index_once, index_build);
	return by_name;
}

/* Byte order, shorter first on a common prefix: strcmp's order, but safe
 * for keys that are not NUL-terminated or contain NUL. */
static int key_cmp(const char *s, size_t n, enum param_id id)
{
	size_t m = name_len[id];
	int c = memcmp(s, param_table[id].name, n < m ? n : m);
	if (c != 0)
		return c;
	return (n > m) - (n < m);
}

int param_lookup(const char *s, size_t n)
{
	const enum param_id *ids = sorted_ids();
	size_t lo = 0, hi = P__COUNT;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(s, n, ids[mid]);
		if (c == 0)
			return (int)ids[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

/* ---- error phrases --------------------------------------------------- */

static bool fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return false;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* fail_quoted: "VALUE" PHRASE, the value escaped and shortened: a phrase
 * must stay one readable line even for a 60 KB list. */
static bool fail_quoted(char *err, size_t errlen, const char *s, size_t n,
			const char *phrase)
{
	struct buf b = BUF_INIT;

	buf_putc(&b, '"');
	buf_put_printable(&b, s, n < QUOTE_MAX ? n : QUOTE_MAX);
	buf_puts(&b, n > QUOTE_MAX ? "...\" " : "\" ");
	buf_puts(&b, phrase);
	fail(err, errlen, "%s", buf_cstr(&b));
	buf_free(&b);
	return false;
}

/* Tab is white space in main.cf, so free text may hold it; a path may not. */
static bool has_control(const char *s, bool tab_ok)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c < 0x20 && !(tab_ok && c == '\t')) || c == 0x7f)
			return true;
	}
	return false;
}

/* ---- numbers and times ----------------------------------------------- */

/* parse_num: optional '-', then decimal digits; *end is the first byte after
 * them. Saturates instead of overflowing: a saturated value is outside every
 * table bound, so the bounds check reports it. False when no digits. */
static bool parse_num(const char *s, long long *out, const char **end)
{
	bool neg = *s == '-';
	const char *p = s + neg;
	long long v = 0;

	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		int d = *p - '0';
		v = v > (LLONG_MAX - d) / 10 ? LLONG_MAX : v * 10 + d;
	}
	*out = neg ? -v : v;
	*end = p;
	return true;
}

static const struct time_unit {
	char unit;
	long long secs;
	const char *word; /* plural, for the docs */
} time_units[] = {
	{ 's', 1, "seconds" },
	{ 'm', 60, "minutes" },
	{ 'h', 3600, "hours" },
	{ 'd', 86400, "days" },
	{ 'w', 604800, "weeks" },
};

static const struct time_unit *time_unit(char c)
{
	for (size_t i = 0; i < ARRAY_LEN(time_units); i++)
		if (time_units[i].unit == c)
			return &time_units[i];
	return NULL;
}

/* The unit of a bare number is the unit its parameter's default is written
 * in ("5d": days), as in Postfix; a default without one means seconds. */
static const struct time_unit *default_unit(const struct param_def *p)
{
	size_t n = strlen(p->def);
	const struct time_unit *u = n > 0 ? time_unit(p->def[n - 1]) : NULL;
	return u ? u : &time_units[0];
}

/* largest_unit: the largest unit that divides secs exactly. */
static const struct time_unit *largest_unit(long long secs)
{
	size_t i = ARRAY_LEN(time_units) - 1;

	while (i > 0 && (secs == 0 || secs % time_units[i].secs != 0))
		i--;
	return &time_units[i];
}

/* fmt_secs: "3600s (1h)": seconds, which a bare number of a timeout is in,
 * and the same in the largest unit that divides it. */
static const char *fmt_secs(long long secs, char out[64])
{
	const struct time_unit *u = largest_unit(secs);

	if (u->secs == 1)
		snprintf(out, 64, "%llds", secs);
	else
		snprintf(out, 64, "%llds (%lld%c)", secs, secs / u->secs, u->unit);
	return out;
}

/* fmt_time: "1h": the largest unit only, for the reference. */
static const char *fmt_time(long long secs, char out[64])
{
	const struct time_unit *u = largest_unit(secs);

	snprintf(out, 64, "%lld%c", secs / u->secs, u->unit);
	return out;
}

static long long mul_sat(long long v, long long m)
{
	if (v > LLONG_MAX / m)
		return LLONG_MAX;
	if (v < -(LLONG_MAX / m))
		return -LLONG_MAX;
	return v * m;
}

/* ---- per-type checks ------------------------------------------------- */

typedef bool check_fn(const struct param_def *p, const char *v, long long *num,
		      char *err, size_t errlen);

static bool check_str(const struct param_def *p, const char *v, long long *num,
		      char *err, size_t errlen)
{
	if (has_control(v, true))
		return fail(err, errlen, "control character in value");
	return true;
}

static bool check_int(const struct param_def *p, const char *v, long long *num,
		      char *err, size_t errlen)
{
	const char *end;

	if (!parse_num(v, num, &end) || *end != 0)
		return fail_quoted(err, errlen, v, strlen(v), "is not a number");
	/* A '-' where min >= 0 is caught here as "below the minimum", which
	 * says more than "not a number". */
	if (*num < p->min)
		return fail(err, errlen, "value %.40s is below the minimum %lld", v, p->min);
	if (*num > p->max)
		return fail(err, errlen, "value %.40s is above the maximum %lld", v, p->max);
	return true;
}

static bool check_bool(const struct param_def *p, const char *v, long long *num,
		       char *err, size_t errlen)
{
	if (ascii_strcasecmp(v, "yes") == 0)
		*num = 1;
	else if (ascii_strcasecmp(v, "no") == 0)
		*num = 0;
	else
		return fail_quoted(err, errlen, v, strlen(v), "is not yes or no");
	return true;
}

static bool time_bound_error(const struct param_def *p, const char *v, bool explicit_unit,
			     const char *what, long long bound, char *err, size_t errlen)
{
	char b[64], shown[64] = "";
	const struct time_unit *u = default_unit(p);

	/* "400 (400d)": say how a bare number was read. */
	if (!explicit_unit && u->unit != 's')
		snprintf(shown, sizeof shown, " (%.40s%c)", v, u->unit);
	return fail(err, errlen, "value %.40s%s is %s %s", v, shown, what, fmt_secs(bound, b));
}

static bool check_time(const struct param_def *p, const char *v, long long *num,
		       char *err, size_t errlen)
{
	const char *end;
	const struct time_unit *u = NULL;
	long long n;

	if (parse_num(v, &n, &end))
		u = end[0] == 0 ? default_unit(p) : end[1] == 0 ? time_unit(end[0]) : NULL;
	if (u == NULL)
		return fail_quoted(err, errlen, v, strlen(v),
				   "is not a time (a number with an optional unit s, m, h, d or w)");
	*num = mul_sat(n, u->secs);
	if (*num < p->min)
		return time_bound_error(p, v, *end != 0, "below the minimum", p->min, err, errlen);
	if (*num > p->max)
		return time_bound_error(p, v, *end != 0, "above the maximum", p->max, err, errlen);
	return true;
}

/* choices_next: the next "a" of "a|b|c" (length in *n), or NULL. */
static const char *choices_next(const char **cur, size_t *n)
{
	const char *s = *cur;

	if (*s == 0)
		return NULL;
	*n = strcspn(s, "|");
	*cur = s[*n] ? s + *n + 1 : s + *n;
	return s;
}

/* choices_text: "a, b or c", each choice between quote marks. */
static void choices_text(struct buf *b, const char *choices, const char *quote)
{
	const char *cur = choices, *c;
	size_t n;

	while ((c = choices_next(&cur, &n)) != NULL)
		buf_printf(b, "%s%s%.*s%s", c == choices ? "" : *cur ? ", " : " or ",
			   quote, (int)n, c, quote);
}

static bool check_enum(const struct param_def *p, const char *v, long long *num,
		       char *err, size_t errlen)
{
	const char *cur = p->choices, *c;
	size_t n, vlen = strlen(v);
	struct buf b = BUF_INIT;

	/* Case-insensitive, as Postfix's name_code tables. */
	for (long long i = 0; (c = choices_next(&cur, &n)) != NULL; i++) {
		if (n == vlen && ascii_strncasecmp(c, v, n) == 0) {
			*num = i;
			return true;
		}
	}
	buf_puts(&b, "is not one of ");
	choices_text(&b, p->choices, "");
	fail_quoted(err, errlen, v, vlen, buf_cstr(&b));
	buf_free(&b);
	return false;
}

static bool check_hostname(const struct param_def *p, const char *v, long long *num,
			   char *err, size_t errlen)
{
	if (*v == 0)
		return fail(err, errlen, "empty host name");
	if (!hostname_valid(v, strlen(v), true))
		return fail_quoted(err, errlen, v, strlen(v), "is not a fully qualified host name");
	return true;
}

static bool check_iflist(const struct param_def *p, const char *v, long long *num,
			 char *err, size_t errlen)
{
	struct iflist l;

	if (!iflist_parse(v, &l, err, errlen))
		return false;
	iflist_free(&l);
	return true;
}

/* Order for duplicate detection: family, then the address bytes. */
static int ipaddr_cmp(const void *pa, const void *pb)
{
	const struct ipaddr *a = pa, *b = pb;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	if (a->family == AF_INET)
		return memcmp(&a->u.v4, &b->u.v4, sizeof a->u.v4);
	return memcmp(&a->u.v6, &b->u.v6, sizeof a->u.v6);
}

/* Sorted, not compared pairwise: a manager may write a list of thousands
 * of addresses. */
static bool addrs_unique(struct ipaddr *a, size_t n, char *err, size_t errlen)
{
	char txt[IPADDR_STRLEN];

	if (n < 2)
		return true;
	qsort(a, n, sizeof *a, ipaddr_cmp);
	for (size_t i = 1; i < n; i++)
		if (ipaddr_cmp(&a[i - 1], &a[i]) == 0)
			return fail(err, errlen, "duplicate address %s", ipaddr_format(&a[i], txt));
	return true;
}

static bool check_addrlist(const struct param_def *p, const char *v, long long *num,
			   char *err, size_t errlen)
{
	struct ipaddr *a = NULL, one;
	size_t n = 0, cap = 0, len;
	const char *cur = v, *item;
	bool ok = true;

	while (ok && (item = list_next(&cur, &len)) != NULL) {
		if (!ipaddr_parse(item, len, &one)) {
			ok = fail_quoted(err, errlen, item, len, "is not an IP address");
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			a = xreallocarray(a, cap, sizeof *a);
		}
		/* ::ffff:192.0.2.1 and 192.0.2.1 are the same address. */
		ipaddr_unmap(&one, &a[n++]);
	}
	if (ok)
		ok = addrs_unique(a, n, err, errlen);
	free(a);
	return ok;
}

static bool check_netlist(const struct param_def *p, const char *v, long long *num,
			  char *err, size_t errlen)
{
	struct netlist l;

	if (!netlist_parse(v, &l, err, errlen))
		return false;
	netlist_free(&l);
	return true;
}

static bool check_one_addr(const char *v, sa_family_t family, const char *phrase,
			   char *err, size_t errlen)
{
	struct ipaddr a;

	if (*v == 0)
		return true;
	if (!ipaddr_parse(v, strlen(v), &a) || a.family != family)
		return fail_quoted(err, errlen, v, strlen(v), phrase);
	return true;
}

static bool check_addr4(const struct param_def *p, const char *v, long long *num,
			char *err, size_t errlen)
{
	return check_one_addr(v, AF_INET, "is not an IPv4 address", err, errlen);
}

static bool check_addr6(const struct param_def *p, const char *v, long long *num,
			char *err, size_t errlen)
{
	return check_one_addr(v, AF_INET6, "is not an IPv6 address", err, errlen);
}

static bool check_nexthop(const struct param_def *p, const char *v, long long *num,
			  char *err, size_t errlen)
{
	struct nexthop nh;

	return *v == 0 || nexthop_parse(v, NH_SMTP, &nh, err, errlen);
}

static bool check_path(const struct param_def *p, const char *v, long long *num,
		       char *err, size_t errlen)
{
	if (*v == 0)
		return true;
	if (has_control(v, false))
		return fail(err, errlen, "control character in value");
	if (*v != '/')
		return fail_quoted(err, errlen, v, strlen(v), "is not an absolute path");
	return true;
}

/* ---- the type table -------------------------------------------------- */

static const struct type_info {
	const char *name; /* for people: messages and the reference */
	check_fn *check;
} types[] = {
	[PT_STR] = { "string", check_str },
	[PT_INT] = { "integer", check_int },
	[PT_BOOL] = { "boolean", check_bool },
	[PT_TIME] = { "time", check_time },
	[PT_ENUM] = { "choice", check_enum },
	[PT_HOSTNAME] = { "host name", check_hostname },
	[PT_IFLIST] = { "interface list", check_iflist },
	[PT_ADDRLIST] = { "address list", check_addrlist },
	[PT_NETLIST] = { "network list", check_netlist },
	[PT_ADDR4] = { "IPv4 address", check_addr4 },
	[PT_ADDR6] = { "IPv6 address", check_addr6 },
	[PT_NEXTHOP] = { "next hop", check_nexthop },
	[PT_PATH] = { "path", check_path },
};

const char *param_type_name(enum param_type t)
{
	if ((size_t)t >= ARRAY_LEN(types) || types[t].name == NULL)
		return "unknown";
	return types[t].name;
}

bool param_check_value(enum param_id id, const char *value, long long *num,
		       char *err, size_t errlen)
{
	long long n = 0;

	if ((size_t)id >= P__COUNT)
		return fail(err, errlen, "unknown parameter id %d", (int)id);
	const struct param_def *p = &param_table[id];
	if (!types[p->type].check(p, value, &n, err, errlen))
		return false;
	if (num)
		*num = n;
	return true;
}

/* ---- listings -------------------------------------------------------- */

void param_dump_defaults(FILE *out)
{
	const enum param_id *ids = sorted_ids();

	for (size_t i = 0; i < P__COUNT; i++) {
		const struct param_def *p = &param_table[ids[i]];
		/* No trailing blank after "=" for an empty default. */
		fprintf(out, "%s =%s%s\n", p->name, *p->def ? " " : "", p->def);
	}
}

static const char doc_intro[] =
	"# vhostmta instance parameters\n"
	"\n"
	"This reference is generated from the parameter table (lib/params.def)\n"
	"by `vhostmta params --doc`; edit the table, not this file.\n"
	"\n"
	"Each instance reads its parameters from a file in Postfix main.cf\n"
	"syntax. A line `name = value` sets a parameter; white space around\n"
	"`=` and at the ends of the value is ignored. A line that starts with\n"
	"white space continues the previous one. Blank lines and lines whose\n"
	"first non-blank character is `#` are ignored, also between continuation\n"
	"lines; a `#` elsewhere is part of the value. A parameter set twice is a\n"
	"warning, and the later value wins.\n"
	"\n"
	"A value may use other parameters' values: `$name`, `${name}` and\n"
	"`$(name)` insert the value of name; `${name?text}` inserts text when\n"
	"the value of name is not empty, `${name:text}` when it is empty; `$$`\n"
	"is a literal `$`. Defaults use the same forms, so changing one\n"
	"parameter also changes those whose defaults refer to it.\n"
	"\n"
	"A time is a number with an optional unit: `s` (seconds), `m` (minutes),\n"
	"`h` (hours), `d` (days) or `w` (weeks). A number without a unit is in\n"
	"the unit of the parameter's default: `maximal_queue_lifetime = 2`\n"
	"means two days. Boolean parameters take `yes` or `no`. Lists of\n"
	"addresses or networks are separated by white space and/or commas.\n";

static void doc_type(FILE *out, const struct param_def *p)
{
	char lo[64], hi[64];
	struct buf b = BUF_INIT;

	switch (p->type) {
	case PT_INT:
		fprintf(out, "integer from %lld to %lld", p->min, p->max);
		break;
	case PT_TIME:
		fprintf(out, "time from %s to %s; a number without a unit is in %s",
			fmt_time(p->min, lo), fmt_time(p->max, hi), default_unit(p)->word);
		break;
	case PT_BOOL:
		fputs("boolean (`yes` or `no`)", out);
		break;
	case PT_ENUM:
		choices_text(&b, p->choices, "`");
		fprintf(out, "one of %s", buf_cstr(&b));
		buf_free(&b);
		break;
	case PT_HOSTNAME:
		fputs("fully qualified host name", out);
		break;
	case PT_PATH:
		fputs("absolute path, or empty", out);
		break;
	default:
		fputs(param_type_name(p->type), out);
		break;
	}
}

static const struct {
	unsigned flag;
	const char *words;
} doc_flags[] = {
	{ PF_REQUIRED, "Required." },
	{ PF_IDENTITY, "Set by the map." },
	{ PF_MANAGER, "Written by the manager." },
	{ PF_RESTART, "A change restarts the instance's listeners." },
	{ PF_OWN, "vhostmta's own parameter: the Postfix backend does not pass it on." },
};

static void doc_param(FILE *out, const struct param_def *p)
{
	fprintf(out, "\n## %s\n\nType: ", p->name);
	doc_type(out, p);
	if (*p->def)
		fprintf(out, ". Default: `%s`.", p->def);
	else
		fputs(". Default: (empty).", out);
	for (size_t i = 0; i < ARRAY_LEN(doc_flags); i++)
		if (p->flags & doc_flags[i].flag)
			fprintf(out, " %s", doc_flags[i].words);
	fprintf(out, "\n\n%s\n", p->doc);
}

void param_write_doc(FILE *out)
{
	const enum param_id *ids = sorted_ids();

	fputs(doc_intro, out);
	for (size_t i = 0; i < P__COUNT; i++)
		doc_param(out, &param_table[ids[i]]);
}
