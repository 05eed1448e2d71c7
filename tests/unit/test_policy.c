/* test_policy.c: instances/policy.c, the "never an open relay" rule.
 * A relay-policy table runs parsed RCPT arguments (every classic
 * relay-test spelling among them) against a client inside mynetworks and
 * clients outside it; a generated set of several hundred spellings of
 * foreign destinations checks that an outside client never gets
 * RCPT_RELAY; policy_load's errors are checked with their file and line. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "mailaddr.h"
#include "policy.h"
#include "util.h"

/* L: a literal and its length, embedded NULs included. */
#define L(x) x, sizeof(x) - 1

static void record(void *ctx, enum diag_level level, const char *file,
		   unsigned long line, const char *msg)
{
	buf_printf(ctx, "%s:%lu: %s: %s\n", file, line,
		   level == DIAG_ERROR ? "error" : "warning", msg);
}

/* A transport table in a temporary file. */
struct tmpfile {
	char path[64];
};

static void tmp_write(struct tmpfile *t, const char *text, size_t n)
{
	snprintf(t->path, sizeof t->path, "/tmp/test_policy.XXXXXX");
	int fd = mkstemp(t->path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static void tmp_remove(struct tmpfile *t) { assert_int_equal(unlink(t->path), 0); }

static struct ipaddr ip(const char *s)
{
	struct ipaddr a;

	if (!ipaddr_parse(s, strlen(s), &a))
		fail_msg("test bug: bad address \"%s\"", s);
	return a;
}

/* ---- the instance every relay test runs against */

#define TABLE \
	"# vhostmta render output; do not edit.\n" \
	"hosted.test\tsmtp:[192.0.2.10]:2525\n" \
	"Other-Hosted.TEST   lmtp:unix:/run/dovecot/lmtp\n"
#define MYNETWORKS "127.0.0.0/8 [::1]/128 10.0.0.0/8"
#define INET_INTERFACES "192.0.2.1 [2001:db8::1]"
#define PROXY_INTERFACES "198.51.100.7"

static int setup(void **state)
{
	static struct policy p;
	struct diag d = DIAG_INIT;
	struct tmpfile t;

	tmp_write(&t, TABLE, strlen(TABLE));
	bool ok = policy_load(&p, t.path, MYNETWORKS, INET_INTERFACES, PROXY_INTERFACES, &d);
	tmp_remove(&t);
	if (!ok || d.errors != 0)
		return -1;
	*state = &p;
	return 0;
}

static int teardown(void **state)
{
	policy_free(*state);
	return 0;
}

static const char *const inside[] = { "10.1.2.3", "::ffff:10.1.2.3", "127.0.0.1", "::1" };
/* outside: a stranger, the same as IPv4-mapped, our own address (not in
 * mynetworks), a v6 stranger, and a neighbour of 10/8 */
static const char *const outside[] = { "203.0.113.9", "::ffff:203.0.113.9", "192.0.2.1",
				       "2001:db8::77", "11.0.0.1" };

enum { H = RCPT_HOSTED, LO = RCPT_LOCAL, R = RCPT_RELAY, D = RCPT_DENIED, REFUSED = -1 };

struct relay_row {
	const char *rcpt; /* the RCPT TO: argument */
	int in, out;      /* verdict for inside / outside clients, or REFUSED by the parser */
};

static const struct relay_row relay_rows[] = {
	{ "<user@hosted.test>", H, H },
	{ "<USER@HOSTED.TEST>", H, H },
	{ "<user@Other-Hosted.Test>", H, H },
	{ "<user@other-hosted.test>", H, H },
	{ "<user@sub.hosted.test>", R, D },
	{ "<user@www.other-hosted.test>", R, D },
	{ "<user@hosted.test.elsewhere.test>", R, D },
	{ "<user@xhosted.test>", R, D },
	{ "<user@hosted.tes>", R, D },
	{ "<user@elsewhere.test>", R, D },
	{ "<USER@ELSEWHERE.TEST>", R, D },
	{ "<user@[192.0.2.1]>", LO, LO },
	{ "<user@[198.51.100.7]>", LO, LO },
	{ "<user@[IPv6:2001:db8::1]>", LO, LO },
	{ "<user@[IPv6:2001:DB8:0::1]>", LO, LO },
	{ "<user@[IPv6:::ffff:192.0.2.1]>", LO, LO },
	{ "<user@[IPv6:::ffff:198.51.100.7]>", LO, LO },
	{ "<user@[192.0.2.99]>", R, D },
	{ "<user@[192.0.2.10]>", R, D }, /* a next hop's address is not ours */
	{ "<user@[127.0.0.1]>", R, D },  /* not in inet_interfaces */
	{ "<user@[IPv6:2001:db8::99]>", R, D },
	{ "<user@[IPv6:::ffff:192.0.2.99]>", R, D },
	{ "<user@[IPv6:::192.0.2.1]>", R, D }, /* IPv4-compatible is not mapped */
	{ "<user@[::ffff:192.0.2.1]>", REFUSED, REFUSED },
	{ "<postmaster>", LO, LO },
	{ "<POSTMASTER>", LO, LO },
	{ "<postmaster@hosted.test>", H, H },
	{ "<postmaster@elsewhere.test>", R, D },
	/* the classic relay tests */
	{ "<user%elsewhere.test@hosted.test>", H, H },
	{ "<user%elsewhere.test>", REFUSED, REFUSED },
	{ "<user%elsewhere.test@[192.0.2.1]>", LO, LO },
	{ "<user%hosted.test@elsewhere.test>", R, D },
	{ "<@hosted.test:user@elsewhere.test>", R, D },
	{ "<@hosted.test,@other-hosted.test:user@elsewhere.test>", R, D },
	{ "<@elsewhere.test:user@hosted.test>", H, H },
	{ "<\"user@elsewhere.test\"@hosted.test>", H, H },
	{ "<\"user@elsewhere.test\">", REFUSED, REFUSED },
	{ "<\"user%elsewhere.test\"@hosted.test>", H, H },
	{ "<\"user@hosted.test\"@elsewhere.test>", R, D },
	{ "<user@elsewhere.test@hosted.test>", REFUSED, REFUSED },
	{ "<user@hosted.test@elsewhere.test>", REFUSED, REFUSED },
	{ "<user@elsewhere.test@[192.0.2.1]>", REFUSED, REFUSED },
	{ "<elsewhere.test!user@hosted.test>", H, H },
	{ "<elsewhere.test!user>", REFUSED, REFUSED },
	{ "<hosted.test!user@elsewhere.test>", R, D },
	{ "<user@hosted.test.>", REFUSED, REFUSED },
	{ "<user@elsewhere.test.>", REFUSED, REFUSED },
	{ "<user@hosted.test%elsewhere.test>", REFUSED, REFUSED },
	{ "<user@hosted.test:elsewhere.test>", REFUSED, REFUSED },
	{ "<user@[192.0.2.1]@elsewhere.test>", REFUSED, REFUSED },
	{ "<user@elsewhere.test> NOTIFY=NEVER", REFUSED, REFUSED },
	{ "<>", REFUSED, REFUSED },
};

static void test_relay_table(void **state)
{
	const struct policy *p = *state;
	struct mailbox mb;

	for (size_t i = 0; i < ARRAY_LEN(relay_rows); i++) {
		const struct relay_row *r = &relay_rows[i];
		size_t n = strlen(r->rcpt);
		for (int strict = 0; strict <= 1; strict++) {
			const char *e = parse_rcpt_to(r->rcpt, n, strict, &mb);
			if ((e != NULL) != (r->in == REFUSED))
				fail_msg("RCPT TO:%s (strict=%d): %s", r->rcpt, strict,
					 e ? e : "accepted");
			if (e != NULL)
				continue;
			for (size_t c = 0; c < ARRAY_LEN(inside); c++) {
				struct ipaddr a = ip(inside[c]);
				enum rcpt_verdict v = policy_rcpt(p, &a, &mb);
				if ((int)v != r->in)
					fail_msg("RCPT TO:%s from %s: verdict %d, want %d", r->rcpt,
						 inside[c], v, r->in);
			}
			for (size_t c = 0; c < ARRAY_LEN(outside); c++) {
				struct ipaddr a = ip(outside[c]);
				enum rcpt_verdict v = policy_rcpt(p, &a, &mb);
				if ((int)v != r->out)
					fail_msg("RCPT TO:%s from %s: verdict %d, want %d", r->rcpt,
						 outside[c], v, r->out);
			}
			/* no client at all is an outside client */
			assert_int_equal(policy_rcpt(p, NULL, &mb), r->out);
		}
	}
}

/* A NUL never ends an address early: the whole n bytes count. */
static void test_relay_nul(void **state)
{
	static const struct {
		const char *s;
		size_t n;
	} t[] = {
		{ L("<user@elsewhere\0.test>") },
		{ L("<user@hosted.test\0@elsewhere.test>") },
		{ L("<user@hosted.test>\0<user@elsewhere.test>") },
		{ L("<\"user\0\"@hosted.test>") },
		{ L("<postmaster>\0") },
	};
	struct mailbox mb;

	for (size_t i = 0; i < ARRAY_LEN(t); i++)
		for (int strict = 0; strict <= 1; strict++)
			assert_non_null(parse_rcpt_to(t[i].s, t[i].n, strict, &mb));
}

/* ---- several hundred spellings of foreign destinations */

static const char *const locals[] = {
	"user", "USER", "user%hosted.test", "user%other-hosted.test", "hosted.test!user",
	"\"user@hosted.test\"", "\"user\"", "user+hosted.test", "u.s.e.r", "postmaster",
	"\"@hosted.test:user\"",
};
static const char *const foreign[] = {
	"elsewhere.test", "ELSEWHERE.TEST", "sub.hosted.test", "hosted.test.elsewhere.test",
	"xhosted.test", "hosted-test.test", "other-hosted.test.invalid", "Sub.Other-Hosted.Test",
	"[192.0.2.99]", "[IPv6:2001:db8::99]", "[IPv6:::ffff:192.0.2.99]", "[127.0.0.1]",
	"[IPv6:::1]", "[10.1.2.3]",
};
static const char *const routes[] = {
	"", "@hosted.test:", "@hosted.test,@other-hosted.test:", "@HOSTED.TEST:", "@elsewhere.test:",
};
/* Spellings that put a hosted domain somewhere after the foreign one: all
 * must be refused by the parser. */
static const char *const tails[] = {
	"@hosted.test", "%hosted.test", "!hosted.test", ":hosted.test", ",@hosted.test",
	".", " ", "\"@hosted.test\"", "]", "@[192.0.2.1]",
};

static void lower(char *s)
{
	for (; *s; s++)
		*s = ascii_tolower(*s);
}

/* check_foreign: arg names the foreign domain dom; it is refused, or it
 * parses to exactly dom and no outside client may relay through it. */
static bool check_foreign(const struct policy *p, const char *arg, const char *dom,
			  size_t *accepted)
{
	struct mailbox mb;
	char want[DOMAIN_MAX + 1];
	bool any = false;

	snprintf(want, sizeof want, "%s", dom);
	if (want[0] != '[')
		lower(want);
	for (int strict = 0; strict <= 1; strict++) {
		if (parse_rcpt_to(arg, strlen(arg), strict, &mb) != NULL)
			continue;
		any = true;
		(*accepted)++;
		if (strcmp(mb.domain, want) != 0)
			fail_msg("RCPT TO:%s parsed to domain \"%s\", not \"%s\"", arg, mb.domain,
				 want);
		for (size_t c = 0; c < ARRAY_LEN(outside); c++) {
			struct ipaddr a = ip(outside[c]);
			enum rcpt_verdict v = policy_rcpt(p, &a, &mb);
			if (v != RCPT_DENIED)
				fail_msg("RCPT TO:%s from %s: verdict %d, not RCPT_DENIED", arg,
					 outside[c], v);
		}
		struct ipaddr in = ip("10.1.2.3");
		assert_int_equal(policy_rcpt(p, &in, &mb), RCPT_RELAY);
		assert_null(policy_nexthop(p, mb.domain));
	}
	return any;
}

static void test_relay_spellings(void **state)
{
	const struct policy *p = *state;
	struct buf b = BUF_INIT;
	size_t spellings = 0, accepted = 0, refused = 0;

	for (size_t l = 0; l < ARRAY_LEN(locals); l++) {
		for (size_t f = 0; f < ARRAY_LEN(foreign); f++) {
			for (size_t r = 0; r < ARRAY_LEN(routes); r++) {
				buf_reset(&b);
				buf_printf(&b, "<%s%s@%s>", routes[r], locals[l], foreign[f]);
				spellings++;
				if (!check_foreign(p, buf_cstr(&b), foreign[f], &accepted))
					fail_msg("RCPT TO:%s refused", buf_cstr(&b));
			}
			buf_reset(&b);
			buf_printf(&b, "%s@%s", locals[l], foreign[f]); /* bare, non-strict */
			spellings++;
			check_foreign(p, buf_cstr(&b), foreign[f], &accepted);
			for (size_t t = 0; t < ARRAY_LEN(tails); t++) {
				struct mailbox mb;
				buf_reset(&b);
				buf_printf(&b, "<%s@%s%s>", locals[l], foreign[f], tails[t]);
				spellings++;
				for (int strict = 0; strict <= 1; strict++) {
					if (parse_rcpt_to(b.data, b.len, strict, &mb) == NULL)
						fail_msg("RCPT TO:%s accepted", buf_cstr(&b));
					refused++;
				}
			}
		}
	}
	print_message("relay spellings: %zu, %zu parses accepted (all denied to outside "
		      "clients), %zu refused\n", spellings, accepted, refused);
	assert_true(spellings >= 200 && accepted >= 200);
	buf_free(&b);
}

/* The same local-part tricks in front of a hosted domain stay hosted: they
 * go to that domain's next hop, never elsewhere. */
static void test_hosted_spellings(void **state)
{
	const struct policy *p = *state;
	struct buf b = BUF_INIT;
	struct mailbox mb;
	struct ipaddr out = ip("203.0.113.9");

	for (size_t l = 0; l < ARRAY_LEN(locals); l++) {
		for (size_t r = 0; r < ARRAY_LEN(routes); r++) {
			buf_reset(&b);
			buf_printf(&b, "<%s%s@HoStEd.TeSt>", routes[r], locals[l]);
			assert_null(parse_rcpt_to(b.data, b.len, true, &mb));
			assert_string_equal(mb.domain, "hosted.test");
			assert_int_equal(policy_rcpt(p, &out, &mb), RCPT_HOSTED);
			assert_string_equal(policy_nexthop(p, mb.domain), "smtp:[192.0.2.10]:2525");
		}
	}
	buf_free(&b);
}

static void test_nexthop(void **state)
{
	const struct policy *p = *state;

	assert_string_equal(policy_nexthop(p, "hosted.test"), "smtp:[192.0.2.10]:2525");
	assert_string_equal(policy_nexthop(p, "other-hosted.test"), "lmtp:unix:/run/dovecot/lmtp");
	assert_null(policy_nexthop(p, "sub.hosted.test"));
	assert_null(policy_nexthop(p, "test"));
	assert_null(policy_nexthop(p, "hosted.test."));
	assert_null(policy_nexthop(p, ""));
	assert_null(policy_nexthop(p, NULL));
	assert_int_equal(p->hosted.len, 2);
	assert_int_equal(p->own.n, 3);
	assert_int_equal(p->mynetworks.n, 3);
}

/* A mailbox built by hand (not by the parser) still cannot relay. */
static void test_handmade_mailboxes(void **state)
{
	const struct policy *p = *state;
	struct ipaddr out = ip("203.0.113.9"), in = ip("10.1.2.3");
	struct mailbox mb;

	memset(&mb, 0, sizeof mb);
	mb.null = true;
	assert_int_equal(policy_rcpt(p, &in, &mb), RCPT_DENIED);
	memset(&mb, 0, sizeof mb);
	strcpy(mb.local, "user"); /* no domain and not postmaster */
	assert_int_equal(policy_rcpt(p, &in, &mb), RCPT_DENIED);
	assert_int_equal(policy_rcpt(p, &out, &mb), RCPT_DENIED);
	strcpy(mb.local, "Postmaster");
	assert_int_equal(policy_rcpt(p, &out, &mb), RCPT_LOCAL);
	strcpy(mb.domain, "HOSTED.TEST"); /* lookups ignore case */
	assert_int_equal(policy_rcpt(p, &out, &mb), RCPT_HOSTED);
	strcpy(mb.domain, "sub.hosted.test");
	assert_int_equal(policy_rcpt(p, &out, &mb), RCPT_DENIED);
}

/* ---- policy_load */

struct load_result {
	bool ok;
	struct buf diag;
	struct policy p;
};

static void load(struct load_result *res, const char *table, size_t n, bool use_table,
		 const char *mynetworks, const char *inet, const char *proxy, const char *name)
{
	struct diag d = { record, &res->diag, 0, 0 };
	struct tmpfile t;
	struct buf expected = BUF_INIT;

	buf_init(&res->diag);
	if (use_table)
		tmp_write(&t, table, n);
	res->ok = policy_load(&res->p, use_table ? t.path : name, mynetworks, inet, proxy, &d);
	if (use_table) {
		/* the expected text names the temporary file: make it "T" */
		const char *s = buf_cstr(&res->diag);
		size_t pl = strlen(t.path);
		while (*s) {
			if (strncmp(s, t.path, pl) == 0) {
				buf_putc(&expected, 'T');
				s += pl;
			} else {
				buf_putc(&expected, *s++);
			}
		}
		buf_free(&res->diag);
		res->diag = expected;
		tmp_remove(&t);
	}
	assert_int_equal(res->ok, d.errors == 0);
}

static void test_load_errors(void **state)
{
	static const char table[] =
		"# header\n"                                 /* 1 */
		"\n"                                         /* 2 */
		"hosted.test smtp:[192.0.2.10]\n"            /* 3 */
		"bad_domain.test smtp:x.test\n"              /* 4 */
		"localhost smtp:x.test\n"                    /* 5 */
		"nohop.test\n"                               /* 6 */
		"badhop.test smtp:[x\n"                      /* 7 */
		"extra.test smtp:x.test junk\n"              /* 8 */
		"hosted.test smtp:y.test\n"                  /* 9 */
		"  indented.test smtp:x.test\n"              /* 10 */
		"HOSTED.TEST smtp:z.test\n"                  /* 11 */
		"crlf.test lmtp:unix:/run/x\r\n"             /* 12 */
		"[192.0.2.1] smtp:x.test\n"                  /* 13 */
		"nul\0.test smtp:x.test\n"                   /* 14 */
		"   # indented comment\n"                    /* 15 */
		"ctrl\x01.test smtp:x.test\n"                /* 16 */
		"bad.test ftp:x.test\n"                      /* 17 */
		"last.test\tsmtp:last.test";                 /* 18, no newline */
	struct load_result r;

	load(&r, table, sizeof table - 1, true, MYNETWORKS, INET_INTERFACES, "", NULL);
	assert_false(r.ok);
	print_message("%s", buf_cstr(&r.diag));
	assert_string_equal(buf_cstr(&r.diag),
		"T:4: error: bad domain \"bad_domain.test\"\n"
		"T:5: error: domain \"localhost\" is not fully qualified\n"
		"T:6: error: missing next hop for \"nohop.test\"\n"
		"T:7: error: bad next hop for \"badhop.test\": missing \"]\" in \"[x\"\n"
		"T:8: error: unexpected text after the next hop: \"junk\"\n"
		"T:9: error: duplicate domain \"hosted.test\"\n"
		"T:10: error: line starts with white space (continuation lines are not supported)\n"
		"T:11: error: duplicate domain \"hosted.test\"\n"
		"T:13: error: bad domain \"[192.0.2.1]\"\n"
		"T:14: error: NUL byte in line\n"
		"T:16: error: bad domain \"ctrl\\x01.test\"\n"
		"T:17: error: bad next hop for \"bad.test\": unknown transport \"ftp\"\n");
	buf_free(&r.diag);
}

static void test_load_good(void **state)
{
	static const char table[] =
		"# header\n"
		"\n"
		"   \t\n"
		"   # indented comment\n"
		"Hosted.Test\tsmtp:[192.0.2.10]:2525   \n"
		"crlf.test  lmtp:unix:/run/x\r\n"
		"b.test smtp:mx.b.test\n"
		"last.test\t \tsmtp:last.test";
	struct load_result r;

	load(&r, table, sizeof table - 1, true, "", "192.0.2.1", "  ", NULL);
	assert_true(r.ok);
	assert_string_equal(buf_cstr(&r.diag), "");
	assert_int_equal(r.p.hosted.len, 4);
	assert_string_equal(policy_nexthop(&r.p, "hosted.test"), "smtp:[192.0.2.10]:2525");
	assert_string_equal(policy_nexthop(&r.p, "crlf.test"), "lmtp:unix:/run/x");
	assert_string_equal(policy_nexthop(&r.p, "b.test"), "smtp:mx.b.test");
	assert_string_equal(policy_nexthop(&r.p, "last.test"), "smtp:last.test");
	/* empty mynetworks: nobody relays, not even localhost */
	struct ipaddr lo = ip("127.0.0.1");
	struct mailbox mb;
	assert_null(parse_rcpt_to(L("<u@elsewhere.test>"), true, &mb));
	assert_int_equal(policy_rcpt(&r.p, &lo, &mb), RCPT_DENIED);
	policy_free(&r.p);
	policy_free(&r.p); /* twice is harmless */
	buf_free(&r.diag);
}

static void test_load_no_table(void **state)
{
	struct load_result r;
	struct mailbox mb;
	struct ipaddr in = ip("10.9.9.9"), out = ip("203.0.113.9");

	for (int i = 0; i < 2; i++) {
		load(&r, NULL, 0, false, MYNETWORKS, INET_INTERFACES, NULL, i ? "" : NULL);
		assert_true(r.ok);
		assert_int_equal(r.p.hosted.len, 0);
		assert_null(parse_rcpt_to(L("<user@hosted.test>"), true, &mb));
		assert_int_equal(policy_rcpt(&r.p, &in, &mb), RCPT_RELAY);
		assert_int_equal(policy_rcpt(&r.p, &out, &mb), RCPT_DENIED);
		assert_null(policy_nexthop(&r.p, "hosted.test"));
		policy_free(&r.p);
		buf_free(&r.diag);
	}
}

static void test_load_param_errors(void **state)
{
	static const struct {
		const char *table; /* NULL: no file */
		const char *mynetworks, *inet, *proxy;
		const char *diag;
	} t[] = {
		{ "/nonexistent/transport", MYNETWORKS, INET_INTERFACES, "",
		  "/nonexistent/transport:0: error: cannot open: No such file or directory\n" },
		{ "/", MYNETWORKS, INET_INTERFACES, "", "/:0: error: read error: Is a directory\n" },
		{ NULL, "10.0.0.1/8", INET_INTERFACES, "",
		  "mynetworks:0: error: non-null host address bits in \"10.0.0.1/8\", perhaps use "
		  "\"10.0.0.0/8\"\n" },
		{ NULL, "!10.0.0.0/8", INET_INTERFACES, "",
		  "mynetworks:0: error: negation is not supported: \"!10.0.0.0/8\"\n" },
		{ NULL, MYNETWORKS, "", "", "inet_interfaces:0: error: no addresses\n" },
		{ NULL, MYNETWORKS, "192.0.2.300", "",
		  "inet_interfaces:0: error: bad address \"192.0.2.300\"\n" },
		{ NULL, MYNETWORKS, INET_INTERFACES, "all",
		  "proxy_interfaces:0: error: a list of addresses is expected, not \"all\"\n" },
		{ NULL, MYNETWORKS, INET_INTERFACES, "loopback-only",
		  "proxy_interfaces:0: error: a list of addresses is expected, not \"loopback-only\"\n" },
		{ NULL, MYNETWORKS, INET_INTERFACES, "198.51.100.7 bogus",
		  "proxy_interfaces:0: error: bad address \"bogus\"\n" },
		/* every error of one run is reported */
		{ "/nonexistent/t", "bad", "", "bad",
		  "/nonexistent/t:0: error: cannot open: No such file or directory\n"
		  "mynetworks:0: error: bad network \"bad\"\n"
		  "inet_interfaces:0: error: no addresses\n"
		  "proxy_interfaces:0: error: bad address \"bad\"\n" },
	};

	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		struct load_result r;
		load(&r, NULL, 0, false, t[i].mynetworks, t[i].inet, t[i].proxy, t[i].table);
		assert_false(r.ok);
		assert_string_equal(buf_cstr(&r.diag), t[i].diag);
		/* p was freed and left empty */
		assert_int_equal(r.p.hosted.len, 0);
		assert_null(r.p.own.addrs);
		assert_null(r.p.mynetworks.nets);
		buf_free(&r.diag);
	}
}

/* Our own addresses: inet_interfaces expanded ("loopback-only", "all")
 * plus proxy_interfaces, duplicates merged. */
static void test_own_addresses(void **state)
{
	struct load_result r;
	struct mailbox mb;
	struct ipaddr out = ip("203.0.113.9");

	load(&r, NULL, 0, false, "", "loopback-only", "198.51.100.7, [2001:db8::7] 127.0.0.1", NULL);
	assert_true(r.ok);
	assert_int_equal(r.p.own.n, 4);
	static const char *const local_rcpts[] = {
		"<u@[127.0.0.1]>", "<u@[IPv6:::1]>", "<u@[IPv6:::ffff:127.0.0.1]>",
		"<u@[198.51.100.7]>", "<u@[IPv6:2001:db8::7]>",
	};
	for (size_t i = 0; i < ARRAY_LEN(local_rcpts); i++) {
		assert_null(parse_rcpt_to(local_rcpts[i], strlen(local_rcpts[i]), true, &mb));
		assert_int_equal(policy_rcpt(&r.p, &out, &mb), RCPT_LOCAL);
	}
	assert_null(parse_rcpt_to(L("<u@[127.0.0.2]>"), true, &mb));
	assert_int_equal(policy_rcpt(&r.p, &out, &mb), RCPT_DENIED);
	policy_free(&r.p);
	buf_free(&r.diag);

	/* "all": every address of this host is ours */
	load(&r, NULL, 0, false, "", "all", "", NULL);
	assert_true(r.ok);
	assert_true(r.p.own.n >= 1);
	for (size_t i = 0; i < r.p.own.n; i++) {
		char txt[IPADDR_STRLEN], arg[IPADDR_STRLEN + 16];
		const struct ipaddr *a = &r.p.own.addrs[i];
		snprintf(arg, sizeof arg, a->family == AF_INET ? "<u@[%s]>" : "<u@[IPv6:%s]>",
			 ipaddr_format(a, txt));
		assert_null(parse_rcpt_to(arg, strlen(arg), true, &mb));
		assert_int_equal(policy_rcpt(&r.p, &out, &mb), RCPT_LOCAL);
	}
	policy_free(&r.p);
	buf_free(&r.diag);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_relay_table),
		cmocka_unit_test(test_relay_nul),
		cmocka_unit_test(test_relay_spellings),
		cmocka_unit_test(test_hosted_spellings),
		cmocka_unit_test(test_nexthop),
		cmocka_unit_test(test_handmade_mailboxes),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_good),
		cmocka_unit_test(test_load_no_table),
		cmocka_unit_test(test_load_param_errors),
		cmocka_unit_test(test_own_addresses),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
