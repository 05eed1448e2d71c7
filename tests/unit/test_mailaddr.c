/* test_mailaddr.c: the MAIL FROM / RCPT TO argument grammar of
 * instances/mailaddr.c. One table of accepted and refused arguments with
 * the exact reply of every refusal (the classic relay-test spellings
 * included), then generated inputs: the length limits on both sides of
 * each bound, a NUL or an 8-bit byte at every position of valid
 * arguments, every truncation of them, and 100 KB inputs. Every argument
 * is parsed from an exact-size heap copy, so reading past n is an ASan
 * error rather than a silent pass. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mailaddr.h"
#include "util.h"

/* The replies, spelled out once. */
#define M_SYNTAX "501 5.5.4 Syntax: MAIL FROM:<address>"
#define M_BAD "501 5.1.7 Bad sender address syntax"
#define M_LONG "501 5.1.7 Sender address too long"
#define M_FQDN "553 5.1.7 Sender domain must be fully qualified"
#define R_SYNTAX "501 5.5.4 Syntax: RCPT TO:<address>"
#define R_BAD "501 5.1.3 Bad recipient address syntax"
#define R_LONG "501 5.1.3 Recipient address too long"
#define R_FQDN "553 5.1.3 Recipient domain must be fully qualified"
#define NONASCII "553 5.6.7 Non-ASCII address not permitted"
#define P_SYNTAX "501 5.5.4 Syntax error in parameters"
#define P_SIZE "501 5.5.4 Bad SIZE parameter syntax"
#define P_BODY "501 5.5.4 Bad BODY parameter value"
#define P_DUPSIZE "501 5.5.4 Duplicate SIZE parameter"
#define P_DUPBODY "501 5.5.4 Duplicate BODY parameter"
#define UNSUP(k) "555 5.5.4 Unsupported option: " k

/* L: a literal and its length, embedded NULs included. */
#define L(x) x, sizeof(x) - 1

/* exact: s[0..n) on the heap with nothing after it. */
static char *exact(const char *s, size_t n)
{
	char *p = xmalloc(n);
	memcpy(p, s, n);
	return p;
}

/* shown: s[0..n) printable, for failure messages (static: one at a time). */
static const char *shown(const char *s, size_t n)
{
	static struct buf b;

	buf_reset(&b);
	buf_put_printable(&b, s, n < 200 ? n : 200);
	if (n > 200)
		buf_puts(&b, "...");
	return buf_cstr(&b);
}

enum cmd { MAIL, RCPT };
enum when { BOTH, STRICT, LAX }; /* strict_rfc821_envelopes values a row holds for */

struct row {
	enum cmd cmd;
	enum when when;
	const char *arg;
	const char *err; /* NULL: accepted, with the fields below */
	const char *local, *domain;
	bool literal, null;
	bool has_size;
	uint64_t size;
	enum body_type body;
};

/* Accepted rows: MAIL/RCPT, plain or with parameters; refused rows. */
#define MOK(a, l, d) { MAIL, BOTH, a, NULL, l, d, false, false, false, 0, BODY_NONE }
#define MLIT(a, l, d) { MAIL, BOTH, a, NULL, l, d, true, false, false, 0, BODY_NONE }
#define MNULL(a) { MAIL, BOTH, a, NULL, "", "", false, true, false, 0, BODY_NONE }
#define MPAR(a, hs, sz, bd) { MAIL, BOTH, a, NULL, "user", "example.com", false, false, hs, sz, bd }
#define MLAX(a, l, d) { MAIL, LAX, a, NULL, l, d, false, false, false, 0, BODY_NONE }
#define MNO(a, e) { MAIL, BOTH, a, e, NULL, NULL, false, false, false, 0, BODY_NONE }
#define MNO_IN(w, a, e) { MAIL, w, a, e, NULL, NULL, false, false, false, 0, BODY_NONE }
#define ROK(a, l, d) { RCPT, BOTH, a, NULL, l, d, false, false, false, 0, BODY_NONE }
#define RLIT(a, l, d) { RCPT, BOTH, a, NULL, l, d, true, false, false, 0, BODY_NONE }
#define RLAX(a, l, d) { RCPT, LAX, a, NULL, l, d, false, false, false, 0, BODY_NONE }
#define RNO(a, e) { RCPT, BOTH, a, e, NULL, NULL, false, false, false, 0, BODY_NONE }
#define RNO_IN(w, a, e) { RCPT, w, a, e, NULL, NULL, false, false, false, 0, BODY_NONE }

static const struct row rows[] = {
	/* MAIL FROM: plain paths */
	MOK("<user@example.com>", "user", "example.com"),
	MOK(" <user@example.com>", "user", "example.com"),
	MOK("\t <user@example.com> \t", "user", "example.com"),
	MOK("<USER@EXAMPLE.COM>", "USER", "example.com"),
	MOK("<User.Name@Mail.Example.COM>", "User.Name", "mail.example.com"),
	MOK("<first.last+tag@sub.example.com>", "first.last+tag", "sub.example.com"),
	MOK("<!#$%&'*+-/=?^_`{|}~@example.com>", "!#$%&'*+-/=?^_`{|}~", "example.com"),
	MOK("<a@b.c>", "a", "b.c"),
	MOK("<user@123.example>", "user", "123.example"),
	MOK("<user@xn--bcher-kva.example>", "user", "xn--bcher-kva.example"),
	MOK("<user@a-b.example>", "user", "a-b.example"),
	MOK("<\"john doe\"@example.com>", "\"john doe\"", "example.com"),
	MOK("<\"a\\\"b\\\\c\"@example.com>", "\"a\\\"b\\\\c\"", "example.com"),
	MOK("<\"a<b>c@d\"@example.com>", "\"a<b>c@d\"", "example.com"),
	MOK("<\"\\ \"@example.com>", "\"\\ \"", "example.com"),
	MNULL("<>"),
	MNULL(" <> "),
	MNO("<postmaster>", M_BAD), /* the bare postmaster is for RCPT only */
	/* relay-test spellings: the domain is always what follows the last '@' */
	MOK("<user%elsewhere.test@hosted.test>", "user%elsewhere.test", "hosted.test"),
	MOK("<elsewhere.test!user@hosted.test>", "elsewhere.test!user", "hosted.test"),
	MOK("<\"user@elsewhere.test\"@hosted.test>", "\"user@elsewhere.test\"", "hosted.test"),
	MOK("<@hosted.test:user@elsewhere.test>", "user", "elsewhere.test"),
	MOK("<@a.test,@b.test:user@c.test>", "user", "c.test"),
	MOK("<@relay:user@example.com>", "user", "example.com"),
	MOK("<@HOSTED.TEST:user@Example.Com>", "user", "example.com"),
	MNO("<user@elsewhere.test@hosted.test>", M_BAD),
	MNO("<user@a@b>", M_BAD),
	MNO("<user@hosted.test.>", M_BAD),
	MNO("<user@hosted.test%elsewhere.test>", M_BAD),
	MNO("<user@hosted.test!elsewhere.test>", M_BAD),
	MNO("<user@hosted.test:elsewhere.test>", M_BAD),
	MNO("<user@hosted.test,elsewhere.test>", M_BAD),
	/* address literals */
	MLIT("<user@[192.0.2.99]>", "user", "[192.0.2.99]"),
	MLIT("<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]"),
	MLIT("<user@[ipv6:2001:DB8::1]>", "user", "[ipv6:2001:DB8::1]"),
	MLIT("<user@[IPv6:::ffff:192.0.2.1]>", "user", "[IPv6:::ffff:192.0.2.1]"),
	MNO("<user@[::1]>", M_BAD),
	MNO("<user@[2001:db8::1]>", M_BAD),
	MNO("<user@[IPv6:192.0.2.1]>", M_BAD),
	MNO("<user@[IPv6:]>", M_BAD),
	MNO("<user@[IPv6:fe80::1%eth0]>", M_BAD),
	MNO("<user@[x400:c=us]>", M_BAD),
	MNO("<user@[]>", M_BAD),
	MNO("<user@[192.0.2.256]>", M_BAD),
	MNO("<user@[192.0.2.01]>", M_BAD),
	MNO("<user@[192.0.2]>", M_BAD),
	MNO("<user@[192.0.2.1>", M_BAD),
	MNO("<user@192.0.2.1]>", M_BAD),
	MNO("<user@[[192.0.2.1]]>", M_BAD),
	MNO("<user@[192.0.2.1]x>", M_BAD),
	MNO("<user@[192.0.2.1].example.com>", M_BAD),
	MNO("<user@[192.0.2.1 ]>", M_BAD),
	MNO("<user@[192.0.2.1\\]>", M_BAD),
	MNO("<user@192.0.2.1>", M_BAD),
	/* brackets, blanks, structure */
	MNO("", M_SYNTAX),
	MNO(" \t ", M_SYNTAX),
	MNO("<", M_BAD),
	MNO("<user@example.com", M_BAD),
	MNO("<user@example.com >", M_BAD),
	MNO("<<user@example.com>>", M_BAD),
	MNO("<user@example.com>>", M_SYNTAX),
	MNO("<user@example.com>x", M_SYNTAX),
	MNO("<user@example.com><a@b.c>", M_SYNTAX),
	MNO("<>x", M_SYNTAX),
	MNO("< user@example.com>", M_BAD),
	MNO("<user @example.com>", M_BAD),
	MNO("<user@ example.com>", M_BAD),
	MNO("<user\t@example.com>", M_BAD),
	MNO("<user@example.com\r\n>", M_BAD),
	MNO("<us\ter@example.com>", M_BAD),
	MNO("<us\x7f" "er@example.com>", M_BAD),
	MNO("<user>", M_BAD),
	MNO("<user@>", M_BAD),
	MNO("<@>", M_BAD),
	MNO("<@example.com>", M_BAD),
	MNO("<@hosted.test:>", M_BAD),
	MNO("<@hosted.test,>", M_BAD),
	MNO("<@hosted.test:@b.test:user@c.test>", M_BAD),
	MNO("<@hosted.test,user@example.com>", M_BAD),
	MNO("<:user@example.com>", M_BAD),
	MNO("<@:user@example.com>", M_BAD),
	MNO("<@bad_domain.test:user@example.com>", M_BAD),
	MNO("<@-bad.test:user@example.com>", M_BAD),
	MNO("<@hosted.test.:user@example.com>", M_BAD),
	MNO("<@[192.0.2.1]:user@example.com>", M_BAD),
	MNO("<@a.test;@b.test:user@example.com>", M_BAD),
	MNO_IN(STRICT, "user@example.com", M_SYNTAX),
	MNO_IN(LAX, "user@example.com>", M_BAD),
	MNO_IN(STRICT, "user@example.com>", M_SYNTAX),
	MNO_IN(LAX, "@hosted.test:user@example.com", M_BAD),
	MNO_IN(LAX, "user@a.test@b.test", M_BAD),
	MNO_IN(LAX, "user@localhost", M_FQDN),
	MNO_IN(LAX, "user", M_BAD),
	/* local parts */
	MNO("<.user@example.com>", M_BAD),
	MNO("<user.@example.com>", M_BAD),
	MNO("<us..er@example.com>", M_BAD),
	MNO("<.@example.com>", M_BAD),
	MNO("<\"\"@example.com>", M_BAD),
	MNO("<\"unterminated@example.com>", M_BAD),
	MNO("<\"a\"b@example.com>", M_BAD),
	MNO("<a\"b\"@example.com>", M_BAD),
	MNO("<\"a\".b@example.com>", M_BAD),
	MNO("<\"a\tb\"@example.com>", M_BAD),
	MNO("<\"a\\\x01\"@example.com>", M_BAD),
	MNO("<\"a\\\"@example.com>", M_BAD),
	MNO("<user(comment)@example.com>", M_BAD),
	MNO("<user,x@example.com>", M_BAD),
	MNO("<user;x@example.com>", M_BAD),
	MNO("<us[er@example.com>", M_BAD),
	MNO("<us\\er@example.com>", M_BAD),
	/* domains */
	MNO("<user@example..com>", M_BAD),
	MNO("<user@.example.com>", M_BAD),
	MNO("<user@example.com.>", M_BAD),
	MNO("<user@-example.com>", M_BAD),
	MNO("<user@example-.com>", M_BAD),
	MNO("<user@exa_mple.com>", M_BAD),
	MNO("<user@example.123>", M_BAD),
	MNO("<user@localhost>", M_FQDN),
	MNO("<user@LOCALHOST>", M_FQDN),
	/* 8-bit bytes (SMTPUTF8 is not offered) */
	MNO("<us\xc3\xa9r@example.com>", NONASCII),
	MNO("<user@ex\xc3\xa4mple.com>", NONASCII),
	MNO("<user@example.com\xff>", NONASCII),
	MNO("<\"\xc3\xa9\"@example.com>", NONASCII),
	MNO("<\"\\\xc3\xa9\"@example.com>", NONASCII),
	MNO("<user@[192.0.2.1\xff]>", NONASCII),
	MNO("<@ex\xc3\xa4mple.com:user@example.com>", NONASCII),
	MNO("<\xff>", NONASCII),
	MNO_IN(LAX, "\xc3\xa9@example.com", NONASCII),
	MNO_IN(STRICT, "\xc3\xa9@example.com", M_SYNTAX),
	MNO("<user@example.com>\xff", M_SYNTAX),
	MNO("<user@example.com> \xff", P_SYNTAX),
	/* non-strict: a bare mailbox */
	MLAX("user@example.com", "user", "example.com"),
	MLAX("  user@EXAMPLE.com  ", "user", "example.com"),
	MLAX("\"a b\"@example.com", "\"a b\"", "example.com"),
	MLAX("user%elsewhere.test@hosted.test", "user%elsewhere.test", "hosted.test"),
	/* parameters */
	MPAR("<user@example.com> SIZE=1000", true, 1000, BODY_NONE),
	MPAR("<user@example.com> SIZE=1000 BODY=8BITMIME", true, 1000, BODY_8BITMIME),
	MPAR("<user@example.com> size=0 body=7bit", true, 0, BODY_7BIT),
	MPAR("<user@example.com> Body=8bitMime", false, 0, BODY_8BITMIME),
	MPAR("<user@example.com>  SIZE=1\tBODY=7BIT  ", true, 1, BODY_7BIT),
	MPAR("<user@example.com> SIZE=00012", true, 12, BODY_NONE),
	MPAR("<user@example.com> SIZE=18446744073709551615", true, UINT64_MAX, BODY_NONE),
	MPAR("<user@example.com> SIZE=18446744073709551614", true, UINT64_MAX - 1, BODY_NONE),
	MPAR("<user@example.com> SIZE=18446744073709551616", true, UINT64_MAX, BODY_NONE),
	MPAR("<user@example.com> SIZE=99999999999999999999", true, UINT64_MAX, BODY_NONE),
	{ MAIL, BOTH, "<> SIZE=10 BODY=7BIT", NULL, "", "", false, true, true, 10, BODY_7BIT },
	{ MAIL, LAX, "user@example.com SIZE=10", NULL, "user", "example.com", false, false, true, 10,
	  BODY_NONE },
	MNO("<user@example.com> FOO", UNSUP("FOO")),
	MNO("<user@example.com> foo-bar=baz", UNSUP("foo-bar")),
	MNO("<user@example.com> SMTPUTF8", UNSUP("SMTPUTF8")),
	MNO("<user@example.com> AUTH=<>", UNSUP("AUTH")),
	MNO("<user@example.com> RET=HDRS ENVID=x", UNSUP("RET")),
	MNO("<> 8BITMIME", UNSUP("8BITMIME")),
	MNO("<user@example.com> FOO SIZE=x", UNSUP("FOO")),
	MNO("<user@example.com> SIZE=1 X-Y-Z=1", UNSUP("X-Y-Z")),
	MNO("<user@example.com> ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
	    UNSUP("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345...")),
	MNO("<user@example.com> SIZE", P_SIZE),
	MNO("<user@example.com> SIZE=-1", P_SIZE),
	MNO("<user@example.com> SIZE=+1", P_SIZE),
	MNO("<user@example.com> SIZE=1k", P_SIZE),
	MNO("<user@example.com> SIZE=123456789012345678901", P_SIZE),
	MNO("<user@example.com> SIZE=1 SIZE=1", P_DUPSIZE),
	MNO("<user@example.com> SIZE=1 size=2", P_DUPSIZE),
	MNO("<user@example.com> BODY=BINARYMIME", P_BODY),
	MNO("<user@example.com> BODY=8BIT", P_BODY),
	MNO("<user@example.com> BODY", P_BODY),
	MNO("<user@example.com> BODY=7BIT BODY=8BITMIME", P_DUPBODY),
	MNO("<user@example.com> SIZE=", P_SYNTAX),
	MNO("<user@example.com> SIZE==1", P_SYNTAX),
	MNO("<user@example.com> SIZE=1=2", P_SYNTAX),
	MNO("<user@example.com> =1", P_SYNTAX),
	MNO("<user@example.com> -X=1", P_SYNTAX),
	MNO("<user@example.com> X_Y=1", P_SYNTAX),
	MNO("<user@example.com> SI\xffZE=1", P_SYNTAX),
	MNO("<user@example.com> SIZE=1\r", P_SYNTAX),
	MNO("<user@example.com> SIZE=1\r\n", P_SYNTAX),
	MNO("<user@example.com> BODY=8BITMIME\x01", P_SYNTAX),

	/* RCPT TO */
	ROK("<user@hosted.test>", "user", "hosted.test"),
	ROK("<USER@HOSTED.TEST>", "USER", "hosted.test"),
	ROK(" <user@hosted.test> ", "user", "hosted.test"),
	ROK("<postmaster>", "postmaster", ""),
	ROK("<POSTMASTER>", "postmaster", ""),
	ROK("<PostMaster>", "postmaster", ""),
	ROK("\t<postmaster>\t", "postmaster", ""),
	ROK("<Postmaster@hosted.test>", "Postmaster", "hosted.test"),
	ROK("<user%elsewhere.test@hosted.test>", "user%elsewhere.test", "hosted.test"),
	ROK("<elsewhere.test!user@hosted.test>", "elsewhere.test!user", "hosted.test"),
	ROK("<\"user@elsewhere.test\"@hosted.test>", "\"user@elsewhere.test\"", "hosted.test"),
	ROK("<@hosted.test:user@elsewhere.test>", "user", "elsewhere.test"),
	ROK("<@hosted.test,@other.test:user@elsewhere.test>", "user", "elsewhere.test"),
	RLIT("<user@[192.0.2.99]>", "user", "[192.0.2.99]"),
	RLIT("<user@[IPv6:2001:db8::99]>", "user", "[IPv6:2001:db8::99]"),
	RLAX("postmaster", "postmaster", ""),
	RLAX("Postmaster ", "postmaster", ""),
	RLAX("user@hosted.test", "user", "hosted.test"),
	RNO("<>", R_BAD),
	RNO(" <> ", R_BAD),
	RNO("", R_SYNTAX),
	RNO("   ", R_SYNTAX),
	RNO_IN(STRICT, "postmaster", R_SYNTAX),
	RNO_IN(STRICT, "user@hosted.test", R_SYNTAX),
	RNO_IN(LAX, "postmaster>", R_BAD),
	RNO_IN(LAX, "postmasterx", R_BAD),
	RNO("<postmasterx>", R_BAD),
	RNO("<postmaste>", R_BAD),
	RNO("<postmaster@>", R_BAD),
	RNO("<postmaster >", R_BAD),
	RNO("< postmaster>", R_BAD),
	RNO("<\"postmaster\">", R_BAD),
	RNO("<@hosted.test:postmaster>", R_BAD),
	RNO("<postmaster>>", R_SYNTAX),
	RNO("<user@elsewhere.test@hosted.test>", R_BAD),
	RNO("<user@hosted.test.>", R_BAD),
	RNO("<user%elsewhere.test>", R_BAD),
	RNO("<elsewhere.test!user>", R_BAD),
	RNO("<\"user@elsewhere.test\">", R_BAD),
	RNO("<@hosted.test:>", R_BAD),
	RNO("<user@[::1]>", R_BAD),
	RNO("<user@localhost>", R_FQDN),
	RNO("<us\xc3\xa9r@hosted.test>", NONASCII),
	RNO("<user@hosted.test> NOTIFY=NEVER", UNSUP("NOTIFY")),
	RNO("<user@hosted.test> SIZE=10", UNSUP("SIZE")),
	RNO("<user@hosted.test> BODY=7BIT", UNSUP("BODY")),
	RNO("<postmaster> ORCPT=rfc822;a@b.c", UNSUP("ORCPT")),
	RNO("<user@hosted.test> =x", P_SYNTAX),
	RNO("<user@hosted.test> \x01", P_SYNTAX),
	RNO("<user@hosted.test>x", R_SYNTAX),
};

/* parse: one command on an exact copy; the out-parameters start as a
 * pattern that a refusal must leave alone. */
static const char *parse(enum cmd cmd, const char *arg, size_t n, bool strict,
			 struct mailbox *mb, struct mail_params *mp)
{
	char *p = exact(arg, n);
	const char *e;

	memset(mb, 0xa5, sizeof *mb);
	memset(mp, 0xa5, sizeof *mp);
	e = cmd == MAIL ? parse_mail_from(p, n, strict, mb, mp) : parse_rcpt_to(p, n, strict, mb);
	free(p);
	return e;
}

static bool untouched(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != 0xa5)
			return false;
	return true;
}

static void check_row(const struct row *r, bool strict)
{
	struct mailbox mb;
	struct mail_params mp;
	const char *cmd = r->cmd == MAIL ? "MAIL FROM:" : "RCPT TO:";
	const char *e = parse(r->cmd, r->arg, strlen(r->arg), strict, &mb, &mp);

	if (r->err != NULL) {
		if (e == NULL || strcmp(e, r->err) != 0)
			fail_msg("%s%s (strict=%d): got \"%s\", want \"%s\"", cmd,
				 shown(r->arg, strlen(r->arg)), strict, e ? e : "(accepted)", r->err);
		if (!untouched(&mb, sizeof mb) || !untouched(&mp, sizeof mp))
			fail_msg("%s%s: a refusal changed the out-parameters", cmd,
				 shown(r->arg, strlen(r->arg)));
		return;
	}
	if (e != NULL)
		fail_msg("%s%s (strict=%d): refused with \"%s\"", cmd, shown(r->arg, strlen(r->arg)),
			 strict, e);
	if (mb.null != r->null || (!r->null && (strcmp(mb.local, r->local) != 0 ||
						strcmp(mb.domain, r->domain) != 0 ||
						mb.literal != r->literal)))
		fail_msg("%s%s: got null=%d local \"%s\" domain \"%s\" literal=%d", cmd,
			 shown(r->arg, strlen(r->arg)), mb.null, mb.local, mb.domain, mb.literal);
	if (r->literal) {
		/* kept as written */
		const char *at = strrchr(r->arg, '@');
		assert_non_null(at);
		assert_memory_equal(mb.domain, at + 1, strlen(mb.domain));
		struct ipaddr want;
		assert_true(ipaddr_parse(mb.domain, strlen(mb.domain), &want));
		assert_true(ipaddr_equal(&want, &mb.ip));
	}
	if (r->cmd == MAIL && (mp.has_size != r->has_size || (r->has_size && mp.size != r->size) ||
			       mp.body != r->body))
		fail_msg("%s%s: params has_size=%d size=%llu body=%d", cmd,
			 shown(r->arg, strlen(r->arg)), mp.has_size, (unsigned long long)mp.size,
			 (int)mp.body);
}

static void test_table(void **state)
{
	size_t ok = 0, refused = 0;

	for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
		const struct row *r = &rows[i];
		if (r->when != LAX)
			check_row(r, true);
		if (r->when != STRICT)
			check_row(r, false);
		if (r->err)
			refused++;
		else
			ok++;
	}
	print_message("table: %zu accepted, %zu refused rows\n", ok, refused);
	assert_true(ok >= 50 && refused >= 150);
}

/* ---- lengths */

static char *repeat(char c, size_t n)
{
	char *p = xmalloc(n + 1);
	memset(p, c, n);
	p[n] = 0;
	return p;
}

/* domain_of: a valid name of exactly len octets (labels of 62, then the
 * rest, at least one octet, in a last label of 'b's). */
static char *domain_of(size_t len)
{
	char *s = xmalloc(len + 1);
	size_t i = 0;

	while (len - i > 63) {
		memset(s + i, 'a', 62);
		s[i + 62] = '.';
		i += 63;
	}
	memset(s + i, 'b', len - i);
	s[len] = 0;
	return s;
}

static const char *try(enum cmd cmd, const struct buf *b, bool strict, struct mailbox *mb)
{
	struct mail_params mp;

	return parse(cmd, b->data, b->len, strict, mb, &mp);
}

static void expect(enum cmd cmd, const struct buf *b, const char *want)
{
	struct mailbox mb;

	for (int strict = 0; strict <= 1; strict++) {
		const char *e = try(cmd, b, strict, &mb);
		if ((e == NULL) != (want == NULL) || (e && strcmp(e, want) != 0))
			fail_msg("%s (%zu bytes, strict=%d): got \"%s\", want \"%s\"",
				 shown(b->data, b->len), b->len, strict, e ? e : "(accepted)",
				 want ? want : "(accepted)");
	}
}

static void test_local_part_length(void **state)
{
	struct buf b = BUF_INIT;
	struct mailbox mb;

	for (size_t len = 63; len <= 66; len++) {
		char *l = repeat('x', len);
		buf_reset(&b);
		buf_printf(&b, "<%s@example.com>", l);
		expect(MAIL, &b, len <= LOCAL_MAX ? NULL : M_LONG);
		expect(RCPT, &b, len <= LOCAL_MAX ? NULL : R_LONG);
		if (len == LOCAL_MAX) {
			assert_null(try(RCPT, &b, true, &mb));
			assert_string_equal(mb.local, l);
		}
		/* quoted: the limit counts the quotes */
		buf_reset(&b);
		buf_printf(&b, "<\"%.*s\"@example.com>", (int)len - 2, l);
		expect(MAIL, &b, len <= LOCAL_MAX ? NULL : M_LONG);
		expect(RCPT, &b, len <= LOCAL_MAX ? NULL : R_LONG);
		/* dotted */
		memset(l, 'y', len);
		for (size_t i = 1; i + 1 < len; i += 2)
			l[i] = '.';
		buf_reset(&b);
		buf_printf(&b, "<%s@example.com>", l);
		expect(RCPT, &b, len <= LOCAL_MAX ? NULL : R_LONG);
		free(l);
	}
	buf_free(&b);
}

/* hostname_valid takes at most 253 octets (the DNS limit of a name in
 * text form): 253 is accepted, 254 and up (DOMAIN_MAX 255 included) are
 * "too long". */
static void test_domain_length(void **state)
{
	struct buf b = BUF_INIT;
	struct mailbox mb;

	for (size_t len = 250; len <= 257; len++) {
		char *d = domain_of(len);
		buf_reset(&b);
		buf_printf(&b, "<u@%s>", d);
		expect(MAIL, &b, len <= 253 ? NULL : M_LONG);
		expect(RCPT, &b, len <= 253 ? NULL : R_LONG);
		if (len == 253) {
			char out[LOCAL_MAX + DOMAIN_MAX + 2];
			assert_null(try(RCPT, &b, true, &mb));
			assert_string_equal(mb.domain, d);
			mailbox_format(&mb, out);
			assert_int_equal(strlen(out), 2 + 253);
		}
		/* the same length in upper case comes out lower-cased */
		for (char *p = d; *p; p++)
			*p = (char)(*p == '.' ? '.' : 'A');
		buf_reset(&b);
		buf_printf(&b, "<u@%s>", d);
		if (len <= 253) {
			assert_null(try(MAIL, &b, true, &mb));
			for (char *p = d; *p; p++)
				*p = ascii_tolower(*p);
			assert_string_equal(mb.domain, d);
		}
		free(d);
	}
	/* the longest mailbox: 64 + 1 + 253 fits mailbox_format's buffer */
	char *l = repeat('x', LOCAL_MAX), *d = domain_of(253);
	char out[LOCAL_MAX + DOMAIN_MAX + 2];
	buf_reset(&b);
	buf_printf(&b, "<%s@%s>", l, d);
	assert_null(try(RCPT, &b, true, &mb));
	mailbox_format(&mb, out);
	assert_int_equal(strlen(out), 64 + 1 + 253);
	free(l);
	free(d);
	/* a label of 63 octets is fine, 64 is not */
	buf_reset(&b);
	l = repeat('c', 63);
	buf_printf(&b, "<u@%s.example>", l);
	expect(RCPT, &b, NULL);
	free(l);
	buf_reset(&b);
	l = repeat('c', 64);
	buf_printf(&b, "<u@%s.example>", l);
	expect(RCPT, &b, R_BAD);
	free(l);
	buf_free(&b);
}

static void test_route_length(void **state)
{
	struct buf b = BUF_INIT;
	size_t hops;

	/* "@a.test," is 8 octets; the route (up to and including ':') may
	 * take PATH_MAX_LEN of them. */
	for (hops = 1; 8 * hops <= PATH_MAX_LEN; hops++) {
		buf_reset(&b);
		buf_putc(&b, '<');
		for (size_t i = 0; i < hops; i++)
			buf_puts(&b, i + 1 < hops ? "@a.test," : "@a.test:");
		buf_puts(&b, "user@example.com>");
		expect(MAIL, &b, NULL);
	}
	buf_reset(&b);
	buf_putc(&b, '<');
	for (size_t i = 0; i < hops; i++)
		buf_puts(&b, i + 1 < hops ? "@a.test," : "@a.test:");
	buf_puts(&b, "user@example.com>");
	expect(MAIL, &b, M_LONG);
	expect(RCPT, &b, R_LONG);
	buf_free(&b);
}

/* ---- generated damage to valid arguments */

struct valid {
	enum cmd cmd;
	const char *arg;
};

static const struct valid valids[] = {
	{ MAIL, "<user@example.com> SIZE=100 BODY=8BITMIME" },
	{ MAIL, "<>" },
	{ MAIL, "<> SIZE=1" },
	{ MAIL, "<@a.test,@b.test:\"q u\\\"o\"@[192.0.2.1]>" },
	{ MAIL, "<first.last@[IPv6:2001:db8::1]>" },
	{ RCPT, "<postmaster>" },
	{ RCPT, "<user%elsewhere.test@hosted.test>" },
	{ RCPT, "<@hosted.test:user@elsewhere.test>" },
	{ RCPT, "<\"user@elsewhere.test\"@hosted.test>" },
};

/* every byte in turn replaced by c: always refused */
static void damage(char c)
{
	struct mailbox mb;
	struct mail_params mp;
	size_t count = 0;

	for (size_t v = 0; v < ARRAY_LEN(valids); v++) {
		const char *arg = valids[v].arg;
		size_t n = strlen(arg);
		char *copy = xstrdup(arg);
		for (int strict = 0; strict <= 1; strict++)
			assert_null(parse(valids[v].cmd, arg, n, strict, &mb, &mp));
		for (size_t i = 0; i < n; i++) {
			memcpy(copy, arg, n);
			copy[i] = c;
			for (int strict = 0; strict <= 1; strict++) {
				if (parse(valids[v].cmd, copy, n, strict, &mb, &mp) == NULL)
					fail_msg("byte 0x%02x at %zu of \"%s\" (strict=%d) accepted",
						 (unsigned char)c, i, arg, strict);
				count++;
			}
		}
		/* and appended */
		char *longer = xmalloc(n + 1);
		memcpy(longer, arg, n);
		longer[n] = c;
		for (int strict = 0; strict <= 1; strict++)
			assert_non_null(parse(valids[v].cmd, longer, n + 1, strict, &mb, &mp));
		free(longer);
		free(copy);
	}
	assert_true(count > 300);
}

static void test_nul_everywhere(void **state) { damage('\0'); }
static void test_8bit_everywhere(void **state)
{
	damage('\x80');
	damage('\xff');
}
static void test_cr_lf_everywhere(void **state)
{
	damage('\r');
	damage('\n');
}

/* Every proper prefix of a path is refused, and n is honoured even when
 * the buffer holds more: a valid path after n does not count. */
static void test_truncations(void **state)
{
	static const struct valid paths[] = {
		{ MAIL, "<user@example.com>" },
		{ MAIL, "<@a.test:\"x y\"@[IPv6:2001:db8::1]>" },
		{ RCPT, "<postmaster>" },
		{ RCPT, "<user@[192.0.2.1]>" },
	};
	struct mailbox mb;
	struct mail_params mp;

	for (size_t v = 0; v < ARRAY_LEN(paths); v++) {
		size_t n = strlen(paths[v].arg);
		for (size_t k = 0; k < n; k++)
			for (int strict = 0; strict <= 1; strict++)
				if (parse(paths[v].cmd, paths[v].arg, k, strict, &mb, &mp) == NULL)
					fail_msg("prefix %zu of \"%s\" accepted", k, paths[v].arg);
	}
	/* the domain ends at n: "<u@example.com>" with n cutting ".com>" */
	assert_string_equal(parse(MAIL, "<u@example.com>", 10, true, &mb, &mp), M_BAD);
	/* NULL with n 0 */
	assert_string_equal(parse_mail_from(NULL, 0, true, &mb, &mp), M_SYNTAX);
	assert_string_equal(parse_rcpt_to(NULL, 0, false, &mb), R_SYNTAX);
}

/* ---- 100 KB inputs: linear, bounded, and refused with the right reply */

#define BIG (100 * 1024)

static void test_overlong(void **state)
{
	struct buf b = BUF_INIT;
	char *x = repeat('x', BIG);

	buf_printf(&b, "<%s@example.com>", x);
	expect(MAIL, &b, M_LONG);
	expect(RCPT, &b, R_LONG);

	buf_reset(&b);
	buf_printf(&b, "<\"%s\"@example.com>", x);
	expect(MAIL, &b, M_LONG);

	buf_reset(&b);
	buf_printf(&b, "<user@%s.com>", x);
	expect(MAIL, &b, M_LONG);
	expect(RCPT, &b, R_LONG);

	buf_reset(&b);
	buf_printf(&b, "<user@[%s]>", x);
	expect(RCPT, &b, R_LONG);

	buf_reset(&b);
	buf_printf(&b, "<@%s:user@example.com>", x);
	expect(MAIL, &b, M_LONG);

	buf_reset(&b);
	buf_putc(&b, '<');
	while (b.len < BIG)
		buf_puts(&b, "@a.test,");
	buf_puts(&b, "@a.test:user@example.com>");
	expect(RCPT, &b, R_LONG);

	buf_reset(&b);
	buf_printf(&b, "<user@example.com> %s", x);
	expect(MAIL, &b, UNSUP("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."));
	expect(RCPT, &b, UNSUP("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."));

	buf_reset(&b);
	buf_printf(&b, "<user@example.com> SIZE=%s", x);
	expect(MAIL, &b, P_SIZE);

	buf_reset(&b);
	buf_puts(&b, "<user@example.com>");
	while (b.len < BIG)
		buf_puts(&b, " SIZE=1");
	expect(MAIL, &b, P_DUPSIZE);

	buf_reset(&b);
	memset(x, '<', BIG);
	buf_append(&b, x, BIG);
	expect(MAIL, &b, M_BAD);

	/* blanks are skipped, however many */
	buf_reset(&b);
	memset(x, ' ', BIG);
	buf_append(&b, x, BIG);
	buf_puts(&b, "<user@example.com>");
	buf_append(&b, x, BIG);
	expect(MAIL, &b, NULL);
	expect(RCPT, &b, NULL);

	buf_reset(&b);
	buf_append(&b, x, BIG);
	expect(MAIL, &b, M_SYNTAX);

	free(x);
	buf_free(&b);
}

/* ---- the 555 reply is sanitized */

static void test_unsupported_reply(void **state)
{
	struct mailbox mb;
	struct mail_params mp;
	const char *e;

	e = parse(MAIL, L("<a@b.example> X-1"), true, &mb, &mp);
	assert_string_equal(e, UNSUP("X-1"));
	/* the buffer is reused: the next call's key replaces it */
	e = parse(RCPT, L("<a@b.example> Y"), true, &mb, &mp);
	assert_string_equal(e, UNSUP("Y"));
	/* exactly KEY_SHOW_MAX (32) octets: no ellipsis */
	e = parse(RCPT, L("<a@b.example> ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"), true, &mb, &mp);
	assert_string_equal(e, UNSUP("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"));
	/* a key outside the keyword grammar is never echoed */
	e = parse(RCPT, L("<a@b.example> X\x1b[2J=1"), true, &mb, &mp);
	assert_string_equal(e, P_SYNTAX);
}

/* ---- mailbox_format */

static void test_format(void **state)
{
	static const struct {
		enum cmd cmd;
		const char *arg, *want;
	} t[] = {
		{ MAIL, "<>", "" },
		{ MAIL, "<User@Example.COM>", "User@example.com" },
		{ MAIL, "<@a.test:user@example.com>", "user@example.com" },
		{ RCPT, "<PostMaster>", "postmaster" },
		{ RCPT, "<\"a b\"@example.com>", "\"a b\"@example.com" },
		{ RCPT, "<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]" },
		{ RCPT, "<user%elsewhere.test@hosted.test>", "user%elsewhere.test@hosted.test" },
	};
	char out[LOCAL_MAX + DOMAIN_MAX + 2];
	struct mailbox mb;
	struct mail_params mp;

	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		assert_null(parse(t[i].cmd, t[i].arg, strlen(t[i].arg), true, &mb, &mp));
		memset(out, 'Z', sizeof out);
		mailbox_format(&mb, out);
		assert_string_equal(out, t[i].want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_local_part_length),
		cmocka_unit_test(test_domain_length),
		cmocka_unit_test(test_route_length),
		cmocka_unit_test(test_nul_everywhere),
		cmocka_unit_test(test_8bit_everywhere),
		cmocka_unit_test(test_cr_lf_everywhere),
		cmocka_unit_test(test_truncations),
		cmocka_unit_test(test_overlong),
		cmocka_unit_test(test_unsupported_reply),
		cmocka_unit_test(test_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
