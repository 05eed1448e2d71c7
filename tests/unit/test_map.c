/* test_map.c: map_load() against bad, valid and hostile maps. Every bad
 * map is a table entry: its text and the exact diagnostics it must produce
 * (line and message, compared as a set, so a duplicate or a missing
 * error fails), printed side by side when they differ. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libxml/parser.h>

#include "buf.h"
#include "embed.h"
#include "map.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define NS "urn:vhostmta:map:1"
#define OPEN "<map xmlns=\"" NS "\">\n"
#define CLOSE "</map>\n"

/* ---- the recording sink ------------------------------------------------ */

#define MAX_RECORDS 64

struct record {
	enum diag_level level;
	char *file;
	unsigned long line;
	char *msg;
};

struct recorder {
	struct record r[MAX_RECORDS];
	size_t n;
	size_t dropped; /* beyond MAX_RECORDS */
};

static char *dup_str(const char *s)
{
	char *p = strdup(s ? s : "(null)");
	assert_non_null(p);
	return p;
}

static void record_sink(void *ctx, enum diag_level level, const char *file, unsigned long line,
			const char *msg)
{
	struct recorder *rec = ctx;

	if (rec->n == MAX_RECORDS) {
		rec->dropped++;
		return;
	}
	rec->r[rec->n++] = (struct record){ level, dup_str(file), line, dup_str(msg) };
}

static void recorder_free(struct recorder *rec)
{
	for (size_t i = 0; i < rec->n; i++) {
		free(rec->r[i].file);
		free(rec->r[i].msg);
	}
	rec->n = 0;
	rec->dropped = 0;
}

/* ---- expectations ------------------------------------------------------ */

#define MAX_EXPECT 12

/* Stands for "any non-empty message": libxml2 words its own errors. */
static const char libxml_msg[] = "<a non-empty message from libxml2>";
#define LIBXML libxml_msg

struct expect {
	unsigned long line;
	const char *msg; /* NULL ends a list */
};

static size_t expect_count(const struct expect *want)
{
	size_t n = 0;
	while (n < MAX_EXPECT && want[n].msg)
		n++;
	return n;
}

static bool record_matches(const struct record *r, const struct expect *e, const char *path)
{
	if (r->level != DIAG_ERROR || r->line != e->line || strcmp(r->file, path) != 0)
		return false;
	if (e->msg == libxml_msg)
		return r->msg[0] != 0;
	return strcmp(r->msg, e->msg) == 0;
}

/* diags_equal: each expectation matches one record and each record one
 * expectation (order free: cf reports in table order, not line order). */
static bool diags_equal(const struct recorder *rec, const struct expect *want, size_t nwant,
			const char *path, bool *used_want, bool *used_rec)
{
	memset(used_want, 0, nwant * sizeof *used_want);
	memset(used_rec, 0, rec->n * sizeof *used_rec);
	for (size_t i = 0; i < nwant; i++) {
		for (size_t j = 0; j < rec->n; j++) {
			if (!used_rec[j] && record_matches(&rec->r[j], &want[i], path)) {
				used_want[i] = used_rec[j] = true;
				break;
			}
		}
	}
	bool ok = rec->dropped == 0 && rec->n == nwant;
	for (size_t i = 0; i < nwant; i++)
		ok = ok && used_want[i];
	return ok;
}

/* print_diff: expected and received diagnostics; "-" marks an expected one
 * that did not come, "+" one that came unexpected. */
static void print_diff(const char *what, const struct recorder *rec, const struct expect *want,
		       size_t nwant, const char *path, const bool *used_want, const bool *used_rec)
{
	print_error("diagnostics of \"%s\" differ (map file %s)\n", what, path);
	print_error("  expected %zu:\n", nwant);
	for (size_t i = 0; i < nwant; i++)
		print_error("  %c line %lu: %s\n", used_want[i] ? ' ' : '-', want[i].line, want[i].msg);
	print_error("  received %zu%s:\n", rec->n, rec->dropped ? " (and more, dropped)" : "");
	for (size_t j = 0; j < rec->n; j++) {
		const struct record *r = &rec->r[j];
		bool other_file = strcmp(r->file, path) != 0;
		print_error("  %c line %lu: %s%s%s%s\n", used_rec[j] ? ' ' : '+', r->line,
			    r->level == DIAG_WARNING ? "(warning) " : "", r->msg,
			    other_file ? "  [file: " : "", other_file ? r->file : "");
	}
}

static void assert_diags(const char *what, const struct recorder *rec, const struct expect *want,
			 const char *path)
{
	size_t nwant = expect_count(want);
	bool used_want[MAX_EXPECT], used_rec[MAX_RECORDS];

	if (!diags_equal(rec, want, nwant, path, used_want, used_rec)) {
		print_diff(what, rec, want, nwant, path, used_want, used_rec);
		fail_msg("%s: wrong diagnostics", what);
	}
}

/* ---- map files --------------------------------------------------------- */

static const char *tmp_dir(void)
{
	const char *t = getenv("TMPDIR");
	return t && *t ? t : "/tmp";
}

/* write_map: text[0..len) in a new temporary file; its path in path. */
static void write_map(const char *text, size_t len, char *path, size_t pathlen)
{
	int n = snprintf(path, pathlen, "%s/vhostmta-test_map-XXXXXX", tmp_dir());
	assert_true(n > 0 && (size_t)n < pathlen);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, text + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		assert_true(w > 0);
		off += (size_t)w;
	}
	assert_int_equal(close(fd), 0);
}

/* load: map_load of path with a recording sink; the counts must agree. */
static bool load(const char *path, struct map *m, struct recorder *rec)
{
	struct diag d = { record_sink, rec, 0, 0 };
	bool ok = map_load(m, path, &d);

	assert_int_equal(d.errors + d.warnings, rec->n + rec->dropped);
	return ok;
}

/* load_valid: text must load without a single diagnostic. */
static void load_valid(const char *what, const char *text, struct map *m)
{
	struct recorder rec = { .n = 0 };
	char path[4096];
	static const struct expect none[1] = { { 0, NULL } };

	write_map(text, strlen(text), path, sizeof path);
	bool ok = load(path, m, &rec);
	unlink(path); /* before any assertion can end the test */
	assert_diags(what, &rec, none, path);
	assert_true(ok);
	recorder_free(&rec);
}

/* ---- bad maps ---------------------------------------------------------- */

struct bad_case {
	const char *name;
	const char *text;
	size_t len; /* 0: strlen(text) */
	struct expect want[MAX_EXPECT];
};

#define A16 "aaaaaaaaaaaaaaaa"
#define NAME64 A16 A16 A16 A16
#define NAME65 NAME64 "a"
#define NAME_RULE ": 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

static const struct bad_case bad_cases[] = {
	/* ---- the document and its elements */
	{ "wrong root element",
	  "<mop xmlns=\"" NS "\">\n"
	  "</mop>\n",
	  0, { { 1, "the root element is <mop>, not <map>" } } },
	{ "root without a namespace",
	  "<map>\n"
	  "  <instance myhostname=\"mail.a.test\"><address>192.0.2.1</address></instance>\n"
	  CLOSE,
	  0, { { 1, "<map> must be in the namespace " NS " (xmlns=\"" NS "\")" } } },
	{ "root in another namespace",
	  "\n"
	  "<map xmlns=\"urn:vhostmta:map:2\">\n"
	  CLOSE,
	  0, { { 2, "<map> must be in the namespace " NS " (xmlns=\"" NS "\")" } } },
	{ "elements outside the map namespace",
	  OPEN
	  "  <x:instance xmlns:x=\"urn:example:other\" myhostname=\"mail.a.test\"/>\n"
	  "  <instance xmlns=\"\" myhostname=\"mail.b.test\"/>\n"
	  CLOSE,
	  0, { { 2, "element <instance> is not in the map namespace " NS },
	       { 3, "element <instance> is not in the map namespace " NS } } },
	{ "unknown element in <map>",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\"><address>192.0.2.1</address></instance>\n"
	  "  <instances/>\n"
	  CLOSE,
	  0, { { 3, "unexpected element <instances> in <map>" } } },
	{ "unknown element in <instance>",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <alias name=\"b.test\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "unexpected element <alias> in <instance>" } } },
	{ "unknown element in <defaults>",
	  OPEN
	  "  <defaults>\n"
	  "    <parameter name=\"mynetworks\" value=\"127.0.0.0/8\"/>\n"
	  "  </defaults>\n"
	  CLOSE,
	  0, { { 3, "unexpected element <parameter> in <defaults>" } } },
	{ "elements inside <address>, <domain> and <param>",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1<v4/></address>\n"
	  "    <domain name=\"a.test\">\n"
	  "      <deliver/>\n"
	  "    </domain>\n"
	  "    <param name=\"mynetworks\" value=\"127.0.0.0/8\"><note/></param>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "unexpected element <v4> in <address>" },
	       { 5, "unexpected element <deliver> in <domain>" },
	       { 7, "unexpected element <note> in <param>" } } },
	{ "unknown attributes on every element",
	  "<map xmlns=\"" NS "\" version=\"1\">\n"
	  "  <defaults relay=\"smtp:relay.a.test\">\n"
	  "  </defaults>\n"
	  "  <instance myhostname=\"mail.a.test\" port=\"25\">\n"
	  "    <address family=\"inet\">192.0.2.1</address>\n"
	  "    <domain name=\"a.test\" mx=\"yes\"/>\n"
	  "    <param name=\"mynetworks\" value=\"127.0.0.0/8\" type=\"netlist\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 1, "unknown attribute \"version\" on <map>" },
	       { 2, "unknown attribute \"relay\" on <defaults>" },
	       { 4, "unknown attribute \"port\" on <instance>" },
	       { 5, "unknown attribute \"family\" on <address>" },
	       { 6, "unknown attribute \"mx\" on <domain>" },
	       { 7, "unknown attribute \"type\" on <param>" } } },
	{ "attributes in a namespace are unknown",
	  OPEN
	  "  <instance xmlns:v=\"" NS "\" v:myhostname=\"mail.a.test\" xml:lang=\"en\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "unknown attribute \"myhostname\" on <instance>" },
	       { 2, "unknown attribute \"lang\" on <instance>" },
	       { 2, "<instance> needs a myhostname attribute" } } },
	{ "text where none belongs",
	  OPEN
	  "  stray\n"
	  "  <defaults>text</defaults>\n"
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    words\n"
	  "    <domain name=\"a.test\">b.test</domain>\n"
	  "    <param name=\"mynetworks\" value=\"127.0.0.0/8\">\n"
	  "\n"
	  "      more</param>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "unexpected text in <map>" },
	       { 3, "unexpected text in <defaults>" },
	       { 6, "unexpected text in <instance>" },
	       { 7, "unexpected text in <domain>" },
	       { 10, "unexpected text in <param>" } } },
	{ "CDATA, references and non-ASCII text are text too",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\"><![CDATA[\n"
	  "cdata]]>\n"
	  "    <address>192.0.2.1</address>&#65;\n"
	  "    <domain name=\"a.test\"/>\n"
	  "    &amp;\n"
	  "  </instance>\n"
	  "  \xc3\xa9t\xc3\xa9 "
	  /* over 300 bytes: libxml2 hands the text over in several chunks */
	  A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 A16 "\n"
	  "\n"
	  CLOSE,
	  0, { { 3, "unexpected text in <instance>" },
	       { 4, "unexpected text in <instance>" },
	       { 6, "unexpected text in <instance>" },
	       { 8, "unexpected text in <map>" } } },
	{ "text lines in a CRLF file",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\r\n"
	  "    <address>192.0.2.1</address>\r\n"
	  "\r\n"
	  "    stray\r\n"
	  "    text\r\n"
	  "  </instance>\r\n"
	  CLOSE,
	  0, { { 5, "unexpected text in <instance>" } } },

	/* ---- myhostname, name, host */
	{ "missing myhostname",
	  OPEN
	  "  <instance name=\"a\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "<instance> needs a myhostname attribute" } } },
	{ "invalid myhostname",
	  OPEN
	  "  <instance myhostname=\"mail_server.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <instance myhostname=\"mail.b.test.\" name=\"b\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "invalid myhostname \"mail_server.a.test\"" },
	       { 5, "invalid myhostname \"mail.b.test.\"" } } },
	{ "myhostname not fully qualified",
	  OPEN
	  "  <instance myhostname=\"mail\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "myhostname \"mail\" is not a fully qualified domain name" } } },
	{ "myhostname twice on one host",
	  OPEN
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"MAIL.A.test\" host=\"mx1\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"c\" myhostname=\"mail.c.test\" host=\"mx1\">\n"
	  "    <address>192.0.2.3</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"d\" myhostname=\"mail.c.test\" host=\"mx2\">\n"
	  "    <address>192.0.2.4</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"e\" myhostname=\"mail.c.test\" host=\"MX2\">\n"
	  "    <address>192.0.2.5</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 5, "myhostname mail.a.test is also used by instance \"a\" (line 2) on the same host" },
	       { 14, "myhostname mail.c.test is also used by instance \"d\" (line 11) on the same host" } } },
	{ "invalid instance names",
	  OPEN
	  "  <instance name=\"a b\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"..\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"\" myhostname=\"mail.c.test\">\n"
	  "    <address>192.0.2.3</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"a/b\" myhostname=\"mail.d.test\">\n"
	  "    <address>192.0.2.4</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"caf\xc3\xa9\" myhostname=\"mail.e.test\">\n"
	  "    <address>192.0.2.5</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "invalid instance name \"a b\"" NAME_RULE },
	       { 5, "invalid instance name \"..\"" NAME_RULE },
	       { 8, "invalid instance name \"\"" NAME_RULE },
	       { 11, "invalid instance name \"a/b\"" NAME_RULE },
	       { 14, "invalid instance name \"caf\\xc3\\xa9\"" NAME_RULE } } },
	{ "instance name of 65 characters",
	  OPEN
	  "  <instance name=\"" NAME65 "\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "invalid instance name \"" NAME65 "\"" NAME_RULE } } },
	{ "instance names that start with . _ - or take the host table's name",
	  OPEN
	  "  <instance name=\".host-addresses.tmp\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"-x\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"host-addresses\" myhostname=\"mail.c.test\">\n"
	  "    <address>192.0.2.3</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "invalid instance name \".host-addresses.tmp\"" NAME_RULE },
	       { 5, "invalid instance name \"-x\"" NAME_RULE },
	       { 8, "instance name \"host-addresses\" is reserved" } } },
	{ "a myhostname too long to be the default name",
	  OPEN
	  "  <instance myhostname=\"mail.abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz.example.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "myhostname \"mail.abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz.example.test\" cannot serve as the instance name "
		    "(at most 64 characters): add a name attribute" } } },
	{ "instance name used twice",
	  OPEN
	  "  <instance name=\"mx\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"mx\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"mail.d.test\" myhostname=\"mail.c.test\">\n"
	  "    <address>192.0.2.3</address>\n"
	  "  </instance>\n"
	  "  <instance myhostname=\"Mail.D.test\">\n"
	  "    <address>192.0.2.4</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 5, "instance name \"mx\" is also used at line 2" },
	       { 11, "instance name \"mail.d.test\" is also used at line 8" } } },
	{ "invalid host attribute",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\" host=\"mx_1\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "invalid host \"mx_1\"" } } },

	/* ---- addresses */
	{ "instances without an address",
	  OPEN
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <domain name=\"a.test\"/>\n"
	  "  </instance>\n"
	  "  <instance myhostname=\"mail.b.test\"/>\n"
	  CLOSE,
	  0, { { 2, "instance \"a\" has no <address>" },
	       { 5, "instance \"mail.b.test\" has no <address>" } } },
	{ "empty address",
	  OPEN
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>  </address>\n"
	  "    <address/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "empty <address>" },
	       { 4, "empty <address>" },
	       { 2, "instance \"a\" has no <address>" } } },
	{ "invalid addresses",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.256</address>\n"
	  "    <address>[192.0.2.1</address>\n"
	  "    <address>fe80::1%eth0</address>\n"
	  "    <address>mail.a.test</address>\n"
	  "    <address>192.0.2.01</address>\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "invalid address \"192.0.2.256\"" },
	       { 4, "invalid address \"[192.0.2.1\"" },
	       { 5, "invalid address \"fe80::1%eth0\"" },
	       { 6, "invalid address \"mail.a.test\"" },
	       { 7, "invalid address \"192.0.2.01\"" } } },
	{ "IPv4-mapped IPv6 addresses",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>::ffff:192.0.2.1</address>\n"
	  "    <address>[::FFFF:c000:202]</address>\n"
	  "    <address>192.0.2.9</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "address \"::ffff:192.0.2.1\" is IPv4-mapped: write it as IPv4" },
	       { 4, "address \"[::FFFF:c000:202]\" is IPv4-mapped: write it as IPv4" } } },
	{ "unspecified addresses",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>0.0.0.0</address>\n"
	  "    <address>::</address>\n"
	  "    <address>[::]</address>\n"
	  "    <address>192.0.2.9</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "address \"0.0.0.0\" is unspecified: give the instance's own address" },
	       { 4, "address \"::\" is unspecified: give the instance's own address" },
	       { 5, "address \"[::]\" is unspecified: give the instance's own address" } } },
	{ "multicast addresses",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>224.0.0.1</address>\n"
	  "    <address>[ff02::1]</address>\n"
	  "    <address>192.0.2.9</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "address \"224.0.0.1\" is multicast, not a host address" },
	       { 4, "address \"[ff02::1]\" is multicast, not a host address" } } },
	{ "broadcast address",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>255.255.255.255</address>\n"
	  "    <address>192.0.2.9</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "address \"255.255.255.255\" is broadcast, not a host address" } } },
	{ "two IPv4 addresses",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <address>[2001:db8::1]</address>\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 5, "a second IPv4 address: an instance has at most one IPv4 and one IPv6 address" } } },
	{ "two IPv6 addresses",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>[2001:db8::1]</address>\n"
	  "    <address>2001:db8::2</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "a second IPv6 address: an instance has at most one IPv4 and one IPv6 address" } } },
	{ "the same address twice in one instance",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <address>[2001:DB8::5]</address>\n"
	  "    <address>[192.0.2.1]</address>\n"
	  "    <address> 2001:db8:0::5 </address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 5, "address 192.0.2.1 is listed twice in this instance" },
	       { 6, "address 2001:db8::5 is listed twice in this instance" } } },
	{ "one address in two instances",
	  OPEN
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <address>2001:db8::1</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
	  "    <address>[192.0.2.1]</address>\n"
	  "  </instance>\n"
	  "  <instance myhostname=\"mail.c.test\">\n"
	  "    <address>2001:DB8:0:0::1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 7, "address 192.0.2.1 is also used by instance \"a\" (line 2)" },
	       { 10, "address 2001:db8::1 is also used by instance \"a\" (line 2)" } } },

	/* ---- domains and deliver */
	{ "domain without a name",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain deliver=\"smtp:[192.0.2.9]\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "<domain> needs a name attribute" } } },
	{ "invalid domain names",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"bad_domain.test\"/>\n"
	  "    <domain name=\"localhost\"/>\n"
	  "    <domain name=\"example.123\"/>\n"
	  "    <domain name=\"a..test\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "invalid domain name \"bad_domain.test\"" },
	       { 5, "invalid domain name \"localhost\"" },
	       { 6, "invalid domain name \"example.123\"" },
	       { 7, "invalid domain name \"a..test\"" } } },
	{ "non-ASCII domain",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"b\xc3\xbc" "cher.test\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "domain \"b\\xc3\\xbccher.test\" is not ASCII: write its A-label (xn--...)" } } },
	{ "domain twice in one instance",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"example.com\"/>\n"
	  "    <domain name=\"Example.COM\" deliver=\"smtp:[192.0.2.9]\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 5, "domain example.com is listed twice in this instance" } } },
	{ "domain in two instances, in other case",
	  OPEN
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"EXAMPLE.com\"/>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "    <domain name=\"example.COM\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 8, "domain example.com is also hosted by instance \"a\" (line 2)" } } },
	{ "invalid deliver on a domain",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"a.test\" deliver=\"relay:x.test\"/>\n"
	  "    <domain name=\"b.test\" deliver=\"smtp:[2001:db8::1\"/>\n"
	  "    <domain name=\"c.test\" deliver=\"lmtp:[192.0.2.9]:0\"/>\n"
	  "    <domain name=\"d.test\" deliver=\"lmtp:2001:db8::1\"/>\n"
	  "    <domain name=\"e.test\" deliver=\"\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "invalid deliver \"relay:x.test\" for \"a.test\": unknown transport \"relay\"" },
	       { 5, "invalid deliver \"smtp:[2001:db8::1\" for \"b.test\": missing \"]\" in \"[2001:db8::1\"" },
	       { 6, "invalid deliver \"lmtp:[192.0.2.9]:0\" for \"c.test\": bad port \"0\"" },
	       { 7, "invalid deliver \"lmtp:2001:db8::1\" for \"d.test\": IPv6 address must be in brackets: \"2001:db8::1\"" },
	       { 8, "invalid deliver \"\" for \"e.test\": empty next hop" } } },
	{ "invalid deliver on an instance, reported once",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\" deliver=\"lmtp:unix:run/lmtp\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"a.test\"/>\n"
	  "    <domain name=\"b.test\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "invalid deliver \"lmtp:unix:run/lmtp\" for this <instance>: socket path \"run/lmtp\" is not absolute" } } },
	{ "invalid deliver on <defaults>, reported once",
	  OPEN
	  "  <defaults deliver=\"smtp:unix:/run/x\"/>\n"
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"a.test\"/>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "    <domain name=\"b.test\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 2, "invalid deliver \"smtp:unix:/run/x\" for <defaults>: smtp over a unix socket is not supported" } } },

	/* ---- <defaults> and <param> */
	{ "<defaults> after an instance",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <defaults/>\n"
	  CLOSE,
	  0, { { 5, "<defaults> must come once, before the first <instance>" } } },
	{ "<defaults> twice",
	  OPEN
	  "  <defaults/>\n"
	  "  <defaults>\n"
	  "    <param name=\"mynetworks\" value=\"127.0.0.0/8\"/>\n"
	  "  </defaults>\n"
	  CLOSE,
	  0, { { 3, "<defaults> must come once, before the first <instance>" } } },
	{ "param without a name or a value",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"mynetworks\"/>\n"
	  "  </defaults>\n"
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param value=\"10240000\"/>\n"
	  "    <param/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "<param> needs a name and a value attribute" },
	       { 7, "<param> needs a name and a value attribute" },
	       { 8, "<param> needs a name and a value attribute" } } },
	{ "unknown parameters",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"virtual_alias_maps\" value=\"hash:/etc/x\"/>\n"
	  "  </defaults>\n"
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"relay_host\" value=\"[192.0.2.9]\"/>\n"
	  "    <param name=\"Mynetworks\" value=\"127.0.0.0/8\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "unknown parameter \"virtual_alias_maps\"" },
	       { 7, "unknown parameter \"relay_host\"" },
	       { 8, "unknown parameter \"Mynetworks\"" } } },
	{ "identity parameters in <param>",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"inet_interfaces\" value=\"all\"/>\n"
	  "  </defaults>\n"
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"myhostname\" value=\"mail.b.test\"/>\n"
	  "    <param name=\"inet_interfaces\" value=\"192.0.2.1\"/>\n"
	  "    <param name=\"instance_name\" value=\"b\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "parameter inet_interfaces comes from the <instance> attributes and addresses, not from <param>" },
	       { 7, "parameter myhostname comes from the <instance> attributes and addresses, not from <param>" },
	       { 8, "parameter inet_interfaces comes from the <instance> attributes and addresses, not from <param>" },
	       { 9, "parameter instance_name comes from the <instance> attributes and addresses, not from <param>" } } },
	{ "manager-only parameters in <param>",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"config_directory\" value=\"/etc/vhostmta/a\"/>\n"
	  "  </defaults>\n"
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"sibling_table\" value=\"/run/vhostmta/siblings\"/>\n"
	  "    <param name=\"transport_table\" value=\"/etc/vhostmta/a/transport\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "parameter config_directory is written by vhostmta, not set in the map" },
	       { 7, "parameter sibling_table is written by vhostmta, not set in the map" },
	       { 8, "parameter transport_table is written by vhostmta, not set in the map" } } },
	{ "parameter set twice",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"mynetworks\" value=\"127.0.0.0/8\"/>\n"
	  "    <param name=\"mynetworks\" value=\"10.0.0.0/8\"/>\n"
	  "  </defaults>\n"
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"message_size_limit\" value=\"20480000\"/>\n"
	  "    <param name=\"mynetworks\" value=\"10.0.0.0/8\"/>\n"
	  "    <param name=\"message_size_limit\" value=\"30720000\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "parameter mynetworks is set twice in <defaults> (first at line 3)" },
	       { 10, "parameter message_size_limit is set twice in this <instance> (first at line 8)" } } },
	{ "message_size_limit below its minimum",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"message_size_limit\" value=\"10\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "message_size_limit: invalid value \"10\": value 10 is below the minimum 1000" } } },
	{ "smtpd_timeout with a bad unit",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"smtpd_timeout\" value=\"10x\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "smtpd_timeout: invalid value \"10x\": \"10x\" is not a time (a number with an optional unit s, m, h, d or w)" } } },
	{ "mynetworks with host bits",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"mynetworks\" value=\"127.0.0.0/8 192.168.1.1/24\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "mynetworks: invalid value \"127.0.0.0/8 192.168.1.1/24\": non-null host address bits in \"192.168.1.1/24\", perhaps use \"192.168.1.0/24\"" } } },
	{ "smtp_bind_address with an IPv6 value",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"smtp_bind_address\" value=\"2001:db8::1\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "smtp_bind_address: invalid value \"2001:db8::1\": \"2001:db8::1\" is not an IPv4 address" } } },
	{ "smtp_tls_security_level not one of its choices",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"smtp_tls_security_level\" value=\"sometimes\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "smtp_tls_security_level: invalid value \"sometimes\": \"sometimes\" is not one of none, may, encrypt or verify" } } },
	{ "smtpd_tls_security_level = encrypt without a certificate",
	  OPEN
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <param name=\"smtpd_tls_security_level\" value=\"encrypt\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 4, "smtpd_tls_security_level = encrypt needs smtpd_tls_cert_file (instance \"a\")" } } },
	{ "smtp_bind_address(6) of another instance",
	  OPEN
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <address>2001:db8::1</address>\n"
	  "    <param name=\"smtp_bind_address\" value=\"192.0.2.1\"/>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "    <address>2001:db8::2</address>\n"
	  "    <param name=\"smtp_bind_address\" value=\"192.0.2.1\"/>\n"
	  "    <param name=\"smtp_bind_address6\" value=\"[2001:DB8::1]\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 10, "smtp_bind_address 192.0.2.1 is the address of instance \"a\" (line 2) (in instance \"b\")" },
	       { 11, "smtp_bind_address6 2001:db8::1 is the address of instance \"a\" (line 2) (in instance \"b\")" } } },
	{ "smtp_bind_address in <defaults> that is an instance's address",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"smtp_bind_address\" value=\"192.0.2.1\"/>\n"
	  "  </defaults>\n"
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"c\" myhostname=\"mail.c.test\">\n"
	  "    <address>192.0.2.3</address>\n"
	  "    <param name=\"smtp_bind_address\" value=\"192.0.2.3\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "smtp_bind_address 192.0.2.1 is the address of instance \"a\" (line 5) (in instance \"b\")" } } },
	{ "an error in <defaults> is reported once for three instances",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"smtpd_timeout\" value=\"1y\"/>\n"
	  "  </defaults>\n"
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "  </instance>\n"
	  "  <instance name=\"c\" myhostname=\"mail.c.test\">\n"
	  "    <address>192.0.2.3</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "smtpd_timeout: invalid value \"1y\": \"1y\" is not a time (a number with an optional unit s, m, h, d or w)" } } },
	{ "two bad <defaults> params on one line, two instances",
	  OPEN
	  "  <defaults><param name=\"message_size_limit\" value=\"10\"/><param name=\"smtpd_helo_required\" value=\"maybe\"/></defaults>\n"
	  "  <instance name=\"a\" myhostname=\"mail.a.test\"><address>192.0.2.1</address></instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\"><address>192.0.2.2</address></instance>\n"
	  CLOSE,
	  0, { { 2, "message_size_limit: invalid value \"10\": value 10 is below the minimum 1000" },
	       { 2, "smtpd_helo_required: invalid value \"maybe\": \"maybe\" is not yes or no" } } },
	{ "many errors in one run",
	  OPEN
	  "  <defaults>\n"
	  "    <param name=\"smtpd_recipient_limit\" value=\"0\"/>\n"
	  "  </defaults>\n"
	  "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.300</address>\n"
	  "    <domain name=\"shop.test\"/>\n"
	  "    <domain name=\"bad_name.test\"/>\n"
	  "    <aliases/>\n"
	  "  </instance>\n"
	  "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
	  "    <address>192.0.2.2</address>\n"
	  "    <domain name=\"SHOP.test\"/>\n"
	  "    <param name=\"smtpd_helo_required\" value=\"sometimes\"/>\n"
	  "    <param name=\"relay_host\" value=\"x\"/>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, "smtpd_recipient_limit: invalid value \"0\": value 0 is below the minimum 1" },
	       { 6, "invalid address \"192.0.2.300\"" },
	       { 8, "invalid domain name \"bad_name.test\"" },
	       { 9, "unexpected element <aliases> in <instance>" },
	       { 5, "instance \"a\" has no <address>" },
	       { 13, "domain shop.test is also hosted by instance \"a\" (line 5)" },
	       { 14, "smtpd_helo_required: invalid value \"sometimes\": \"sometimes\" is not yes or no" },
	       { 15, "unknown parameter \"relay_host\"" } } },

	/* ---- not well-formed: libxml2's words, our line */
	{ "not well-formed: tag mismatch",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "    <domain name=\"a.test\">\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 5, LIBXML } } },
	{ "not well-formed: unquoted attribute",
	  OPEN
	  "\n"
	  "  <instance myhostname=mail.a.test>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, LIBXML } } },
	{ "not well-formed: content after the root",
	  OPEN
	  CLOSE
	  "<map/>\n",
	  0, { { 3, LIBXML } } },
	{ "not well-formed: undefined entity",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1&nbsp;</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, { { 3, LIBXML } } },
	{ "undefined namespace prefix: reported, then walked",
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  "  <v:instance myhostname=\"mail.b.test\"/>\n"
	  CLOSE,
	  0, { { 5, LIBXML },
	       { 5, "element <v:instance> is not in the map namespace " NS } } },
};

static void test_bad_map(void **state)
{
	const struct bad_case *c = *state;
	struct recorder rec = { .n = 0 };
	struct map m;
	char path[4096];

	write_map(c->text, c->len ? c->len : strlen(c->text), path, sizeof path);
	bool ok = load(path, &m, &rec);
	unlink(path); /* before any assertion can end the test */
	assert_diags(c->name, &rec, c->want, path);
	if (ok)
		fail_msg("%s: map_load returned true", c->name);
	assert_int_not_equal(rec.n, 0);
	map_free(&m);
	recorder_free(&rec);
}

/* ---- valid maps -------------------------------------------------------- */

static const struct map_instance *find_instance(const struct map *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->inst[i].name && strcmp(m->inst[i].name, name) == 0)
			return &m->inst[i];
	fail_msg("no instance named \"%s\"", name);
	return NULL;
}

static const struct map_domain *find_domain(const struct map_instance *in, const char *name)
{
	for (size_t i = 0; i < in->ndomains; i++)
		if (strcmp(in->domains[i].name, name) == 0)
			return &in->domains[i];
	fail_msg("instance \"%s\" has no domain \"%s\"", in->name, name);
	return NULL;
}

/* assert_deliver: the domain's canonical next hop, NULL for outbound only. */
static void assert_deliver(const struct map_instance *in, const char *domain, const char *want)
{
	const struct map_domain *d = find_domain(in, domain);

	if (want == NULL && d->deliver != NULL)
		fail_msg("%s: deliver is \"%s\", expected none", domain, d->deliver);
	if (want != NULL && (d->deliver == NULL || strcmp(d->deliver, want) != 0))
		fail_msg("%s: deliver is %s%s%s, expected \"%s\"", domain, d->deliver ? "\"" : "",
			 d->deliver ? d->deliver : "none", d->deliver ? "\"" : "", want);
}

static void assert_ifaces(const struct map_instance *in, const char *want)
{
	struct buf b = BUF_INIT;

	map_inet_interfaces(in, &b);
	assert_string_equal(buf_cstr(&b), want);
	buf_free(&b);
}

static void assert_param(const struct map_param *p, const char *name, const char *value,
			 unsigned long line)
{
	assert_string_equal(param_table[p->id].name, name);
	assert_string_equal(p->value, value);
	assert_int_equal(p->line, line);
}

static void test_example_map(void **state)
{
	struct map m;
	const struct map_instance *in;

	/* The build embeds templates/example-map.xml byte for byte. */
	load_valid("templates/example-map.xml", embed_example_map_xml, &m);
	assert_int_equal(m.n, 3);
	assert_int_equal(m.ndomains, 5);
	assert_int_equal(m.ndefaults, 2);
	assert_param(&m.defaults[0], "mynetworks", "127.0.0.0/8 [::1]/128", 9);
	assert_param(&m.defaults[1], "smtpd_listen_port", "2525", 10);

	in = find_instance(&m, "alpha");
	assert_string_equal(in->myhostname, "mail.alpha.test");
	assert_null(in->host);
	assert_int_equal(in->line, 13);
	assert_int_equal(in->naddrs, 1);
	assert_string_equal(in->addr_text[0], "127.0.0.2");
	assert_int_equal(in->addrs[0].family, AF_INET);
	assert_int_equal(in->ndomains, 2);
	assert_deliver(in, "alpha.test", "smtp:[127.0.0.100]:2526");
	assert_deliver(in, "alpha-shop.test", NULL);
	assert_int_equal(in->nparams, 1);
	assert_param(&in->params[0], "smtp_bind_address", "127.0.0.2", 17);

	in = find_instance(&m, "bravo");
	assert_string_equal(in->myhostname, "mail.bravo.test");
	assert_int_equal(in->line, 20);
	assert_string_equal(in->addr_text[0], "127.0.0.3");
	assert_int_equal(in->ndomains, 1);
	assert_deliver(in, "bravo.test", "lmtp:[127.0.0.100]:2424");
	assert_int_equal(in->nparams, 2);
	assert_param(&in->params[1], "message_size_limit", "20480000", 24);

	in = find_instance(&m, "charlie");
	assert_string_equal(in->myhostname, "mail.charlie.test");
	assert_int_equal(in->line, 27);
	assert_string_equal(in->addr_text[0], "127.0.0.4");
	assert_int_equal(in->ndomains, 2);
	assert_deliver(in, "charlie.test", NULL);
	assert_deliver(in, "charlie.example", NULL);
	for (size_t i = 0; i < m.n; i++)
		assert_true(map_on_host(&m.inst[i], "any-host"));
	map_free(&m);
}

static void test_ipv6_brackets(void **state)
{
	struct map m;
	const struct map_instance *in;

	load_valid("IPv6 with and without brackets",
		   OPEN
		   "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
		   "    <address>[2001:DB8::5]</address>\n"
		   "    <address>[192.0.2.5]</address>\n"
		   "  </instance>\n"
		   "  <instance name=\"b\" myhostname=\"mail.b.test\">\n"
		   "    <address>\n"
		   "      2001:db8:0:0:0:0:0:6\n"
		   "    </address>\n"
		   "  </instance>\n"
		   "  <instance name=\"c\" myhostname=\"mail.c.test\">\n"
		   "    <address>[IPv6:2001:DB8::7]</address>\n"
		   "  </instance>\n"
		   CLOSE,
		   &m);
	assert_int_equal(m.n, 3);
	in = find_instance(&m, "a");
	assert_int_equal(in->naddrs, 2);
	assert_int_equal(in->addrs[0].family, AF_INET6);
	assert_string_equal(in->addr_text[0], "2001:db8::5");
	assert_int_equal(in->addrs[1].family, AF_INET);
	assert_string_equal(in->addr_text[1], "192.0.2.5");
	assert_ifaces(in, "2001:db8::5 192.0.2.5");
	in = find_instance(&m, "b");
	assert_int_equal(in->naddrs, 1);
	assert_string_equal(in->addr_text[0], "2001:db8::6");
	assert_ifaces(in, "2001:db8::6");
	in = find_instance(&m, "c"); /* the RFC 5321 address literal form */
	assert_string_equal(in->addr_text[0], "2001:db8::7");
	map_free(&m);
}

static void test_hosts(void **state)
{
	struct map m;
	const struct map_instance *a, *b, *c;

	/* One myhostname on two machines is fine: each has its own. */
	load_valid("host filtering",
		   OPEN
		   "  <instance name=\"a-mx1\" myhostname=\"mail.a.test\" host=\"mx1\">\n"
		   "    <address>192.0.2.1</address>\n"
		   "  </instance>\n"
		   "  <instance name=\"a-mx2\" myhostname=\"mail.a.test\" host=\"MX2.Example.net\">\n"
		   "    <address>192.0.2.2</address>\n"
		   "  </instance>\n"
		   "  <instance name=\"c\" myhostname=\"mail.c.test\">\n"
		   "    <address>192.0.2.3</address>\n"
		   "  </instance>\n"
		   CLOSE,
		   &m);
	assert_int_equal(m.n, 3);
	a = find_instance(&m, "a-mx1");
	b = find_instance(&m, "a-mx2");
	c = find_instance(&m, "c");
	assert_string_equal(a->host, "mx1");
	assert_string_equal(b->host, "mx2.example.net");
	assert_null(c->host);
	assert_true(map_on_host(a, "mx1"));
	assert_true(map_on_host(a, "MX1"));
	assert_false(map_on_host(a, "mx2.example.net"));
	assert_false(map_on_host(b, "mx1"));
	assert_true(map_on_host(b, "mx2.EXAMPLE.net"));
	assert_true(map_on_host(c, "mx1"));
	assert_true(map_on_host(c, "mx2.example.net"));
	assert_true(map_on_host(a, NULL));
	assert_true(map_on_host(b, NULL));
	map_free(&m);
}

static void test_deliver_inheritance(void **state)
{
	struct map m;
	const struct map_instance *in;

	load_valid("deliver inheritance",
		   OPEN
		   "  <defaults deliver=\"smtp:[192.0.2.100]:2525\"/>\n"
		   "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
		   "    <address>192.0.2.1</address>\n"
		   "    <domain name=\"inherit.test\"/>\n"
		   "    <domain name=\"own.test\" deliver=\"lmtp:unix:/run/dovecot/lmtp\"/>\n"
		   "    <domain name=\"none.test\" deliver=\"none\"/>\n"
		   "    <domain name=\"mx.test\" deliver=\"relay.example.net\"/>\n"
		   "  </instance>\n"
		   "  <instance name=\"b\" myhostname=\"mail.b.test\" deliver=\"lmtp:[192.0.2.101]\">\n"
		   "    <address>192.0.2.2</address>\n"
		   "    <domain name=\"b1.test\"/>\n"
		   "    <domain name=\"b2.test\" deliver=\"smtp:[2001:DB8::25]:2525\"/>\n"
		   "    <domain name=\"b3.test\" deliver=\"none\"/>\n"
		   "  </instance>\n"
		   "  <instance name=\"c\" myhostname=\"mail.c.test\" deliver=\"none\">\n"
		   "    <address>192.0.2.3</address>\n"
		   "    <domain name=\"c1.test\"/>\n"
		   "    <domain name=\"c2.test\" deliver=\"lmtp:192.0.2.102:24\"/>\n"
		   "  </instance>\n"
		   CLOSE,
		   &m);
	in = find_instance(&m, "a");
	assert_deliver(in, "inherit.test", "smtp:[192.0.2.100]:2525");
	assert_deliver(in, "own.test", "lmtp:unix:/run/dovecot/lmtp");
	assert_deliver(in, "none.test", NULL);
	assert_deliver(in, "mx.test", "smtp:relay.example.net");
	in = find_instance(&m, "b");
	assert_deliver(in, "b1.test", "lmtp:[192.0.2.101]");
	assert_deliver(in, "b2.test", "smtp:[2001:db8::25]:2525");
	assert_deliver(in, "b3.test", NULL);
	in = find_instance(&m, "c");
	assert_deliver(in, "c1.test", NULL);
	assert_deliver(in, "c2.test", "lmtp:[192.0.2.102]");
	assert_int_equal(m.ndomains, 9);
	map_free(&m);
}

static void test_defaults_deliver_none(void **state)
{
	struct map m;

	/* "none" on <defaults> means what it means on <instance>, not a
	 * relay host called "none". */
	load_valid("defaults deliver none",
		   OPEN
		   "  <defaults deliver=\"none\"/>\n"
		   "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
		   "    <address>192.0.2.1</address>\n"
		   "    <domain name=\"a.test\"/>\n"
		   "    <domain name=\"b.test\" deliver=\"smtp:[192.0.2.9]\"/>\n"
		   "  </instance>\n"
		   CLOSE,
		   &m);
	assert_deliver(find_instance(&m, "a"), "a.test", NULL);
	assert_deliver(find_instance(&m, "a"), "b.test", "smtp:[192.0.2.9]");
	map_free(&m);
}

static void test_lower_case(void **state)
{
	struct map m;
	const struct map_instance *in;

	load_valid("names lower-cased",
		   OPEN
		   "  <instance myhostname=\"MAIL.Example.COM\" host=\"MX1.Example.NET\">\n"
		   "    <address>192.0.2.1</address>\n"
		   "    <domain name=\"Example.COM\"/>\n"
		   "    <domain name=\"XN--BCHER-KVA.Test\" deliver=\"SMTP:[Relay.Example.NET]\"/>\n"
		   "  </instance>\n"
		   CLOSE,
		   &m);
	assert_int_equal(m.n, 1);
	in = &m.inst[0];
	assert_string_equal(in->myhostname, "mail.example.com");
	assert_string_equal(in->name, "mail.example.com"); /* name defaults to it */
	assert_string_equal(in->host, "mx1.example.net");
	assert_int_equal(in->ndomains, 2);
	assert_string_equal(in->domains[0].name, "example.com");
	assert_string_equal(in->domains[1].name, "xn--bcher-kva.test");
	assert_int_equal(in->domains[1].line, 5);
	assert_non_null(in->domains[1].deliver);
	map_free(&m);
}

static void test_tolerated_content(void **state)
{
	struct map m;
	const struct map_instance *in;

	/* A prefixed namespace, comments, processing instructions, blank
	 * CDATA, a 64-character name and every character a name may hold. */
	load_valid("tolerated content",
		   "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<!-- a map -->\n"
		   "<m:map xmlns:m=\"" NS "\">\n"
		   "  <?editor keep?>\n"
		   "  <m:defaults>\n"
		   "    <!-- none yet -->\n"
		   "  </m:defaults>\n"
		   "  <m:instance name=\"" NAME64 "\" myhostname=\"mail.a.test\">\n"
		   "    <m:address>192.0.2.1</m:address><![CDATA[  ]]>\n"
		   "  </m:instance>\n"
		   "  <m:instance name=\"Az09._-\" myhostname=\"mail.b.test\">\n"
		   "    <m:address>192.0.2.2</m:address>\n"
		   "  </m:instance>\n"
		   "</m:map>\n",
		   &m);
	assert_int_equal(m.n, 2);
	in = find_instance(&m, NAME64);
	assert_int_equal(in->line, 8);
	in = find_instance(&m, "Az09._-");
	assert_string_equal(in->addr_text[0], "192.0.2.2");
	map_free(&m);
}

static void test_params_recorded(void **state)
{
	struct map m;
	const struct map_instance *in;

	/* An instance may set what <defaults> set: its value comes later. */
	load_valid("params recorded",
		   OPEN
		   "  <defaults>\n"
		   "    <param name=\"mynetworks\" value=\"127.0.0.0/8\"/>\n"
		   "    <param name=\"smtpd_timeout\" value=\"5m\"/>\n"
		   "  </defaults>\n"
		   "  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
		   "    <address>192.0.2.1</address>\n"
		   "    <param name=\"mynetworks\" value=\"10.0.0.0/8 [2001:db8::]/32\"/>\n"
		   "    <param name=\"smtp_bind_address\" value=\"192.0.2.1\"/>\n"
		   "  </instance>\n"
		   CLOSE,
		   &m);
	assert_int_equal(m.ndefaults, 2);
	assert_param(&m.defaults[0], "mynetworks", "127.0.0.0/8", 3);
	assert_param(&m.defaults[1], "smtpd_timeout", "5m", 4);
	in = find_instance(&m, "a");
	assert_int_equal(in->nparams, 2);
	assert_param(&in->params[0], "mynetworks", "10.0.0.0/8 [2001:db8::]/32", 8);
	assert_param(&in->params[1], "smtp_bind_address", "192.0.2.1", 9);
	map_free(&m);
}

static void test_empty_map(void **state)
{
	struct map m;

	load_valid("empty map", "<map xmlns=\"" NS "\"/>\n", &m);
	assert_int_equal(m.n, 0);
	assert_int_equal(m.ndomains, 0);
	map_free(&m);
}

/* ---- hostile input ----------------------------------------------------- */

enum hostile_kind { H_TEXT, H_DEEP, H_SPARSE, H_DIR, H_MISSING, H_FIFO };

struct hostile_case {
	const char *name;
	enum hostile_kind kind;
	const char *text; /* H_TEXT */
	size_t len;       /* 0: strlen(text) */
	unsigned long line;
	const char *msg; /* NULL: computed by the test */
};

#define DOCTYPE_MSG "a DOCTYPE is not allowed in a map (no DTDs, no entities)"
#define SPARSE_SIZE (100ull << 20)
#define DEEP_LEVELS 10000

static const struct hostile_case hostile_cases[] = {
	{ "external entity", H_TEXT,
	  "<?xml version=\"1.0\"?>\n"
	  "<!DOCTYPE map [\n"
	  "  <!ENTITY e SYSTEM \"file:///etc/passwd\">\n"
	  "]>\n"
	  OPEN
	  "  <instance myhostname=\"mail.a.test\" name=\"&e;\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, 2, DOCTYPE_MSG },
	{ "billion laughs", H_TEXT,
	  "<?xml version=\"1.0\"?>\n"
	  "<!DOCTYPE map [\n"
	  " <!ENTITY l0 \"lol\">\n"
	  " <!ENTITY l1 \"&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;\">\n"
	  " <!ENTITY l2 \"&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;\">\n"
	  " <!ENTITY l3 \"&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;&l2;\">\n"
	  " <!ENTITY l4 \"&l3;&l3;&l3;&l3;&l3;&l3;&l3;&l3;&l3;&l3;\">\n"
	  " <!ENTITY l5 \"&l4;&l4;&l4;&l4;&l4;&l4;&l4;&l4;&l4;&l4;\">\n"
	  " <!ENTITY l6 \"&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;&l5;\">\n"
	  " <!ENTITY l7 \"&l6;&l6;&l6;&l6;&l6;&l6;&l6;&l6;&l6;&l6;\">\n"
	  " <!ENTITY l8 \"&l7;&l7;&l7;&l7;&l7;&l7;&l7;&l7;&l7;&l7;\">\n"
	  " <!ENTITY l9 \"&l8;&l8;&l8;&l8;&l8;&l8;&l8;&l8;&l8;&l8;\">\n"
	  "]>\n"
	  OPEN
	  "  <instance myhostname=\"mail.a.test\" name=\"&l9;\"/>\n"
	  CLOSE,
	  0, 2, DOCTYPE_MSG },
	{ "external DTD", H_TEXT,
	  "<?xml version=\"1.0\"?>\n"
	  "\n"
	  "<!DOCTYPE map SYSTEM \"http://127.0.0.1:9/map.dtd\">\n"
	  OPEN
	  CLOSE,
	  0, 3, DOCTYPE_MSG },
	{ "external parameter entity", H_TEXT,
	  "<!DOCTYPE map [\n"
	  "  <!ENTITY % p SYSTEM \"http://127.0.0.1:9/p.dtd\">\n"
	  "  %p;\n"
	  "]>\n"
	  OPEN
	  CLOSE,
	  0, 1, DOCTYPE_MSG },
	{ "10,000-deep nesting", H_DEEP, NULL, 0, MAP_MAX_DEPTH + 1, NULL },
	{ "invalid UTF-8 in an attribute", H_TEXT,
	  OPEN
	  "  <instance myhostname=\"mail.a.test\" name=\"a\xff\xfe\">\n"
	  "    <address>192.0.2.1</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  0, 2, LIBXML },
	{ "a NUL byte", H_TEXT,
	  OPEN
	  "  <instance myhostname=\"mail.a.test\">\n"
	  "    <address>192.0.2.1\0</address>\n"
	  "  </instance>\n"
	  CLOSE,
	  sizeof(OPEN "  <instance myhostname=\"mail.a.test\">\n"
		 "    <address>192.0.2.1\0</address>\n"
		 "  </instance>\n" CLOSE) - 1,
	  3, LIBXML },
	{ "an empty file", H_TEXT, "", 0, 0, "is empty" },
	{ "a 100 MB file", H_SPARSE, NULL, 0, 0, NULL },
	{ "a directory", H_DIR, NULL, 0, 0, "is a directory" },
	{ "a missing file", H_MISSING, NULL, 0, 0, "cannot open: No such file or directory" },
	{ "a FIFO without a writer", H_FIFO, NULL, 0, 0, "is empty" },
};

/* deep_map: <map> and then one more element per line, DEEP_LEVELS deep. */
static char *deep_map(size_t *len)
{
	struct buf b = BUF_INIT;

	buf_puts(&b, OPEN);
	for (int i = 1; i < DEEP_LEVELS; i++)
		buf_puts(&b, "<instance>\n");
	for (int i = 1; i < DEEP_LEVELS; i++)
		buf_puts(&b, "</instance>");
	buf_puts(&b, "\n" CLOSE);
	*len = b.len;
	return buf_steal(&b);
}

static double now(void)
{
	struct timespec ts;

	assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* make_hostile: the case's file (or directory, or nothing) at path. */
static void make_hostile(const struct hostile_case *c, char *path, size_t pathlen)
{
	char *text;
	size_t len;
	int fd;

	switch (c->kind) {
	case H_TEXT:
		write_map(c->text, c->len ? c->len : strlen(c->text), path, pathlen);
		break;
	case H_DEEP:
		text = deep_map(&len);
		write_map(text, len, path, pathlen);
		free(text);
		break;
	case H_SPARSE:
		write_map("", 0, path, pathlen);
		fd = open(path, O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, (off_t)SPARSE_SIZE), 0);
		assert_int_equal(close(fd), 0);
		break;
	case H_DIR:
	case H_MISSING:
	case H_FIFO:
		snprintf(path, pathlen, "%s/vhostmta-test_map-XXXXXX", tmp_dir());
		assert_non_null(mkdtemp(path));
		if (c->kind == H_DIR)
			break;
		strncat(path, "/map.xml", pathlen - strlen(path) - 1);
		if (c->kind == H_FIFO)
			assert_int_equal(mkfifo(path, 0600), 0);
		break;
	}
}

static void remove_hostile(const struct hostile_case *c, const char *path)
{
	if (c->kind == H_DIR) {
		rmdir(path);
		return;
	}
	unlink(path);
	if (c->kind == H_MISSING || c->kind == H_FIFO) {
		char dir[4096];
		snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(path, '/') - path), path);
		rmdir(dir);
	}
}

static void test_hostile(void **state)
{
	const struct hostile_case *c = *state;
	struct recorder rec = { .n = 0 };
	struct expect want[2] = { { c->line, c->msg }, { 0, NULL } };
	char path[4096], msg[200];
	struct map m;

	if (c->kind == H_DEEP) {
		snprintf(msg, sizeof msg, "elements nested more than %u deep", MAP_MAX_DEPTH);
		want[0].msg = msg;
	} else if (c->kind == H_SPARSE) {
		snprintf(msg, sizeof msg, "map is %llu bytes, more than the limit of %zu",
			 SPARSE_SIZE, (size_t)MAP_MAX_SIZE);
		want[0].msg = msg;
	}
	make_hostile(c, path, sizeof path);

	alarm(60); /* a real hang kills the run (SIGALRM) instead of stalling it */
	double t0 = now();
	bool ok = load(path, &m, &rec);
	double took = now() - t0;
	alarm(0);
	remove_hostile(c, path); /* the path text stays for the comparison */

	assert_diags(c->name, &rec, want, path);
	if (ok)
		fail_msg("%s: map_load returned true", c->name);
	/* Generous: only a real hang (or an expansion) takes this long. */
	if (took >= 2.0)
		fail_msg("%s: refused after %.2f s", c->name, took);
	assert_int_equal(m.n, 0);
	map_free(&m);
	recorder_free(&rec);
}

/* ---- main -------------------------------------------------------------- */

int main(void)
{
	static const struct CMUnitTest valid[] = {
		cmocka_unit_test(test_example_map),
		cmocka_unit_test(test_ipv6_brackets),
		cmocka_unit_test(test_hosts),
		cmocka_unit_test(test_deliver_inheritance),
		cmocka_unit_test(test_defaults_deliver_none),
		cmocka_unit_test(test_lower_case),
		cmocka_unit_test(test_tolerated_content),
		cmocka_unit_test(test_params_recorded),
		cmocka_unit_test(test_empty_map),
	};
	enum { NBAD = NELEM(bad_cases), NHOSTILE = NELEM(hostile_cases) };
	struct CMUnitTest bad[NBAD], hostile[NHOSTILE];
	int failed = 0;

	/* One cmocka test per table row, named after it. */
	for (size_t i = 0; i < NBAD; i++)
		bad[i] = (struct CMUnitTest){ bad_cases[i].name, test_bad_map, NULL, NULL,
					      (void *)&bad_cases[i] };
	for (size_t i = 0; i < NHOSTILE; i++)
		hostile[i] = (struct CMUnitTest){ hostile_cases[i].name, test_hostile, NULL, NULL,
						  (void *)&hostile_cases[i] };

	failed += _cmocka_run_group_tests("map_load: bad maps", bad, NBAD, NULL, NULL);
	failed += cmocka_run_group_tests_name("map_load: valid maps", valid, NULL, NULL);
	failed += _cmocka_run_group_tests("map_load: hostile input", hostile, NHOSTILE, NULL, NULL);
	xmlCleanupParser();
	return failed ? 1 : 0;
}
