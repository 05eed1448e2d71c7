/* test_cf.c: the .cf reader (main.cf syntax), cf_set, expansion and type
 * checks in cf_finalize, and the cf_write_value round trip. Every case
 * asserts the exact diagnostics, file and line included, through a diag
 * sink that writes them as the default sink would. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "cf.h"
#include "util.h"

/* ---- fixture: a cf, a diag whose sink records a transcript ----------- */

struct fx {
	struct cf cf;
	struct diag d;
	struct buf log;
};

static void record(void *ctx, enum diag_level level, const char *file,
		   unsigned long line, const char *msg)
{
	struct buf *b = ctx;
	const char *what = level == DIAG_ERROR ? "error" : "warning";

	if (line)
		buf_printf(b, "%s:%lu: %s: %s\n", file, line, what, msg);
	else
		buf_printf(b, "%s: %s: %s\n", file, what, msg);
}

static void fx_reset(struct fx *f)
{
	cf_free(&f->cf);
	cf_init(&f->cf);
	buf_reset(&f->log);
	f->d = (struct diag){ record, &f->log, 0, 0 };
}

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof *f);

	cf_init(&f->cf);
	buf_init(&f->log);
	fx_reset(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	cf_free(&f->cf);
	buf_free(&f->log);
	free(f);
	return 0;
}

/* Lines of want and got must match one for one; a wanted line ending in
 * '*' only has to be a prefix (phrases that addr.c owns). */
static bool lines_match(const char *want, const char *got)
{
	for (;;) {
		size_t wn = strcspn(want, "\n"), gn = strcspn(got, "\n");
		if (wn == 0 && gn == 0 && !want[0] && !got[0])
			return true;
		if (wn > 0 && want[wn - 1] == '*') {
			if (gn < wn - 1 || memcmp(want, got, wn - 1) != 0)
				return false;
		} else if (wn != gn || memcmp(want, got, wn) != 0) {
			return false;
		}
		if (!want[wn] || !got[gn])
			return !want[wn] && !got[gn];
		want += wn + 1;
		got += gn + 1;
	}
}

static void expect_text(const char *what, const char *want, const char *got)
{
	if (!lines_match(want, got)) {
		/* One call per part: print_error truncates long messages. */
		print_error("%s:\n--- want\n", what);
		print_error("%s", want);
		print_error("--- got\n");
		print_error("%s", got);
		print_error("---\n");
		fail();
	}
}

/* dump_set: "LINE:name=raw" for every parameter set, in table order. */
static void dump_set(const struct cf *cf, struct buf *out)
{
	for (size_t i = 0; i < P__COUNT; i++) {
		if (cf->v[i].raw == NULL)
			continue;
		buf_printf(out, "%lu:%s=", cf->v[i].line, param_table[i].name);
		buf_put_printable(out, cf->v[i].raw, strlen(cf->v[i].raw));
		buf_putc(out, '\n');
	}
}

static enum param_id id_of(const char *name)
{
	int id = param_lookup(name, strlen(name));

	if (id < 0) {
		print_error("no parameter %s\n", name);
		fail();
	}
	return (enum param_id)id;
}

/* check_values: lines "name=expanded" or "name#number" after cf_finalize. */
static void check_values(const char *desc, const struct cf *cf, const char *checks)
{
	const char *p = checks;

	while (p && *p) {
		size_t n = strcspn(p, "\n"), k = strcspn(p, "=#");
		char name[128], want[512];
		snprintf(name, sizeof name, "%.*s", (int)k, p);
		snprintf(want, sizeof want, "%.*s", (int)(n - k - 1), p + k + 1);
		enum param_id id = id_of(name);
		if (p[k] == '=' && strcmp(cf_str(cf, id), want) != 0) {
			print_error("%s: %s is \"%s\", want \"%s\"\n", desc, name, cf_str(cf, id), want);
			fail();
		}
		if (p[k] == '#' && cf_num(cf, id) != atoll(want)) {
			print_error("%s: %s is %lld, want %s\n", desc, name, cf_num(cf, id), want);
			fail();
		}
		p += n + (p[n] != 0);
	}
}

/* ---- the reader ------------------------------------------------------ */

struct parse_case {
	const char *desc;
	const char *text;
	size_t len; /* 0: strlen(text) */
	const char *diags;
	const char *set;
};

#define WITH_NUL(s) s, sizeof(s) - 1

static const struct parse_case parse_cases[] = {
	{ "simple", "mail_name = foo\n", 0, "", "1:mail_name=foo\n" },
	{ "no blanks, no final newline", "mail_name=foo", 0, "", "1:mail_name=foo\n" },
	{ "value trimmed, inner blanks kept", "mail_name   =  \t a  b \t \n", 0, "",
	  "1:mail_name=a  b\n" },
	{ "empty value", "relayhost =\nmail_name=\n", 0, "", "2:mail_name=\n1:relayhost=\n" },
	{ "'#' and '=' inside a value", "smtpd_banner = a # b = c\n", 0, "",
	  "1:smtpd_banner=a # b = c\n" },
	{ "tab in a value", "smtpd_banner = a\tb\n", 0, "", "1:smtpd_banner=a\\x09b\n" },
	{ "continuation lines",
	  "mynetworks = 10.0.0.0/8\n  192.168.0.0/16   \n\t[::1]/128\nmail_name = m\n", 0, "",
	  "1:mynetworks=10.0.0.0/8 192.168.0.0/16 [::1]/128\n4:mail_name=m\n" },
	{ "comments and blank lines between continuation lines",
	  "mynetworks =\n  10.0.0.0/8\n# comment\n\n   # indented comment\n \t \n  [::1]/128\n"
	  "mail_name = x\n",
	  0, "", "1:mynetworks=10.0.0.0/8 [::1]/128\n8:mail_name=x\n" },
	{ "CRLF line endings", "mail_name = a b\r\nsmtpd_banner = x\r\n  y\r\n\r\n# c\r\n", 0, "",
	  "1:mail_name=a b\n2:smtpd_banner=x y\n" },
	{ "CRLF, last line without newline", "mail_name = a\r\nsmtpd_banner = b\r", 0, "",
	  "1:mail_name=a\n2:smtpd_banner=b\n" },
	{ "only comments", "# one\n   # two\n\n", 0, "", "" },
	{ "empty text", "", 0, "", "" },
	{ "NUL byte", WITH_NUL("mail_name = a\0b\nsmtpd_banner = ok\n"),
	  "t.cf:1: error: NUL byte in line\n", "2:smtpd_banner=ok\n" },
	{ "NUL byte in a continuation line", WITH_NUL("mail_name = a\n  b\0\nrelayhost = r\n"),
	  "t.cf:1: error: NUL byte in line\n", "3:relayhost=r\n" },
	{ "NUL byte in a comment", WITH_NUL("mail_name = a\n# \0\n"),
	  "t.cf:2: error: NUL byte in line\n", "1:mail_name=a\n" },
	{ "missing '='", "mail_name foo\nsmtpd_banner = b\n", 0,
	  "t.cf:1: error: missing \"=\" in \"mail_name foo\"\n", "2:smtpd_banner=b\n" },
	{ "missing name", "= x\n", 0, "t.cf:1: error: missing parameter name before \"=\"\n", "" },
	{ "bad name", "mail-name = x\nmail name = y\n", 0,
	  "t.cf:1: error: bad parameter name \"mail-name\"\n"
	  "t.cf:2: error: bad parameter name \"mail name\"\n",
	  "" },
	{ "unknown parameter", "no_such_param = 1\nMail_name = x\n", 0,
	  "t.cf:1: error: unknown parameter \"no_such_param\"\n"
	  "t.cf:2: error: unknown parameter \"Mail_name\"\n",
	  "" },
	{ "continuation with nothing to continue", "  mail_name = x\n\tmore\nsmtpd_banner = y\n", 0,
	  "t.cf:1: error: continuation line with nothing to continue"
	  " (a line that starts with white space)\n",
	  "3:smtpd_banner=y\n" },
	{ "control characters in a value", "mail_name = a\x01" "b\nsmtpd_banner = a\rb\n"
	  "relayhost = \x7f\n", 0,
	  "t.cf:1: error: mail_name: control character in value\n"
	  "t.cf:2: error: smtpd_banner: control character in value\n"
	  "t.cf:3: error: relayhost: control character in value\n",
	  "" },
	{ "set twice: warning, last wins", "mail_name = a\nsmtpd_banner = b\nmail_name = c\n", 0,
	  "t.cf:3: warning: mail_name: overriding earlier value at t.cf:1\n",
	  "3:mail_name=c\n2:smtpd_banner=b\n" },
	{ "every error in one run, each at its line",
	  WITH_NUL("mail_name foo\n  continued\nbad-name = 1\n# fine\nunknown_x = 2\n"
		   "mail_name = ok\n\0\nsmtpd_banner = fine\n  \tto the end\n"),
	  "t.cf:1: error: missing \"=\" in \"mail_name foo continued\"\n"
	  "t.cf:3: error: bad parameter name \"bad-name\"\n"
	  "t.cf:5: error: unknown parameter \"unknown_x\"\n"
	  "t.cf:7: error: NUL byte in line\n",
	  "6:mail_name=ok\n8:smtpd_banner=fine to the end\n" },
};

static void test_parse_cases(void **state)
{
	struct fx *f = *state;
	struct buf set = BUF_INIT;

	for (size_t i = 0; i < ARRAY_LEN(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		size_t len = c->len ? c->len : strlen(c->text);
		fx_reset(f);
		bool ok = cf_parse_text(&f->cf, "t.cf", c->text, len, &f->d);
		expect_text(c->desc, c->diags, buf_cstr(&f->log));
		buf_reset(&set);
		dump_set(&f->cf, &set);
		expect_text(c->desc, c->set, buf_cstr(&set));
		if (ok != (f->d.errors == 0)) {
			print_error("%s: returned %d with %u errors\n", c->desc, ok, f->d.errors);
			fail();
		}
	}
	buf_free(&set);
}

/* A logical line may be 65536 bytes, joined continuations included. */
static void test_parse_long_lines(void **state)
{
	struct fx *f = *state;
	struct buf t = BUF_INIT;
	const char *head = "dns_resolver = ";

	buf_puts(&t, head);
	for (size_t i = strlen(head); i < 65536; i++)
		buf_putc(&t, 'a');
	buf_puts(&t, "\n");
	assert_true(cf_parse_text(&f->cf, "t.cf", t.data, t.len, &f->d));
	assert_int_equal(strlen(f->cf.v[P_dns_resolver].raw), 65536 - strlen(head));

	fx_reset(f);
	buf_reset(&t);
	buf_puts(&t, "dns_resolver = ");
	for (size_t i = 0; i < 40000; i++)
		buf_putc(&t, 'a');
	buf_puts(&t, "\n  ");
	for (size_t i = 0; i < 30000; i++)
		buf_putc(&t, 'b');
	buf_puts(&t, "\n\tmore\nmail_name = m\nsmtpd_banner = ");
	for (size_t i = 0; i < 70000; i++)
		buf_putc(&t, 'c');
	assert_false(cf_parse_text(&f->cf, "t.cf", t.data, t.len, &f->d));
	expect_text("overlong", "t.cf:1: error: line longer than 65536 bytes\n"
		    "t.cf:5: error: line longer than 65536 bytes\n",
		    buf_cstr(&f->log));
	assert_null(f->cf.v[P_dns_resolver].raw);
	assert_string_equal(f->cf.v[P_mail_name].raw, "m");
	buf_free(&t);
}

static void test_set(void **state)
{
	struct fx *f = *state;
	struct cf *cf = &f->cf;

	/* The name is a counted string, not NUL-terminated. */
	assert_true(cf_set(cf, "mail_namexyz", 9, "v", "m", 2, &f->d));
	assert_string_equal(cf->v[P_mail_name].raw, "v");
	assert_true(cf_is_set(cf, P_mail_name));
	assert_false(cf_is_set(cf, P_smtpd_banner));
	assert_false(cf_set(cf, "bad\x01", 4, "v", "m", 3, &f->d));
	assert_false(cf_set(cf, "mail_name", 9, "a\nb", "m", 4, &f->d));
	assert_false(cf_set(cf, "mail_name", 9, "a\x7f", "m", 5, &f->d));
	cf_set_id(cf, P_smtpd_banner, "from the map", "map.xml", 0);
	assert_true(cf_set(cf, "smtpd_banner", 12, "b", "m", 6, &f->d));
	expect_text("cf_set", "m:3: error: unknown parameter \"bad\\x01\"\n"
		    "m:4: error: mail_name: control character in value\n"
		    "m:5: error: mail_name: control character in value\n"
		    "m:6: warning: smtpd_banner: overriding earlier value from map.xml\n",
		    buf_cstr(&f->log));
	assert_string_equal(cf->v[P_mail_name].raw, "v");
	assert_int_equal(f->d.errors, 3);
	assert_int_equal(f->d.warnings, 1);
}

/* ---- files ----------------------------------------------------------- */

static void test_parse_file(void **state)
{
	struct fx *f = *state;
	char path[] = "/tmp/test_cf.XXXXXX";
	const char text[] = "mail_name = a\r\n  b\r\nsmtpd_banner=x";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
	assert_true(cf_parse_file(&f->cf, path, &f->d));
	assert_string_equal(f->cf.v[P_mail_name].raw, "a b");
	assert_string_equal(f->cf.v[P_smtpd_banner].raw, "x");
	assert_ptr_equal(f->cf.v[P_smtpd_banner].file, path);
	assert_int_equal(f->cf.v[P_smtpd_banner].line, 3);

	/* Larger than the limit: refused before it is parsed. */
	fx_reset(f);
	assert_int_equal(ftruncate(fd, (16l << 20) + 1), 0);
	assert_false(cf_parse_file(&f->cf, path, &f->d));
	struct buf want = BUF_INIT;
	buf_printf(&want, "%s: error: file is larger than 16 MiB\n", path);
	expect_text("large", buf_cstr(&want), buf_cstr(&f->log));
	buf_free(&want);
	close(fd);
	unlink(path);

	fx_reset(f);
	assert_false(cf_parse_file(&f->cf, "/nonexistent/x.cf", &f->d));
	assert_false(cf_parse_file(&f->cf, "/", &f->d));
	expect_text("open", "/nonexistent/x.cf: error: cannot open: No such file or directory\n"
		    "/: error: cannot read: Is a directory\n",
		    buf_cstr(&f->log));
}

/* ---- expansion and types ----------------------------------------------- */

struct final_case {
	const char *desc;
	const char *text;   /* the .cf, read as t.cf */
	const char *diags;  /* parse and cf_finalize, in order */
	const char *checks; /* check_values() lines */
	bool bare;          /* without myhostname and instance_name from the map */
};

static const struct final_case final_cases[] = {
	/* the forms */
	{ "all reference forms", "mail_name = <$myhostname|${instance_name}|$(instance_name)>",
	  "", "mail_name=<mail.example.com|x|x>\n", false },
	{ "a name is as long as it can be", "mail_name = $instance_name_y",
	  "t.cf:1: error: mail_name: undefined parameter $instance_name_y\n", NULL, false },
	{ "conditionals",
	  "mail_name = ${instance_name?on}${instance_name:off}/${dns_resolver?on}${dns_resolver:off}",
	  "", "mail_name=on/off\n", false },
	{ "conditionals with parentheses", "mail_name = $(instance_name?a)$(dns_resolver:b)", "",
	  "mail_name=ab\n", false },
	{ "a reference inside a conditional", "mail_name = ${instance_name?<${myhostname}>}", "",
	  "mail_name=<mail.example.com>\n", false },
	{ "a conditional inside a conditional",
	  "mail_name = ${instance_name?${dns_resolver:none}}${dns_resolver?${instance_name:x}}", "",
	  "mail_name=none\n", false },
	{ "balanced brackets in the text", "mail_name = ${instance_name?{x}}$(instance_name?(a)b)",
	  "", "mail_name={x}(a)b\n", false },
	{ "$$", "mail_name = a$$b $${x} $$$myhostname $$", "",
	  "mail_name=a$b ${x} $mail.example.com $\n", false },
	{ "defaults follow the values they use", "mail_name = Foo\nconfig_directory = /etc/v/x",
	  "",
	  "smtpd_banner=mail.example.com ESMTP Foo\nsyslog_name=vhostmta/x\n"
	  "myorigin=mail.example.com\nsmtp_helo_name=mail.example.com\n"
	  "queue_directory=/var/lib/vhostmta/x\ntransport_table=/etc/v/x/transport\n"
	  "smtp_destination_concurrency_limit#20\nmaximal_queue_lifetime#432000\n"
	  "smtpd_timeout#300\ninet_protocols#0\nsmtp_tls_security_level#1\n", false },
	{ "the other branch of syslog_name", "instance_name =",
	  "t.cf:1: warning: instance_name: overriding earlier value at map.xml:4\n",
	  "syslog_name=vhostmta\ntransport_table=\nqueue_directory=/var/lib/vhostmta/\n", false },
	/* expansion errors */
	{ "undefined in the unused branch", "mail_name = ${dns_resolver?$nosuch}",
	  "t.cf:1: error: mail_name: undefined parameter $nosuch\n", NULL, false },
	{ "undefined condition", "mail_name = ${nosuch?x}",
	  "t.cf:1: error: mail_name: undefined parameter $nosuch\n", NULL, false },
	{ "two errors in one value", "mail_name = $nosuch1 and $(nosuch2)",
	  "t.cf:1: error: mail_name: undefined parameter $nosuch1\n"
	  "t.cf:1: error: mail_name: undefined parameter $nosuch2\n", NULL, false },
	{ "a loop of two", "mail_name = $dns_resolver\ndns_resolver = $mail_name",
	  "t.cf:1: error: mail_name: recursive expansion of $dns_resolver\n", NULL, false },
	{ "a loop of two, set in the other order", "dns_resolver = $mail_name\nmail_name = $dns_resolver",
	  "t.cf:2: error: mail_name: recursive expansion of $dns_resolver\n", NULL, false },
	{ "a loop through a default", "mail_name = x $smtpd_banner",
	  "t.cf:1: error: mail_name: recursive expansion of $smtpd_banner\n", NULL, false },
	{ "a loop through the map's value", "myhostname = $myorigin",
	  "t.cf:1: warning: myhostname: overriding earlier value at map.xml:5\n"
	  "t.cf:1: error: myhostname: recursive expansion of $myorigin\n", NULL, false },
	{ "self reference, twice", "mail_name = a${mail_name}b$mail_name",
	  "t.cf:1: error: mail_name: recursive expansion of $mail_name\n", NULL, false },
	{ "stray $ at the end", "mail_name = a$", "t.cf:1: error: mail_name: stray \"$\" in value\n", NULL, false },
	{ "stray $ before a blank or a sign", "mail_name = $ x\nsmtpd_banner = a$-b",
	  "t.cf:1: error: mail_name: stray \"$\" in value\n"
	  "t.cf:2: error: smtpd_banner: stray \"$\" in value\n", NULL, false },
	{ "malformed braces",
	  "mail_name = ${myhostname\nsmtpd_banner = ${}\nsyslog_name = $(a-b)x\n"
	  "dns_resolver = ${myhostname!x} ${myhostname?x",
	  "t.cf:1: error: mail_name: malformed \"${...}\" in value\n"
	  "t.cf:2: error: smtpd_banner: malformed \"${...}\" in value\n"
	  "t.cf:3: error: syslog_name: malformed \"$(...)\" in value\n"
	  "t.cf:4: error: dns_resolver: malformed \"${...}\" in value\n"
	  "t.cf:4: error: dns_resolver: malformed \"${...}\" in value\n", NULL, false },
	/* one mistake, one message */
	{ "a parameter in error does not fail those that use it", "myhostname = $nosuch",
	  "t.cf:1: warning: myhostname: overriding earlier value at map.xml:5\n"
	  "t.cf:1: error: myhostname: undefined parameter $nosuch\n", NULL, false },
	{ "a type error does not fail those that use it", "default_destination_concurrency_limit = 0",
	  "t.cf:1: error: default_destination_concurrency_limit: invalid value \"0\":"
	  " value 0 is below the minimum 1\n", NULL, false },
	{ "required, not set", "mail_name = x", "t.cf: error: myhostname: required parameter is not set\n",
	  "myorigin=\nsmtpd_banner= ESMTP x\n", true },
	{ "required, set empty", "myhostname =\n",
	  "t.cf:1: error: myhostname: required parameter is not set\n", NULL, true },
	{ "required, empty after expansion", "myhostname = $dns_resolver\n",
	  "t.cf:1: error: myhostname: required parameter is not set\n", NULL, true },
	{ "each error at its own line", "mail_name = $nosuch\n\nsmtpd_listen_port = 0\n",
	  "t.cf:1: error: mail_name: undefined parameter $nosuch\n"
	  "t.cf:3: error: smtpd_listen_port: invalid value \"0\": value 0 is below the minimum 1\n", NULL, false },
	/* PT_INT */
	{ "integers", "smtpd_listen_port = 1\nmessage_size_limit = 2147483647\n"
	  "smtpd_client_connection_count_limit = 0\nsmtpd_recipient_limit = 007\n"
	  "smtpd_session_limit = ${instance_name?12}3",
	  "", "smtpd_listen_port#1\nmessage_size_limit#2147483647\n"
	  "smtpd_client_connection_count_limit#0\nsmtpd_recipient_limit#7\nsmtpd_session_limit#123\n", false },
	{ "integer bounds", "smtpd_listen_port = 70000\nmessage_size_limit = 999\n"
	  "smtpd_recipient_limit = -1\nsmtpd_session_limit = 99999999999999999999999",
	  "t.cf:1: error: smtpd_listen_port: invalid value \"70000\":"
	  " value 70000 is above the maximum 65535\n"
	  "t.cf:2: error: message_size_limit: invalid value \"999\":"
	  " value 999 is below the minimum 1000\n"
	  "t.cf:3: error: smtpd_recipient_limit: invalid value \"-1\":"
	  " value -1 is below the minimum 1\n"
	  "t.cf:4: error: smtpd_session_limit: invalid value \"99999999999999999999999\":"
	  " value 99999999999999999999999 is above the maximum 1000000\n", NULL, false },
	{ "not integers", "smtpd_listen_port = abc\nsmtpd_session_limit = +1\n"
	  "smtpd_recipient_limit = 25 26\nsmtpd_hard_error_limit =\nsmtpd_junk_command_limit = 0x10",
	  "t.cf:1: error: smtpd_listen_port: invalid value \"abc\": \"abc\" is not a number\n"
	  "t.cf:2: error: smtpd_session_limit: invalid value \"+1\": \"+1\" is not a number\n"
	  "t.cf:3: error: smtpd_recipient_limit: invalid value \"25 26\": \"25 26\" is not a number\n"
	  "t.cf:4: error: smtpd_hard_error_limit: invalid value \"\": \"\" is not a number\n"
	  "t.cf:5: error: smtpd_junk_command_limit: invalid value \"0x10\": \"0x10\" is not a number\n", NULL, false },
	/* PT_BOOL */
	{ "booleans", "smtpd_freebind = YES\nsoft_bounce = No\nsmtpd_helo_required = yes", "",
	  "smtpd_freebind#1\nsoft_bounce#0\nsmtpd_helo_required#1\n", false },
	{ "not booleans", "smtpd_freebind = maybe\nsoft_bounce = 1",
	  "t.cf:1: error: smtpd_freebind: invalid value \"maybe\": \"maybe\" is not yes or no\n"
	  "t.cf:2: error: soft_bounce: invalid value \"1\": \"1\" is not yes or no\n", NULL, false },
	/* PT_TIME */
	{ "times, units and the default's unit",
	  "maximal_queue_lifetime = 2\nbounce_queue_lifetime = 1w\nsmtpd_timeout = 5m\n"
	  "delay_warning_time = 3\nsmtp_connect_timeout = 45\nminimal_backoff_time = 1h\n"
	  "maximal_backoff_time = 2d\nidle_exit_time = 0\nsmtpd_error_sleep_time = 60s",
	  "", "maximal_queue_lifetime#172800\nbounce_queue_lifetime#604800\nsmtpd_timeout#300\n"
	  "delay_warning_time#10800\nsmtp_connect_timeout#45\nminimal_backoff_time#3600\n"
	  "maximal_backoff_time#172800\nidle_exit_time#0\nsmtpd_error_sleep_time#60\n", false },
	{ "time bounds", "smtpd_timeout = 2h\nsmtp_helo_timeout = 0\nmaximal_queue_lifetime = 400\n"
	  "smtpd_error_sleep_time = 61\nbounce_queue_lifetime = 99999999999999999w\n"
	  "delay_warning_time = -1",
	  "t.cf:1: error: smtpd_timeout: invalid value \"2h\": value 2h is above the maximum 3600s (1h)\n"
	  "t.cf:2: error: smtp_helo_timeout: invalid value \"0\": value 0 is below the minimum 1s\n"
	  "t.cf:3: error: maximal_queue_lifetime: invalid value \"400\":"
	  " value 400 (400d) is above the maximum 31536000s (365d)\n"
	  "t.cf:4: error: smtpd_error_sleep_time: invalid value \"61\":"
	  " value 61 is above the maximum 60s (1m)\n"
	  "t.cf:5: error: bounce_queue_lifetime: invalid value \"99999999999999999w\":"
	  " value 99999999999999999w is above the maximum 31536000s (365d)\n"
	  "t.cf:6: error: delay_warning_time: invalid value \"-1\":"
	  " value -1 (-1h) is below the minimum 0s\n", NULL, false },
	{ "not times", "smtpd_timeout = 5x\nsmtp_helo_timeout = 5S\nsmtp_mail_timeout = 1h30m\n"
	  "smtp_rcpt_timeout = m",
	  "t.cf:1: error: smtpd_timeout: invalid value \"5x\": \"5x\" is not a time"
	  " (a number with an optional unit s, m, h, d or w)\n"
	  "t.cf:2: error: smtp_helo_timeout: invalid value \"5S\": \"5S\" is not a time"
	  " (a number with an optional unit s, m, h, d or w)\n"
	  "t.cf:3: error: smtp_mail_timeout: invalid value \"1h30m\": \"1h30m\" is not a time"
	  " (a number with an optional unit s, m, h, d or w)\n"
	  "t.cf:4: error: smtp_rcpt_timeout: invalid value \"m\": \"m\" is not a time"
	  " (a number with an optional unit s, m, h, d or w)\n", NULL, false },
	/* PT_ENUM */
	{ "choices, any case", "inet_protocols = IPv4\nsmtp_tls_security_level = verify", "",
	  "inet_protocols#1\nsmtp_tls_security_level#3\n", false },
	{ "not a choice", "inet_protocols = ipv5\nsmtpd_tls_security_level =",
	  "t.cf:1: error: inet_protocols: invalid value \"ipv5\": \"ipv5\" is not one of all, ipv4 or ipv6\n"
	  "t.cf:2: error: smtpd_tls_security_level: invalid value \"\":"
	  " \"\" is not one of none, may or encrypt\n", NULL, false },
	/* PT_HOSTNAME */
	{ "host names", "myorigin = example.com", "", "myorigin=example.com\n", false },
	{ "not host names", "myorigin = localhost\nsmtp_helo_name =",
	  "t.cf:1: error: myorigin: invalid value \"localhost\":"
	  " \"localhost\" is not a fully qualified host name\n"
	  "t.cf:2: error: smtp_helo_name: invalid value \"\": empty host name\n", NULL, false },
	{ "unprintable bytes are escaped", "myorigin = ex\xc3\xa4mple.com",
	  "t.cf:1: error: myorigin: invalid value \"ex\\xc3\\xa4mple.com\":"
	  " \"ex\\xc3\\xa4mple.com\" is not a fully qualified host name\n", NULL, false },
	/* PT_IFLIST (phrases are addr.c's) */
	{ "interface lists", "inet_interfaces = 192.0.2.1, [2001:db8::1]", "", NULL, false },
	{ "interface keyword", "inet_interfaces = loopback-only", "", NULL, false },
	{ "not an interface list", "inet_interfaces = 192.0.2.1 bogus",
	  "t.cf:1: error: inet_interfaces: invalid value \"192.0.2.1 bogus\": *\n", NULL, false },
	/* PT_ADDRLIST */
	{ "address lists", "proxy_interfaces = 192.0.2.1 [2001:db8::1],198.51.100.7", "", NULL, false },
	{ "empty address list", "proxy_interfaces =", "", NULL, false },
	{ "not an address list", "proxy_interfaces = 192.0.2.1 bogus",
	  "t.cf:1: error: proxy_interfaces: invalid value \"192.0.2.1 bogus\":"
	  " \"bogus\" is not an IP address\n", NULL, false },
	{ "duplicate addresses", "proxy_interfaces = 192.0.2.1, [2001:db8::1] 192.0.2.1",
	  "t.cf:1: error: proxy_interfaces: invalid value \"192.0.2.1, [2001:db8::1] 192.0.2.1\":"
	  " duplicate address 192.0.2.1\n", NULL, false },
	{ "duplicate IPv6 addresses in other spellings", "proxy_interfaces = 2001:db8::1 [2001:DB8:0::1]",
	  "t.cf:1: error: proxy_interfaces: invalid value \"2001:db8::1 [2001:DB8:0::1]\":"
	  " duplicate address 2001:db8::1\n", NULL, false },
	{ "an IPv4-mapped address is the IPv4 address", "proxy_interfaces = 192.0.2.1 ::ffff:192.0.2.1",
	  "t.cf:1: error: proxy_interfaces: invalid value \"192.0.2.1 ::ffff:192.0.2.1\":"
	  " duplicate address 192.0.2.1\n", NULL, false },
	/* PT_NETLIST */
	{ "network lists", "mynetworks = 10.0.0.0/8, [2001:db8::]/32 192.0.2.1", "", NULL, false },
	{ "not a network list", "mynetworks = 10.0.0.1/8",
	  "t.cf:1: error: mynetworks: invalid value \"10.0.0.1/8\": *\n", NULL, false },
	/* PT_ADDR4, PT_ADDR6 */
	{ "single addresses", "smtp_bind_address = 0.0.0.0\nsmtp_bind_address6 = [2001:db8::1]", "",
	  NULL, false },
	{ "unspecified IPv6", "smtp_bind_address6 = ::", "", NULL, false },
	{ "not single addresses", "smtp_bind_address = 2001:db8::1\nsmtp_bind_address6 = 192.0.2.1\n"
	  "smtp_bind_address = 192.0.2.1 192.0.2.2",
	  "t.cf:3: warning: smtp_bind_address: overriding earlier value at t.cf:1\n"
	  "t.cf:2: error: smtp_bind_address6: invalid value \"192.0.2.1\":"
	  " \"192.0.2.1\" is not an IPv6 address\n"
	  "t.cf:3: error: smtp_bind_address: invalid value \"192.0.2.1 192.0.2.2\":"
	  " \"192.0.2.1 192.0.2.2\" is not an IPv4 address\n", NULL, false },
	{ "IPv6 is not IPv4", "smtp_bind_address = 2001:db8::1",
	  "t.cf:1: error: smtp_bind_address: invalid value \"2001:db8::1\":"
	  " \"2001:db8::1\" is not an IPv4 address\n", NULL, false },
	/* PT_NEXTHOP */
	{ "next hops", "relayhost = [mx.example.com]:587", "", NULL, false },
	{ "not a next hop", "relayhost = [mx.example.com",
	  "t.cf:1: error: relayhost: invalid value \"[mx.example.com\": *\n", NULL, false },
	/* PT_PATH */
	{ "paths", "smtpd_tls_cert_file = /etc/ssl/c.pem", "",
	  "smtpd_tls_key_file=/etc/ssl/c.pem\n", false },
	{ "not paths", "queue_directory = var/spool\nsmtpd_tls_cert_file = /a\tb",
	  "t.cf:1: error: queue_directory: invalid value \"var/spool\":"
	  " \"var/spool\" is not an absolute path\n"
	  "t.cf:2: error: smtpd_tls_cert_file: invalid value \"/a\\x09b\": control character in value\n", NULL, false },
	/* PT_STR */
	{ "a tab in free text", "smtpd_banner = $myhostname\tESMTP", "",
	  "smtpd_banner=mail.example.com\tESMTP\n", false },
};

static void run_final_case(struct fx *f, const struct final_case *c)
{
	fx_reset(f);
	if (!c->bare) {
		cf_set_id(&f->cf, P_instance_name, "x", "map.xml", 4);
		cf_set_id(&f->cf, P_myhostname, "mail.example.com", "map.xml", 5);
	}
	cf_parse_text(&f->cf, "t.cf", c->text, strlen(c->text), &f->d);
	unsigned before = f->d.errors;
	bool ok = cf_finalize(&f->cf, "t.cf", &f->d);
	expect_text(c->desc, c->diags, buf_cstr(&f->log));
	if (ok != (f->d.errors == before) || !f->cf.final) {
		print_error("%s: cf_finalize returned %d\n", c->desc, ok);
		fail();
	}
	check_values(c->desc, &f->cf, c->checks);
}

static void test_finalize_cases(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(final_cases); i++)
		run_final_case(*state, &final_cases[i]);
}

/* Values the reader refuses can still come from the manager (cf_set_id). */
static void test_finalize_set_id(void **state)
{
	struct fx *f = *state;

	cf_set_id(&f->cf, P_myhostname, "mail.example.com", "map.xml", 5);
	cf_set_id(&f->cf, P_mail_name, "a\x01" "b", "m", 3);
	cf_set_id(&f->cf, P_dns_resolver, "x", NULL, 7);
	cf_set_id(&f->cf, P_relayhost, "$nosuch", NULL, 0);
	assert_false(cf_finalize(&f->cf, "d.cf", &f->d));
	expect_text("set_id", "m:3: error: mail_name: invalid value \"a\\x01b\": control character in value\n"
		    "d.cf: error: relayhost: undefined parameter $nosuch\n",
		    buf_cstr(&f->log));
}

/* A long bad value is shortened in the message, and its phrase is not lost. */
static void test_finalize_long_value(void **state)
{
	struct fx *f = *state;
	struct buf v = BUF_INIT, want = BUF_INIT;

	for (int i = 0; i < 150; i++)
		buf_putc(&v, 'a');
	cf_set_id(&f->cf, P_myhostname, "mail.example.com", "map.xml", 5);
	cf_set_id(&f->cf, P_smtpd_listen_port, v.data, "t.cf", 9);
	assert_false(cf_finalize(&f->cf, "t.cf", &f->d));
	buf_printf(&want, "t.cf:9: error: smtpd_listen_port: invalid value \"%.100s...\":"
		   " \"%.64s...\" is not a number\n", v.data, v.data);
	expect_text("long", buf_cstr(&want), buf_cstr(&f->log));
	buf_free(&v);
	buf_free(&want);
}

/* A chain longer than the depth bound is refused, not followed. */
static void test_finalize_depth(void **state)
{
	struct fx *f = *state;
	char v[128];
	size_t nested = 0;

	cf_set_id(&f->cf, P_myhostname, "mail.example.com", "map.xml", 5);
	for (size_t i = 1; i + 1 < P__COUNT && i <= 40; i++) {
		snprintf(v, sizeof v, "$%s", param_table[i + 1].name);
		cf_set_id(&f->cf, (enum param_id)i, v, "t.cf", i);
	}
	assert_false(cf_finalize(&f->cf, "t.cf", &f->d));
	for (const char *p = buf_cstr(&f->log); (p = strstr(p, "nested too deeply")); p++)
		nested++;
	assert_int_equal(nested, 1);
	/* Reported where the value that refers one level too deep was set. */
	struct buf want = BUF_INIT;
	buf_printf(&want, "t.cf:32: error: %s: expansion of $%s nested too deeply (more than 32 levels)\n",
		   param_table[32].name, param_table[33].name);
	assert_non_null(strstr(buf_cstr(&f->log), buf_cstr(&want)));
	buf_free(&want);
}

/* The manager changes a value and finalizes the same cf again. */
static void test_finalize_again(void **state)
{
	struct fx *f = *state;

	assert_string_equal(cf_str(&f->cf, P_smtpd_banner), "");
	cf_set_id(&f->cf, P_myhostname, "mail.example.com", "map.xml", 5);
	assert_true(cf_finalize(&f->cf, "t.cf", &f->d));
	assert_string_equal(cf_str(&f->cf, P_smtpd_banner), "mail.example.com ESMTP vhostmta");
	assert_int_equal(cf_num(&f->cf, P_smtpd_listen_port), 25);
	cf_set_id(&f->cf, P_mail_name, "Z", "map.xml", 6);
	assert_false(f->cf.final);
	assert_true(cf_finalize(&f->cf, "t.cf", &f->d));
	assert_string_equal(cf_str(&f->cf, P_smtpd_banner), "mail.example.com ESMTP Z");
	assert_int_equal(f->d.errors + f->d.warnings, 0);
}

/* ---- the writer ------------------------------------------------------ */

/* has_fold_point: a place cf_write_value may fold at in s[0..n). */
static bool has_fold_point(const char *s, size_t n)
{
	for (size_t k = 1; k + 1 < n; k++)
		if (s[k] == ' ' && !strchr(" \t", s[k - 1]) && !strchr(" \t#", s[k + 1]))
			return true;
	return false;
}

/* roundtrip: write value, check the fold, read it back unchanged. */
static void roundtrip(struct fx *f, const char *value)
{
	struct buf out = BUF_INIT;
	const char *head = "dns_resolver = ";

	fx_reset(f);
	cf_write_value(&out, "dns_resolver", value);
	/* A line is longer than 78 columns only when it holds one word. */
	for (const char *p = out.data; *p;) {
		size_t n = strcspn(p, "\n"), skip = p == out.data ? strlen(head) : 4;
		if (n > 78 && has_fold_point(p + skip, n - skip)) {
			print_error("foldable line of %zu bytes: %.*s\n", n, (int)n, p);
			fail();
		}
		p += n + 1;
	}
	assert_true(cf_parse_text(&f->cf, "w.cf", out.data, out.len, &f->d));
	assert_non_null(f->cf.v[P_dns_resolver].raw);
	if (strcmp(f->cf.v[P_dns_resolver].raw, value) != 0) {
		print_error("wrote:\n%sread: %s\n", out.data, f->cf.v[P_dns_resolver].raw);
		fail();
	}
	buf_free(&out);
}

static void test_write_value(void **state)
{
	struct fx *f = *state;
	struct buf out = BUF_INIT, v = BUF_INIT;

	cf_write_value(&out, "relayhost", "");
	cf_write_value(&out, "mail_name", "short value");
	for (int i = 0; i < 10; i++)
		buf_printf(&v, "%s198.51.100.0/24", i ? " " : "");
	cf_write_value(&out, "mynetworks", v.data);
	assert_string_equal(out.data,
			    "relayhost =\n"
			    "mail_name = short value\n"
			    "mynetworks = 198.51.100.0/24 198.51.100.0/24 198.51.100.0/24 198.51.100.0/24\n"
			    "    198.51.100.0/24 198.51.100.0/24 198.51.100.0/24 198.51.100.0/24\n"
			    "    198.51.100.0/24 198.51.100.0/24\n");

	static const char *const words[] = {
		"192.0.2.1", "#not-a-comment", "a  b", "t\tu", "x=y", "$z", "${w}", "[2001:db8::1]",
	};
	for (size_t w = 0; w < ARRAY_LEN(words); w++) {
		buf_reset(&v);
		for (int i = 0; i < 60; i++)
			buf_printf(&v, "%s%s", i ? " " : "", words[(w + (size_t)i) % ARRAY_LEN(words)]);
		roundtrip(f, v.data);
	}
	buf_reset(&v);
	for (int i = 0; i < 200; i++)
		buf_putc(&v, 'k');
	roundtrip(f, v.data);
	buf_puts(&v, " and then some words after one long word of two hundred bytes, ok");
	roundtrip(f, v.data);
	roundtrip(f, "x");
	roundtrip(f, "");
	buf_free(&out);
	buf_free(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_parse_cases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_long_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finalize_cases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finalize_set_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finalize_long_value, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finalize_depth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finalize_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_value, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
