/* test_dns.c: instances/dns.c. The answer parser on hand-built packets
 * (sorting, null MX, invalid and overlong names, NODATA, CNAME chains,
 * caps and duplicates, every truncation, pointer loops, bad lengths, bad
 * headers, random mutations); dns_resolver values; and the resolver on
 * its event loop against real servers on loopback: dnsmasq (skipped when
 * it is not installed) for MX, null MX, implicit MX, NXDOMAIN, REFUSED,
 * CNAMEs, caps and shuffling, and a UDP socket that never answers for
 * timeouts, cancelling and freeing with lookups in flight. Callbacks are
 * checked to run from the event loop only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dns.h"
#include "util.h"

#define T_A_ 1
#define T_CNAME_ 5
#define T_MX_ 15
#define T_AAAA_ 28
#define T_SOA_ 6
#define T_OPT_ 41
#define FLAGS_OK 0x8180 /* QR, RD, RA, NOERROR */

/* ---- packet builder ------------------------------------------------------- */

struct pkt {
	unsigned char b[16384];
	size_t n;
	size_t rdlen_at; /* the open record's rdlength field */
};

static void put8(struct pkt *p, unsigned v)
{
	assert_true(p->n < sizeof p->b);
	p->b[p->n++] = (unsigned char)v;
}

static void put16(struct pkt *p, unsigned v)
{
	put8(p, (v >> 8) & 0xff);
	put8(p, v & 0xff);
}

static void put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

static void put_bytes(struct pkt *p, const void *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		put8(p, ((const unsigned char *)s)[i]);
}

/* put_label: one label of any bytes (n may be anything up to 255, to
 * write malformed ones). */
static void put_label(struct pkt *p, const void *s, size_t n)
{
	put8(p, (unsigned)n);
	put_bytes(p, s, n);
}

/* put_labels: the labels of a dotted name, without the root. */
static void put_labels(struct pkt *p, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);

		put_label(p, name, n);
		name += n + (dot != NULL);
	}
}

/* put_name: a dotted name, uncompressed ("" is the root). */
static void put_name(struct pkt *p, const char *name)
{
	put_labels(p, name);
	put8(p, 0);
}

static void put_ptr(struct pkt *p, size_t off)
{
	put16(p, 0xc000 | (unsigned)off);
}

static void put_header(struct pkt *p, unsigned flags, unsigned qd, unsigned an, unsigned ns,
		       unsigned ar)
{
	p->n = 0;
	put16(p, 0x1234);
	put16(p, flags);
	put16(p, qd);
	put16(p, an);
	put16(p, ns);
	put16(p, ar);
}

static void put_question(struct pkt *p, const char *name, unsigned type)
{
	put_name(p, name);
	put16(p, type);
	put16(p, 1);
}

/* rr_begin: the fixed part after an owner name; rr_end sets rdlength. */
static void rr_begin(struct pkt *p, unsigned type)
{
	put16(p, type);
	put16(p, 1);
	put32(p, 300);
	p->rdlen_at = p->n;
	put16(p, 0);
}

static void rr_end(struct pkt *p)
{
	size_t len = p->n - p->rdlen_at - 2;

	p->b[p->rdlen_at] = (unsigned char)(len >> 8);
	p->b[p->rdlen_at + 1] = (unsigned char)len;
}

/* set_count: header count i (0 qd, 1 an, 2 ns, 3 ar). */
static void set_count(struct pkt *p, int i, unsigned v)
{
	p->b[4 + 2 * i] = (unsigned char)(v >> 8);
	p->b[5 + 2 * i] = (unsigned char)v;
}

struct mxrec {
	unsigned pref;
	const char *name;
};

/* mx_packet: the answer to "qname MX" holding recs; owners written as a
 * pointer to the question's name when compress. */
static void mx_packet(struct pkt *p, const char *qname, const struct mxrec *r, size_t n,
		      bool compress)
{
	put_header(p, FLAGS_OK, 1, (unsigned)n, 0, 0);
	put_question(p, qname, T_MX_);
	for (size_t i = 0; i < n; i++) {
		if (compress)
			put_ptr(p, 12);
		else
			put_name(p, qname);
		rr_begin(p, T_MX_);
		put16(p, r[i].pref);
		put_name(p, r[i].name);
		rr_end(p);
	}
}

static void put_a(struct pkt *p, const char *owner, const char *ip)
{
	unsigned char b[4];

	assert_int_equal(inet_pton(AF_INET, ip, b), 1);
	put_name(p, owner);
	rr_begin(p, T_A_);
	put_bytes(p, b, 4);
	rr_end(p);
}

static void put_aaaa(struct pkt *p, const char *owner, const char *ip)
{
	unsigned char b[16];

	assert_int_equal(inet_pton(AF_INET6, ip, b), 1);
	put_name(p, owner);
	rr_begin(p, T_AAAA_);
	put_bytes(p, b, 16);
	rr_end(p);
}

static void put_cname(struct pkt *p, const char *owner, const char *target)
{
	put_name(p, owner);
	rr_begin(p, T_CNAME_);
	put_name(p, target);
	rr_end(p);
}

static char perr[256];

static enum dns_parse parse_mx(const struct pkt *p, struct dns_mx *out, size_t max, size_t *n,
			       size_t *skipped)
{
	perr[0] = 0;
	return dns_parse_mx(p->b, (int)p->n, out, max, n, skipped, perr, sizeof perr);
}

static enum dns_parse parse_addrs(const struct pkt *p, int family, struct ipaddr *out,
				  size_t max, size_t *n)
{
	perr[0] = 0;
	return dns_parse_addrs(p->b, (int)p->n, family, out, max, n, perr, sizeof perr);
}

static const char *ip_text(const struct ipaddr *a)
{
	static char bufs[4][IPADDR_STRLEN];
	static int next;

	return ipaddr_format(a, bufs[next++ % 4]);
}

/* ---- parsing -------------------------------------------------------------- */

static void test_parse_mx_sorted(void **state)
{
	static const struct mxrec recs[] = {
		{ 20, "b.dest.test" }, { 10, "A.Dest.TEST" }, { 30, "c.dest.test" },
		{ 10, "d.dest.test" }, { 0, "e.dest.test" },
	};
	static const struct { unsigned pref; const char *name; } want[] = {
		{ 0, "e.dest.test" }, { 10, "a.dest.test" }, { 10, "d.dest.test" },
		{ 20, "b.dest.test" }, { 30, "c.dest.test" },
	};
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped;
	(void)state;

	for (int compress = 0; compress < 2; compress++) {
		mx_packet(&p, "dest.test", recs, ARRAY_LEN(recs), compress);
		assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
		assert_int_equal(n, ARRAY_LEN(want));
		assert_int_equal(skipped, 0);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(mx[i].pref, want[i].pref);
			assert_string_equal(mx[i].name, want[i].name);
		}
	}
}

/* The question in upper case and an exchange compressed against it,
 * with a trailing answer for another name that must not count. */
static void test_parse_mx_compressed_exchange(void **state)
{
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped;
	(void)state;

	put_header(&p, FLAGS_OK, 1, 2, 0, 0);
	put_question(&p, "DEST.test", T_MX_);
	put_ptr(&p, 12);
	rr_begin(&p, T_MX_);
	put16(&p, 5);
	put_label(&p, "mx", 2);
	put_ptr(&p, 12);
	rr_end(&p);
	put_name(&p, "other.test");
	rr_begin(&p, T_MX_);
	put16(&p, 1);
	put_name(&p, "evil.test");
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	assert_int_equal(n, 1);
	assert_string_equal(mx[0].name, "mx.dest.test");
	assert_int_equal(mx[0].pref, 5);
}

static void test_parse_mx_null(void **state)
{
	static const struct mxrec single[] = { { 0, "" } };
	static const struct mxrec single10[] = { { 10, "" } };
	static const struct mxrec mixed[] = { { 10, "mx.dest.test" }, { 0, "" } };
	static const struct mxrec notnull[] = { { 0, "mx.dest.test" } };
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n = 99, skipped;
	(void)state;

	mx_packet(&p, "null.test", single, 1, true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_NULLMX);
	assert_int_equal(n, 0);
	/* As Postfix: a "." exchange is the domain saying it takes no mail,
	 * whatever its preference and whatever else is listed. */
	mx_packet(&p, "null.test", single10, 1, false);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_NULLMX);
	mx_packet(&p, "null.test", mixed, 2, true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_NULLMX);
	assert_int_equal(n, 0);
	mx_packet(&p, "null.test", notnull, 1, true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
}

/* Exchanges that are well formed on the wire but no host name: each is
 * skipped and counted, the valid record beside it kept. */
static void test_parse_mx_invalid_names(void **state)
{
	static const struct { const char *label; size_t len; const char *rest; } bad[] = {
		{ "a..b", 4, "test" },      /* dots inside one label */
		{ "mx\nx", 4, "test" },     /* a newline */
		{ "mx x", 4, "test" },      /* a space */
		{ "mx\0x", 4, "test" },     /* a NUL */
		{ "-mx", 3, "test" },       /* leading hyphen */
		{ "mx-", 3, "test" },       /* trailing hyphen */
		{ "mx_1", 4, "test" },      /* underscore */
		{ "m\xc3\xa9", 3, "test" }, /* UTF-8, not an A-label */
		{ "192", 3, "0.2.1" },      /* an IP address as exchange */
		{ "mx", 2, "123" },         /* all-digit last label */
	};
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped;
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		put_header(&p, FLAGS_OK, 1, 2, 0, 0);
		put_question(&p, "dest.test", T_MX_);
		put_ptr(&p, 12);
		rr_begin(&p, T_MX_);
		put16(&p, 5);
		put_label(&p, bad[i].label, bad[i].len);
		put_name(&p, bad[i].rest);
		rr_end(&p);
		put_ptr(&p, 12);
		rr_begin(&p, T_MX_);
		put16(&p, 10);
		put_name(&p, "good.dest.test");
		rr_end(&p);
		if (parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped) != DNS_PARSE_OK)
			fail_msg("case %zu: %s", i, perr);
		assert_int_equal(n, 1);
		assert_int_equal(skipped, 1);
		assert_string_equal(mx[0].name, "good.dest.test");

		/* Alone, the bad record leaves no usable MX: malformed, not
		 * NODATA (which would send mail to the domain's own address). */
		set_count(&p, 1, 1);
		assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
		assert_int_equal(n, 0);
		assert_non_null(strstr(perr, "no MX record with a valid host name"));
	}
}

static void test_parse_mx_nodata(void **state)
{
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped;
	(void)state;

	/* No answers at all. */
	mx_packet(&p, "dest.test", NULL, 0, true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_NODATA);
	/* Only records of other types, or for other names. */
	put_header(&p, FLAGS_OK, 1, 3, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_a(&p, "dest.test", "192.0.2.1");
	put_cname(&p, "dest.test", "real.test");
	put_name(&p, "elsewhere.test");
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	put_name(&p, "mx.elsewhere.test");
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_NODATA);
	assert_int_equal(n, 0);
	/* A record of another class. */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 12);
	put16(&p, T_MX_);
	put16(&p, 3); /* CHAOS */
	put32(&p, 0);
	p.rdlen_at = p.n;
	put16(&p, 0);
	put16(&p, 10);
	put_name(&p, "mx.dest.test");
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_NODATA);
}

static void test_parse_mx_cname_chain(void **state)
{
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped;
	(void)state;

	put_header(&p, FLAGS_OK, 1, 4, 0, 0);
	put_question(&p, "alias.test", T_MX_);
	put_cname(&p, "alias.test", "middle.test");
	put_cname(&p, "MIDDLE.test", "real.test");
	put_name(&p, "real.test");
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	put_name(&p, "mx.real.test");
	rr_end(&p);
	put_name(&p, "unrelated.test"); /* not on the chain */
	rr_begin(&p, T_MX_);
	put16(&p, 1);
	put_name(&p, "mx.unrelated.test");
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	assert_int_equal(n, 1);
	assert_string_equal(mx[0].name, "mx.real.test");
}

/* More records than max: the lowest preferences are kept; a name listed
 * twice keeps its lowest preference. */
static void test_parse_mx_cap_and_duplicates(void **state)
{
	struct mxrec recs[40];
	char names[40][32];
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped;
	(void)state;

	for (unsigned i = 0; i < 40; i++) {
		unsigned pref = (i * 17) % 40; /* a permutation of 0..39 */
		snprintf(names[i], sizeof names[i], "mx%u.dest.test", pref);
		recs[i].pref = 100 + pref;
		recs[i].name = names[i];
	}
	mx_packet(&p, "dest.test", recs, 40, true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	assert_int_equal(n, DNS_MAX_HOSTS);
	for (unsigned i = 0; i < n; i++) {
		char want[32];
		snprintf(want, sizeof want, "mx%u.dest.test", i);
		assert_int_equal(mx[i].pref, 100 + i);
		assert_string_equal(mx[i].name, want);
	}
	/* max smaller still */
	assert_int_equal(parse_mx(&p, mx, 3, &n, &skipped), DNS_PARSE_OK);
	assert_int_equal(n, 3);
	assert_int_equal(mx[2].pref, 102);

	static const struct mxrec dup[] = {
		{ 30, "a.dest.test" }, { 20, "b.dest.test" }, { 5, "A.dest.test." },
		{ 40, "b.dest.test" },
	};
	mx_packet(&p, "dest.test", dup, ARRAY_LEN(dup), true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	assert_int_equal(n, 2);
	assert_string_equal(mx[0].name, "a.dest.test");
	assert_int_equal(mx[0].pref, 5);
	assert_string_equal(mx[1].name, "b.dest.test");
	assert_int_equal(mx[1].pref, 20);
}

/* full_mx_packet: MX answers, an authority SOA and additional A, AAAA
 * and OPT records, with compression. */
static void full_mx_packet(struct pkt *p)
{
	put_header(p, FLAGS_OK, 1, 2, 1, 3);
	put_question(p, "dest.test", T_MX_);
	put_ptr(p, 12);
	rr_begin(p, T_MX_);
	put16(p, 10);
	put_label(p, "mx1", 3);
	put_ptr(p, 12);
	rr_end(p);
	put_ptr(p, 12);
	rr_begin(p, T_MX_);
	put16(p, 20);
	put_name(p, "mx2.dest.test");
	rr_end(p);
	put_ptr(p, 12);
	rr_begin(p, T_SOA_);
	put_name(p, "ns.dest.test");
	put_name(p, "hostmaster.dest.test");
	for (int i = 0; i < 5; i++)
		put32(p, 3600);
	rr_end(p);
	put_a(p, "mx1.dest.test", "192.0.2.1");
	put_aaaa(p, "mx1.dest.test", "2001:db8::1");
	put8(p, 0); /* OPT: root owner, no data */
	put16(p, T_OPT_);
	put16(p, 1232);
	put32(p, 0);
	put16(p, 0);
}

static void full_a_packet(struct pkt *p)
{
	put_header(p, FLAGS_OK, 1, 3, 0, 1);
	put_question(p, "host.test", T_A_);
	put_cname(p, "host.test", "real.test");
	put_a(p, "real.test", "192.0.2.1");
	put_a(p, "real.test", "192.0.2.2");
	put_aaaa(p, "real.test", "2001:db8::2");
}

/* Every prefix of a valid packet is malformed: the counts promise more. */
static void test_parse_truncated(void **state)
{
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	struct ipaddr ip[DNS_MAX_ADDRS];
	size_t n, skipped;
	(void)state;

	full_mx_packet(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	assert_int_equal(n, 2);
	assert_string_equal(mx[0].name, "mx1.dest.test");
	for (size_t len = 0; len < p.n; len++) {
		/* a copy in a buffer of exactly len bytes, so ASan sees any over-read */
		unsigned char *b = xmalloc(len ? len : 1);
		memcpy(b, p.b, len);
		if (dns_parse_mx(b, (int)len, mx, DNS_MAX_HOSTS, &n, &skipped, perr, sizeof perr) !=
		    DNS_PARSE_BAD)
			fail_msg("MX packet cut at %zu of %zu is not malformed", len, p.n);
		assert_int_equal(n, 0);
		free(b);
	}
	full_a_packet(&p);
	assert_int_equal(parse_addrs(&p, AF_INET, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_OK);
	assert_int_equal(n, 2);
	for (size_t len = 0; len < p.n; len++) {
		unsigned char *b = xmalloc(len ? len : 1);
		memcpy(b, p.b, len);
		if (dns_parse_addrs(b, (int)len, AF_INET, ip, DNS_MAX_ADDRS, &n, perr,
				    sizeof perr) != DNS_PARSE_BAD)
			fail_msg("A packet cut at %zu of %zu is not malformed", len, p.n);
		free(b);
	}
}

static void test_parse_pointer_loops(void **state)
{
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped, at;
	(void)state;

	/* An owner name pointing at itself. */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	at = p.n;
	put_ptr(&p, at);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	put_name(&p, "mx.dest.test");
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);

	/* An exchange whose label is followed by a pointer back to the label. */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 12);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	at = p.n;
	put_label(&p, "mx", 2);
	put_ptr(&p, at);
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);

	/* Two pointers pointing at each other: the first is a forward one. */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 12);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	at = p.n;
	put_ptr(&p, at + 2);
	put_ptr(&p, at);
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);

	/* A pointer into the header, and one past the end. */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 2);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	put_name(&p, "mx.dest.test");
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 0x3fff);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);

	/* Pointers to pointers, each further back, are fine: every exchange
	 * is one label and a pointer to the one before ("e.d.c.b.a.test"). */
	put_header(&p, FLAGS_OK, 1, 5, 0, 0);
	put_question(&p, "test", T_MX_);
	size_t prev = 12;
	for (int i = 0; i < 5; i++) {
		put_ptr(&p, 12);
		rr_begin(&p, T_MX_);
		put16(&p, (unsigned)(10 - i));
		size_t here = p.n;
		put_label(&p, "abcde" + i, 1);
		put_ptr(&p, prev);
		prev = here;
		rr_end(&p);
	}
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	assert_int_equal(n, 5);
	assert_string_equal(mx[0].name, "e.d.c.b.a.test");
	assert_string_equal(mx[4].name, "a.test");
}

static void test_parse_bad_lengths(void **state)
{
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	struct ipaddr ip[DNS_MAX_ADDRS];
	size_t n, skipped;
	(void)state;

	/* rdlength past the end */
	mx_packet(&p, "dest.test", &(struct mxrec){ 10, "mx.dest.test" }, 1, true);
	p.b[p.rdlen_at + 1] += 1;
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	p.b[p.rdlen_at] = 0xff;
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	/* rdlength shorter than the name in it */
	mx_packet(&p, "dest.test", &(struct mxrec){ 10, "mx.dest.test" }, 1, true);
	p.b[p.rdlen_at + 1] -= 3;
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	/* junk after the name, inside rdata */
	mx_packet(&p, "dest.test", &(struct mxrec){ 10, "mx.dest.test" }, 1, true);
	put8(&p, 0);
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	/* MX data too short for a preference and a name */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 12);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);

	/* A of 5 bytes, AAAA of 4 */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "host.test", T_A_);
	put_ptr(&p, 12);
	rr_begin(&p, T_A_);
	put_bytes(&p, "\xc0\x00\x02\x01\x01", 5);
	rr_end(&p);
	assert_int_equal(parse_addrs(&p, AF_INET, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_BAD);
	assert_int_equal(n, 0);
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "host.test", T_AAAA_);
	put_ptr(&p, 12);
	rr_begin(&p, T_AAAA_);
	put_bytes(&p, "\xc0\x00\x02\x01", 4);
	rr_end(&p);
	assert_int_equal(parse_addrs(&p, AF_INET6, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_BAD);
}

static void test_parse_header(void **state)
{
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	struct ipaddr ip[1];
	size_t n, skipped;
	static const struct mxrec one[] = { { 10, "mx.dest.test" } };
	(void)state;

	mx_packet(&p, "dest.test", one, 1, true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	p.b[3] |= 2; /* SERVFAIL */
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	mx_packet(&p, "dest.test", one, 1, true);
	p.b[2] &= 0x7f; /* a query, not an answer */
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	mx_packet(&p, "dest.test", one, 1, true);
	p.b[2] |= 0x10; /* opcode 2 */
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	for (unsigned qd = 0; qd <= 2; qd += 2) {
		mx_packet(&p, "dest.test", one, 1, true);
		set_count(&p, 0, qd);
		assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	}
	/* an answer to an A question is no MX answer */
	mx_packet(&p, "dest.test", one, 1, true);
	p.b[12 + 11] = T_A_; /* the question's type: after "\4dest\4test\0" */
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	/* a question about an invalid name */
	put_header(&p, FLAGS_OK, 1, 0, 0, 0);
	put_label(&p, "a b", 3);
	put_question(&p, "test", T_MX_);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	/* an answer count far beyond what the packet holds */
	mx_packet(&p, "dest.test", one, 1, true);
	set_count(&p, 1, 65535);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	/* no packet at all */
	assert_int_equal(dns_parse_mx(NULL, 0, mx, DNS_MAX_HOSTS, &n, &skipped, perr, sizeof perr),
			 DNS_PARSE_BAD);
	assert_int_equal(dns_parse_mx(p.b, -1, mx, DNS_MAX_HOSTS, &n, &skipped, perr, sizeof perr),
			 DNS_PARSE_BAD);
	assert_int_equal(dns_parse_addrs(p.b, (int)p.n, AF_UNIX, ip, 1, &n, perr, sizeof perr),
			 DNS_PARSE_BAD);
}

static void test_parse_addrs(void **state)
{
	struct pkt p;
	struct ipaddr ip[DNS_MAX_ADDRS];
	size_t n;
	char a[32];
	(void)state;

	full_a_packet(&p);
	assert_int_equal(parse_addrs(&p, AF_INET, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_OK);
	assert_int_equal(n, 2);
	assert_string_equal(ip_text(&ip[0]), "192.0.2.1");
	assert_string_equal(ip_text(&ip[1]), "192.0.2.2");
	/* The AAAA record is an answer to another question here: the A
	 * answer has none of its own type for the AAAA parser. */
	assert_int_equal(parse_addrs(&p, AF_INET6, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_BAD);

	put_header(&p, FLAGS_OK, 1, 2, 0, 0);
	put_question(&p, "host.test", T_AAAA_);
	put_aaaa(&p, "host.test", "2001:db8::1");
	put_a(&p, "host.test", "192.0.2.9");
	assert_int_equal(parse_addrs(&p, AF_INET6, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(ip[0].family, AF_INET6);
	assert_string_equal(ip_text(&ip[0]), "2001:db8::1");

	/* 20 records, 2 of them duplicates: the first max distinct kept */
	put_header(&p, FLAGS_OK, 1, 20, 0, 0);
	put_question(&p, "host.test", T_A_);
	for (int i = 0; i < 20; i++) {
		snprintf(a, sizeof a, "192.0.2.%d", i < 2 ? 1 : i);
		put_a(&p, "host.test", a);
	}
	assert_int_equal(parse_addrs(&p, AF_INET, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_OK);
	assert_int_equal(n, DNS_MAX_ADDRS);
	assert_string_equal(ip_text(&ip[0]), "192.0.2.1");
	assert_string_equal(ip_text(&ip[1]), "192.0.2.2");
	assert_string_equal(ip_text(&ip[7]), "192.0.2.8");

	/* records for a name off the chain; then nothing of the type */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "host.test", T_A_);
	put_a(&p, "evil.test", "192.0.2.66");
	assert_int_equal(parse_addrs(&p, AF_INET, ip, DNS_MAX_ADDRS, &n), DNS_PARSE_NODATA);
	assert_int_equal(n, 0);
}

static void test_parse_long_names(void **state)
{
	char name[400], q[300];
	struct pkt p;
	struct dns_mx mx[DNS_MAX_HOSTS];
	size_t n, skipped;
	(void)state;

	/* 63.63.63.61 characters: 253, the longest host name (255 on the wire) */
	memset(name, 'a', sizeof name);
	name[63] = name[127] = name[191] = '.';
	name[253] = 0;
	mx_packet(&p, "dest.test", &(struct mxrec){ 10, name }, 1, true);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_OK);
	assert_string_equal(mx[0].name, name);

	/* 300 octets on the wire: malformed */
	name[253] = '.';
	name[255] = '.';
	name[300] = 0;
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 12);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	for (const char *s = name; *s;) {
		size_t l = strcspn(s, ".");
		put_label(&p, s, l);
		s += l + (s[l] == '.');
	}
	put8(&p, 0);
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
	assert_non_null(strstr(perr, "longer than 255"));

	/* 255 octets spread over compression: still too long */
	memset(q, 'b', sizeof q);
	q[63] = q[127] = q[191] = '.';
	q[240] = 0;
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, q, T_MX_);
	put_ptr(&p, 12);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	put_label(&p, "mx-long-prefix", 14);
	put_ptr(&p, 12);
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);

	/* a label length with the reserved 01 bits (64 and up) */
	put_header(&p, FLAGS_OK, 1, 1, 0, 0);
	put_question(&p, "dest.test", T_MX_);
	put_ptr(&p, 12);
	rr_begin(&p, T_MX_);
	put16(&p, 10);
	put_label(&p, name, 64);
	put8(&p, 0);
	rr_end(&p);
	assert_int_equal(parse_mx(&p, mx, DNS_MAX_HOSTS, &n, &skipped), DNS_PARSE_BAD);
}

/* Random damage to valid packets: never a crash or an over-read (ASan),
 * and whatever comes out obeys the contract. */
static void test_parse_mutations(void **state)
{
	struct pkt base[2], p;
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	size_t ok = 0, bad = 0;
	(void)state;

	full_mx_packet(&base[0]);
	full_a_packet(&base[1]);
	for (int round = 0; round < 40000; round++) {
		const struct pkt *b = &base[round & 1];
		struct dns_mx mx[DNS_MAX_HOSTS];
		struct ipaddr ip[DNS_MAX_ADDRS];
		size_t n, skipped, len;
		unsigned char *buf;
		int flips;
		enum dns_parse r;

		p = *b;
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		flips = 1 + (int)(x % 4);
		for (int i = 0; i < flips; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			p.b[x % p.n] = (unsigned char)(x >> 32);
		}
		len = p.n - (x >> 40) % 3;
		buf = xmalloc(len);
		memcpy(buf, p.b, len);
		if ((round & 1) == 0) {
			r = dns_parse_mx(buf, (int)len, mx, DNS_MAX_HOSTS, &n, &skipped, perr,
					 sizeof perr);
			if (r == DNS_PARSE_OK) {
				assert_true(n >= 1 && n <= DNS_MAX_HOSTS);
				for (size_t i = 0; i < n; i++) {
					assert_true(hostname_valid(mx[i].name, strlen(mx[i].name), false));
					assert_true(i == 0 || mx[i - 1].pref <= mx[i].pref);
				}
			} else {
				assert_int_equal(n, 0);
			}
		} else {
			r = dns_parse_addrs(buf, (int)len, AF_INET, ip, DNS_MAX_ADDRS, &n, perr,
					    sizeof perr);
			assert_true(r == DNS_PARSE_OK ? n >= 1 && n <= DNS_MAX_ADDRS : n == 0);
		}
		ok += r == DNS_PARSE_OK;
		bad += r == DNS_PARSE_BAD;
		free(buf);
	}
	/* both outcomes were reached, so the mutations did test something */
	assert_true(ok > 100 && bad > 100);
}

/* ---- the resolver ---------------------------------------------------------- */

struct got {
	int calls;
	bool sync; /* the callback ran inside one of our dns_*() calls */
	enum dns_status status;
	char reason[300];
	bool implicit_mx;
	size_t nhosts;
	struct dns_host hosts[DNS_MAX_HOSTS];
	/* what the callback does next */
	struct dns *d;
	struct dns_query *cancel;  /* dns_cancel() it */
	struct dns_query **self;   /* dns_cancel() its own query (a no-op) */
	const char *then_mx;       /* start dns_mx() of it, result into next */
	struct got *next;
	bool free_resolver;
};

static bool in_call;

static void on_result(void *ctx, const struct dns_result *r);

static struct dns_query *mx(struct dns *d, const char *domain, int families, struct got *g)
{
	struct dns_query *q;

	in_call = true;
	q = dns_mx(d, domain, families, on_result, g);
	in_call = false;
	assert_non_null(q);
	return q;
}

static struct dns_query *host(struct dns *d, const char *name, int families, struct got *g)
{
	struct dns_query *q;

	in_call = true;
	q = dns_host(d, name, families, on_result, g);
	in_call = false;
	assert_non_null(q);
	return q;
}

static void cancel(struct dns_query *q)
{
	in_call = true;
	dns_cancel(q);
	in_call = false;
}

static void on_result(void *ctx, const struct dns_result *r)
{
	struct got *g = ctx;

	g->calls++;
	g->sync |= in_call;
	g->status = r->status;
	snprintf(g->reason, sizeof g->reason, "%s", r->reason);
	g->implicit_mx = r->implicit_mx;
	g->nhosts = r->nhosts;
	if (r->nhosts <= DNS_MAX_HOSTS && r->nhosts > 0)
		memcpy(g->hosts, r->hosts, r->nhosts * sizeof *r->hosts);
	if (g->self)
		cancel(*g->self);
	if (g->cancel)
		cancel(g->cancel);
	if (g->then_mx)
		mx(g->d, g->then_mx, DNS_V4 | DNS_V6, g->next);
	if (g->free_resolver) {
		in_call = true;
		dns_free(g->d);
		in_call = false;
	}
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* run_until: the loop until *calls reaches want, failing after max_ms. */
static void run_until(sd_event *e, const int *calls, int want, unsigned max_ms)
{
	uint64_t end = now_us() + max_ms * 1000ULL;

	while (*calls < want) {
		if (now_us() > end)
			fail_msg("no DNS result within %u ms", max_ms);
		assert_true(sd_event_run(e, 50000) >= 0);
	}
}

/* run_for: the loop for ms, whatever happens. */
static void run_for(sd_event *e, unsigned ms)
{
	uint64_t end = now_us() + ms * 1000ULL;

	while (now_us() < end)
		assert_true(sd_event_run(e, 20000) >= 0);
}

static sd_event *new_event(void)
{
	sd_event *e = NULL;

	assert_true(sd_event_new(&e) >= 0);
	return e;
}

static void test_new_servers(void **state)
{
	static const char *good[] = {
		"", "127.0.0.53", "127.0.0.53:5353", "[::1]:53", "[::1]", "::1",
		"127.0.0.1, [::1]:5353", "192.0.2.1,192.0.2.2,192.0.2.3", " 192.0.2.1 ",
	};
	static const struct { const char *value, *err; } bad[] = {
		{ "nonsense", "bad DNS server address \"nonsense\"" },
		{ "dns.example.com", "bad DNS server address \"dns.example.com\"" },
		{ "127.0.0.1:0", "bad port in DNS server \"127.0.0.1:0\"" },
		{ "127.0.0.1:65536", "bad port in DNS server \"127.0.0.1:65536\"" },
		{ "127.0.0.1:", "bad port in DNS server \"127.0.0.1:\"" },
		{ "127.0.0.1:x", "bad port in DNS server \"127.0.0.1:x\"" },
		{ "[::1", "bad DNS server \"[::1\"" },
		{ "[::1]x", "bad DNS server \"[::1]x\"" },
		{ "[::1]:", "bad port in DNS server \"[::1]:\"" },
		{ "0.0.0.0", "bad DNS server address \"0.0.0.0\"" },
		{ "224.0.0.1", "bad DNS server address \"224.0.0.1\"" },
		{ "1.2.3.4,5.6.7.8,9.9.9.9,8.8.8.8", "more than 3 DNS servers" },
		{ "127.0.0.1,\x01", "bad DNS server address \"\\x01\"" },
		{ "fe80::1%eth0", "bad DNS server address \"fe80::1%eth0\"" },
	};
	sd_event *e = new_event();
	char err[256], big[200];
	(void)state;

	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		struct dns *d = dns_new(e, good[i], err, sizeof err);
		if (d == NULL)
			fail_msg("\"%s\" refused: %s", good[i], err);
		dns_free(d);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		err[0] = 0;
		if (dns_new(e, bad[i].value, err, sizeof err) != NULL)
			fail_msg("\"%s\" accepted", bad[i].value);
		assert_string_equal(err, bad[i].err);
	}
	memset(big, '1', sizeof big - 1);
	big[sizeof big - 1] = 0;
	assert_null(dns_new(e, big, err, sizeof err));
	assert_non_null(strstr(err, "bad DNS server \"111"));
	sd_event_unref(e);
}

/* An invalid name is answered without DNS, still from the loop; a
 * cancel before the loop runs means no callback at all. */
static void test_invalid_name(void **state)
{
	static const char *names[] = { "", ".", "a..b", "bad name.test", "-x.test", "1.2.3.4",
				       "x\n.test" };
	sd_event *e = new_event();
	char err[256];
	struct dns *d = dns_new_timeout(e, "127.0.0.1:9", 100, 1, err, sizeof err);
	struct got g[ARRAY_LEN(names)], h, c;
	(void)state;

	assert_non_null(d);
	memset(g, 0, sizeof g);
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		mx(d, names[i], DNS_V4, &g[i]);
	memset(&h, 0, sizeof h);
	host(d, "bad_host.test", DNS_V4, &h);
	memset(&c, 0, sizeof c);
	cancel(mx(d, "a..b", DNS_V4, &c));
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		assert_int_equal(g[i].calls, 0); /* not from inside dns_mx() */
	run_until(e, &h.calls, 1, 2000);
	run_for(e, 50);
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		assert_int_equal(g[i].calls, 1);
		assert_false(g[i].sync);
		assert_int_equal(g[i].status, DNS_NOTFOUND);
		assert_int_equal(g[i].nhosts, 0);
		assert_non_null(strstr(g[i].reason, ": invalid host or domain name"));
	}
	assert_string_equal(g[3].reason,
			    "Name service error for bad name.test: invalid host or domain name");
	assert_string_equal(g[6].reason,
			    "Name service error for x\\x0a.test: invalid host or domain name");
	assert_int_equal(h.status, DNS_NOTFOUND);
	assert_int_equal(c.calls, 0);
	dns_free(d);
	sd_event_unref(e);
}

/* ---- dnsmasq --------------------------------------------------------------- */

#define DNSMASQ "/usr/sbin/dnsmasq"

static pid_t dnsmasq_pid;
static int dnsmasq_port;
static bool dnsmasq_v6;

/* tcp_ready: something accepts TCP connections on addr:port. */
static bool tcp_ready(const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct ipaddr ip;
	int fd;
	bool ok;

	assert_true(ipaddr_parse(addr, strlen(addr), &ip));
	ipaddr_to_sockaddr(&ip, (uint16_t)port, &ss, &len);
	fd = socket(ip.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	ok = connect(fd, (struct sockaddr *)&ss, len) == 0;
	close(fd);
	return ok;
}

static bool v6_loopback(void)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* dnsmasq_start: one try on port; true once it answers. */
static bool dnsmasq_start(int port)
{
	static const char *records[] = {
		"--mx-host=dest.test,mx.dest.test,10",
		"--host-record=mx.dest.test,192.0.2.10,2001:db8::10",
		"--mx-host=two.test,mx1.two.test,20",
		"--mx-host=two.test,mx2.two.test,10",
		"--host-record=mx1.two.test,192.0.2.21",
		"--host-record=mx2.two.test,192.0.2.22,2001:db8::22",
		"--mx-host=null.test,.,0",
		"--host-record=aonly.test,192.0.2.30",
		"--mx-host=ghost.test,nohost.test,10",
		"--mx-host=alias.test,mxalias.test,10",
		"--cname=mxalias.test,mx.dest.test",
		"--mx-host=half.test,nohost.test,5",
		"--mx-host=half.test,mx.dest.test,50",
	};
	const char *argv[80];
	char portarg[32], many[14][64];
	size_t n = 0;
	pid_t pid;

	argv[n++] = DNSMASQ;
	argv[n++] = "--no-daemon";
	argv[n++] = "--conf-file=/dev/null";
	argv[n++] = "--no-resolv";
	argv[n++] = "--no-hosts";
	argv[n++] = "--pid-file=";
	argv[n++] = "--bind-interfaces";
	argv[n++] = "--listen-address=127.0.0.1";
	if (dnsmasq_v6)
		argv[n++] = "--listen-address=::1";
	snprintf(portarg, sizeof portarg, "--port=%d", port);
	argv[n++] = portarg;
	argv[n++] = "--local=/test/";
	if (geteuid() == 0)
		argv[n++] = "--user=root"; /* no credential change: keeps PDEATHSIG */
	for (size_t i = 0; i < ARRAY_LEN(records); i++)
		argv[n++] = records[i];
	/* many.test: 12 MX, preferences 1..12; equal.test: 4 MX of equal
	 * preference; each host with one address */
	for (int i = 0; i < 12; i++) {
		snprintf(many[i], sizeof many[i], "--mx-host=many.test,m%d.many.test,%d", i + 1, i + 1);
		argv[n++] = many[i];
	}
	snprintf(many[12], sizeof many[12], "--address=/many.test/192.0.2.50");
	argv[n++] = many[12];
	argv[n++] = "--mx-host=equal.test,e1.equal.test,10";
	argv[n++] = "--mx-host=equal.test,e2.equal.test,10";
	argv[n++] = "--mx-host=equal.test,e3.equal.test,10";
	argv[n++] = "--mx-host=equal.test,e4.equal.test,10";
	argv[n++] = "--mx-host=equal.test,lower.equal.test,20";
	snprintf(many[13], sizeof many[13], "--address=/equal.test/192.0.2.60");
	argv[n++] = many[13];
	argv[n] = NULL;
	assert_true(n < ARRAY_LEN(argv));

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(null, 0);
		dup2(null, 1);
		if (getenv("TEST_DNS_VERBOSE") == NULL)
			dup2(null, 2);
		execv(DNSMASQ, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid)
			return false; /* the port was taken, most likely */
		if (tcp_ready("127.0.0.1", port) && (!dnsmasq_v6 || tcp_ready("::1", port))) {
			dnsmasq_pid = pid;
			dnsmasq_port = port;
			return true;
		}
		usleep(25000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return false;
}

static int group_setup(void **state)
{
	(void)state;
	if (access(DNSMASQ, X_OK) != 0)
		return 0;
	dnsmasq_v6 = v6_loopback();
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (int i = 0; i < 10 && dnsmasq_pid == 0; i++)
		dnsmasq_start(20000 + rand() % 40000);
	if (dnsmasq_pid == 0)
		fprintf(stderr, "dnsmasq did not start: its tests fail\n");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (dnsmasq_pid > 0) {
		kill(dnsmasq_pid, SIGTERM);
		waitpid(dnsmasq_pid, NULL, 0);
	}
	return 0;
}

struct live {
	sd_event *e;
	struct dns *d;
};

/* live_setup: a resolver on dnsmasq; skips the test without dnsmasq. */
static int live_setup(void **state)
{
	struct live *l = xcalloc(1, sizeof *l);
	char servers[64], err[256];

	*state = l;
	if (access(DNSMASQ, X_OK) != 0)
		return 0;
	if (dnsmasq_pid == 0)
		return -1;
	l->e = new_event();
	snprintf(servers, sizeof servers, "127.0.0.1:%d", dnsmasq_port);
	l->d = dns_new(l->e, servers, err, sizeof err);
	if (l->d == NULL) {
		fprintf(stderr, "dns_new: %s\n", err);
		return -1;
	}
	return 0;
}

static int live_teardown(void **state)
{
	struct live *l = *state;

	dns_free(l->d);
	if (l->e)
		sd_event_unref(l->e);
	free(l);
	return 0;
}

static struct live *live(void **state)
{
	struct live *l = *state;

	if (l->d == NULL) {
		print_message("dnsmasq (package dnsmasq-base) is not installed: skipped\n");
		skip();
	}
	return l;
}

/* lookup: one query run to its end. */
static void lookup(struct live *l, bool is_mx, const char *name, int families, struct got *g)
{
	memset(g, 0, sizeof *g);
	if (is_mx)
		mx(l->d, name, families, g);
	else
		host(l->d, name, families, g);
	assert_int_equal(g->calls, 0);
	run_until(l->e, &g->calls, 1, 10000);
	run_for(l->e, 10);
	assert_int_equal(g->calls, 1);
	assert_false(g->sync);
}

static void assert_addrs(const struct dns_host *h, const char *const *want, size_t n)
{
	assert_int_equal(h->naddrs, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(ip_text(&h->addrs[i]), want[i]);
}

static void test_live_mx(void **state)
{
	struct live *l = live(state);
	struct got g;

	/* both families: interleaved, IPv6 first */
	lookup(l, true, "dest.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_false(g.implicit_mx);
	assert_int_equal(g.nhosts, 1);
	assert_string_equal(g.hosts[0].name, "mx.dest.test");
	assert_int_equal(g.hosts[0].pref, 10);
	assert_addrs(&g.hosts[0], (const char *[]){ "2001:db8::10", "192.0.2.10" }, 2);
	/* one family each; a trailing dot and upper case are fine */
	lookup(l, true, "Dest.TEST.", DNS_V4, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_addrs(&g.hosts[0], (const char *[]){ "192.0.2.10" }, 1);
	lookup(l, true, "dest.test", DNS_V6, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_addrs(&g.hosts[0], (const char *[]){ "2001:db8::10" }, 1);
}

static void test_live_mx_prefs(void **state)
{
	struct live *l = live(state);
	struct got g;

	lookup(l, true, "two.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_int_equal(g.nhosts, 2);
	assert_string_equal(g.hosts[0].name, "mx2.two.test");
	assert_int_equal(g.hosts[0].pref, 10);
	assert_addrs(&g.hosts[0], (const char *[]){ "2001:db8::22", "192.0.2.22" }, 2);
	assert_string_equal(g.hosts[1].name, "mx1.two.test");
	assert_int_equal(g.hosts[1].pref, 20);
	assert_addrs(&g.hosts[1], (const char *[]){ "192.0.2.21" }, 1);
	/* IPv6 only: mx1 has no AAAA and is left out */
	lookup(l, true, "two.test", DNS_V6, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_int_equal(g.nhosts, 1);
	assert_string_equal(g.hosts[0].name, "mx2.two.test");
}

static void test_live_null_mx(void **state)
{
	struct live *l = live(state);
	struct got g;

	lookup(l, true, "null.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_NULLMX);
	assert_int_equal(g.nhosts, 0);
	assert_string_equal(g.reason, "Domain null.test does not accept mail (nullMX)");
}

static void test_live_implicit_mx(void **state)
{
	struct live *l = live(state);
	struct got g;

	lookup(l, true, "aonly.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_true(g.implicit_mx);
	assert_int_equal(g.nhosts, 1);
	assert_string_equal(g.hosts[0].name, "aonly.test");
	assert_int_equal(g.hosts[0].pref, 0);
	assert_addrs(&g.hosts[0], (const char *[]){ "192.0.2.30" }, 1);
	/* no AAAA either: nothing to deliver to */
	lookup(l, true, "aonly.test", DNS_V6, &g);
	assert_int_equal(g.status, DNS_NOTFOUND);
	assert_int_equal(g.nhosts, 0);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=aonly.test type=AAAA: Host found but no data record of requested type");
}

static void test_live_nxdomain(void **state)
{
	struct live *l = live(state);
	struct got g;

	lookup(l, true, "nx.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_NOTFOUND);
	assert_int_equal(g.nhosts, 0);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=nx.test type=MX: Host not found");
	/* an MX host that does not exist */
	lookup(l, true, "ghost.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_NOTFOUND);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=nohost.test type=A: Host not found");
	/* one MX host without an address, one with: the one with is used */
	lookup(l, true, "half.test", DNS_V4, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_int_equal(g.nhosts, 1);
	assert_string_equal(g.hosts[0].name, "mx.dest.test");
	assert_int_equal(g.hosts[0].pref, 50);
}

static void test_live_refused(void **state)
{
	struct live *l = live(state);
	struct got g;

	/* outside --local=/test/ and without upstream servers: REFUSED */
	lookup(l, true, "x.example", DNS_V4, &g);
	assert_int_equal(g.status, DNS_TEMP);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=x.example type=MX: Host not found, try again");
	lookup(l, false, "host.example", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_TEMP);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=host.example type=A: Host not found, try again");
}

static void test_live_cname(void **state)
{
	struct live *l = live(state);
	struct got g;

	lookup(l, true, "alias.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_int_equal(g.nhosts, 1);
	assert_string_equal(g.hosts[0].name, "mxalias.test");
	assert_addrs(&g.hosts[0], (const char *[]){ "2001:db8::10", "192.0.2.10" }, 2);
}

static void test_live_cap_and_shuffle(void **state)
{
	struct live *l = live(state);
	struct got g;
	int first[5] = { 0 };

	lookup(l, true, "many.test", DNS_V4, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_int_equal(g.nhosts, DNS_MAX_HOSTS);
	for (size_t i = 0; i < g.nhosts; i++) {
		char want[32];
		snprintf(want, sizeof want, "m%zu.many.test", i + 1);
		assert_string_equal(g.hosts[i].name, want);
		assert_int_equal(g.hosts[i].pref, i + 1);
		assert_addrs(&g.hosts[i], (const char *[]){ "192.0.2.50" }, 1);
	}
	/* equal preferences in random order, the lower one always last:
	 * after 40 lookups each of the four has come first at least once
	 * (all but certain: 4 * (3/4)^40 < 1e-4) */
	for (int i = 0; i < 40; i++) {
		lookup(l, true, "equal.test", DNS_V4, &g);
		assert_int_equal(g.status, DNS_OK);
		assert_int_equal(g.nhosts, 5);
		assert_string_equal(g.hosts[4].name, "lower.equal.test");
		assert_true(g.hosts[0].name[0] == 'e' && g.hosts[0].name[1] >= '1' &&
			    g.hosts[0].name[1] <= '4');
		first[g.hosts[0].name[1] - '0']++;
		for (int j = 0; j < 4; j++)
			assert_int_equal(g.hosts[j].pref, 10);
	}
	for (int i = 1; i <= 4; i++)
		assert_true(first[i] > 0);
}

static void test_live_host(void **state)
{
	struct live *l = live(state);
	struct got g;

	lookup(l, false, "mx.dest.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_OK);
	assert_false(g.implicit_mx);
	assert_int_equal(g.nhosts, 1);
	assert_string_equal(g.hosts[0].name, "mx.dest.test");
	assert_int_equal(g.hosts[0].pref, 0);
	assert_addrs(&g.hosts[0], (const char *[]){ "2001:db8::10", "192.0.2.10" }, 2);
	/* dns_host never looks at MX records */
	lookup(l, false, "dest.test", DNS_V4, &g);
	assert_int_equal(g.status, DNS_NOTFOUND);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=dest.test type=A: Host found but no data record of requested type");
	lookup(l, false, "nohost.test", DNS_V4 | DNS_V6, &g);
	assert_int_equal(g.status, DNS_NOTFOUND);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=nohost.test type=A: Host not found");
}

static void test_live_ipv6_server(void **state)
{
	struct live *l = live(state);
	struct dns *d;
	char servers[64], err[256];
	struct got g;

	if (!dnsmasq_v6) {
		print_message("no IPv6 loopback: skipped\n");
		skip();
	}
	/* the first server is dead (refuses), the second answers */
	snprintf(servers, sizeof servers, "127.0.0.1:9,[::1]:%d", dnsmasq_port);
	d = dns_new_timeout(l->e, servers, 300, 2, err, sizeof err);
	assert_non_null(d);
	memset(&g, 0, sizeof g);
	mx(d, "dest.test", DNS_V4, &g);
	run_until(l->e, &g.calls, 1, 10000);
	assert_int_equal(g.status, DNS_OK);
	assert_addrs(&g.hosts[0], (const char *[]){ "192.0.2.10" }, 1);
	dns_free(d);
}

/* Queries side by side; a callback that cancels another query, cancels
 * itself (a no-op), and starts a new one. */
static void test_live_parallel_and_cancel(void **state)
{
	struct live *l = live(state);
	struct got a, b, c, x, y;
	struct dns_query *qa, *qb;

	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	memset(&c, 0, sizeof c);
	memset(&x, 0, sizeof x);
	memset(&y, 0, sizeof y);
	qa = mx(l->d, "dest.test", DNS_V4, &a);
	qb = mx(l->d, "two.test", DNS_V4, &b);
	mx(l->d, "null.test", DNS_V4, &c);
	cancel(mx(l->d, "aonly.test", DNS_V4, &x));
	cancel(qb);
	a.d = l->d;
	a.self = &qa;
	a.then_mx = "aonly.test";
	a.next = &y;
	run_until(l->e, &y.calls, 1, 10000);
	run_until(l->e, &c.calls, 1, 10000);
	run_for(l->e, 100);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, DNS_OK);
	assert_int_equal(b.calls, 0);
	assert_int_equal(x.calls, 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.status, DNS_NULLMX);
	assert_int_equal(y.calls, 1);
	assert_true(y.implicit_mx);
	assert_false(a.sync || c.sync || y.sync);

	/* a callback cancelling a query whose result is already waiting */
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	qa = mx(l->d, "-bad-.test", DNS_V4, &a);
	qb = mx(l->d, "also..bad", DNS_V4, &b);
	a.cancel = qb; /* whichever runs first cancels the other */
	b.cancel = qa;
	run_for(l->e, 100);
	assert_int_equal(a.calls + b.calls, 1);
}

/* dns_free inside a callback, with other queries in flight. */
static void test_live_free_in_callback(void **state)
{
	struct live *l = live(state);
	struct got a, b, c;

	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	memset(&c, 0, sizeof c);
	mx(l->d, "bad..name", DNS_V4, &a); /* answered first, without DNS */
	mx(l->d, "dest.test", DNS_V4 | DNS_V6, &b);
	mx(l->d, "two.test", DNS_V4 | DNS_V6, &c);
	a.d = l->d;
	a.free_resolver = true;
	l->d = NULL; /* the callback frees it */
	run_until(l->e, &a.calls, 1, 1000);
	run_for(l->e, 300);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 0);
	assert_int_equal(c.calls, 0);
}

/* ---- a server that never answers ------------------------------------------- */

/* silent_socket: a bound UDP socket on 127.0.0.1 that nobody reads. */
static int silent_socket(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static int count_datagrams(int fd)
{
	char b[1024];
	int n = 0;

	while (recv(fd, b, sizeof b, 0) >= 0)
		n++;
	return n;
}

/* The real timeouts: DNS_TEMP after DNS_TIMEOUT_MS, then twice that,
 * one datagram per try; well under 30 s. */
static void test_dead_server_timeout(void **state)
{
	sd_event *e = new_event();
	char servers[64], err[256];
	struct got g, h;
	struct dns *d;
	uint64_t t0, ms;
	int port, fd = silent_socket(&port);
	(void)state;

	snprintf(servers, sizeof servers, "127.0.0.1:%d", port);
	d = dns_new(e, servers, err, sizeof err);
	assert_non_null(d);
	memset(&g, 0, sizeof g);
	memset(&h, 0, sizeof h);
	t0 = now_us();
	mx(d, "dest.test", DNS_V4 | DNS_V6, &g);
	host(d, "mx.dest.test", DNS_V4, &h);
	run_until(e, &g.calls, 1, 30000);
	run_until(e, &h.calls, 1, 30000);
	ms = (now_us() - t0) / 1000;
	assert_int_equal(g.status, DNS_TEMP);
	assert_string_equal(g.reason, "Host or domain name not found. Name service error for "
			    "name=dest.test type=MX: Host not found, try again");
	assert_int_equal(h.status, DNS_TEMP);
	assert_string_equal(h.reason, "Host or domain name not found. Name service error for "
			    "name=mx.dest.test type=A: Host not found, try again");
	assert_false(g.sync || h.sync);
	/* 2 s + 4 s for one server */
	if (ms < 5 * DNS_TIMEOUT_MS / 2 || ms > 4 * DNS_TIMEOUT_MS)
		fail_msg("DNS_TEMP after %llu ms", (unsigned long long)ms);
	assert_int_equal(count_datagrams(fd), 2 * DNS_TRIES);
	dns_free(d);
	close(fd);
	sd_event_unref(e);
}

/* Cancelling and freeing while c-ares still waits: no callback, no leak
 * (ASan's leak check), and the short test timeouts work. */
static void test_dead_server_cancel_free(void **state)
{
	sd_event *e = new_event();
	char servers[64], err[256];
	struct got a, b, c, t;
	struct dns *d;
	uint64_t t0, ms;
	int port, fd = silent_socket(&port);
	(void)state;

	snprintf(servers, sizeof servers, "127.0.0.1:%d", port);
	d = dns_new_timeout(e, servers, 100, 2, err, sizeof err);
	assert_non_null(d);
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	memset(&c, 0, sizeof c);
	memset(&t, 0, sizeof t);
	t0 = now_us();
	cancel(mx(d, "dest.test", DNS_V4, &a));
	mx(d, "two.test", DNS_V4, &t);
	run_for(e, 20);
	cancel(host(d, "mx.dest.test", DNS_V4 | DNS_V6, &b));
	run_until(e, &t.calls, 1, 5000);
	ms = (now_us() - t0) / 1000;
	assert_int_equal(t.status, DNS_TEMP);
	assert_true(ms >= 250 && ms < 2000); /* 100 ms + 200 ms */
	run_for(e, 400);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 0);

	/* freed with lookups in flight */
	mx(d, "dest.test", DNS_V4, &c);
	host(d, "mx.dest.test", DNS_V4 | DNS_V6, &c);
	run_for(e, 20);
	dns_free(d);
	run_for(e, 400);
	assert_int_equal(c.calls, 0);
	close(fd);
	sd_event_unref(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_mx_sorted),
		cmocka_unit_test(test_parse_mx_compressed_exchange),
		cmocka_unit_test(test_parse_mx_null),
		cmocka_unit_test(test_parse_mx_invalid_names),
		cmocka_unit_test(test_parse_mx_nodata),
		cmocka_unit_test(test_parse_mx_cname_chain),
		cmocka_unit_test(test_parse_mx_cap_and_duplicates),
		cmocka_unit_test(test_parse_truncated),
		cmocka_unit_test(test_parse_pointer_loops),
		cmocka_unit_test(test_parse_bad_lengths),
		cmocka_unit_test(test_parse_header),
		cmocka_unit_test(test_parse_addrs),
		cmocka_unit_test(test_parse_long_names),
		cmocka_unit_test(test_parse_mutations),
		cmocka_unit_test(test_new_servers),
		cmocka_unit_test(test_invalid_name),
		cmocka_unit_test_setup_teardown(test_live_mx, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_mx_prefs, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_null_mx, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_implicit_mx, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_nxdomain, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_refused, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_cname, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_cap_and_shuffle, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_host, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_ipv6_server, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_parallel_and_cancel, live_setup,
						live_teardown),
		cmocka_unit_test_setup_teardown(test_live_free_in_callback, live_setup,
						live_teardown),
		cmocka_unit_test(test_dead_server_timeout),
		cmocka_unit_test(test_dead_server_cancel_free),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
