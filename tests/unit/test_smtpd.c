/* test_smtpd.c: the ESMTP session engine, driven by dialogues: what the
 * client sends in each read, and the exact replies. A real queue (in a
 * temporary directory) and a real policy back the session, so a dialogue
 * also shows what reached the queue. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "cf.h"
#include "policy.h"
#include "queue.h"
#include "smtpd.h"
#include "util.h"

static char tmpdir[256];

struct env {
	struct cf cf;
	struct policy policy;
	struct queue *queue;
	struct smtpd_config config;
	int wakes;
};

static void wake(void *ctx) { ((struct env *)ctx)->wakes++; }

static const char *tmp(const char *rel)
{
	static char p[4][512];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, rel);
	return p[k];
}

/* env_open: an instance configuration: extra is more instance.cf lines. */
static void env_open(struct env *e, const char *extra)
{
	struct diag d = DIAG_INIT;
	struct buf text = BUF_INIT;
	char cmd[600];

	snprintf(cmd, sizeof cmd, "rm -rf '%s/q'", tmpdir);
	assert_int_equal(system(cmd), 0);
	FILE *f = fopen(tmp("transport"), "w");
	assert_non_null(f);
	fputs("hosted.test\tsmtp:[192.0.2.100]:25\n", f);
	fclose(f);
	buf_printf(&text,
		   "myhostname = mail.hosted.test\n"
		   "instance_name = t\n"
		   "inet_interfaces = 192.0.2.1\n"
		   "mynetworks = 127.0.0.0/8\n"
		   "queue_directory = %s/q\n"
		   "transport_table = %s/transport\n%s",
		   tmpdir, tmpdir, extra ? extra : "");
	memset(e, 0, sizeof *e);
	cf_init(&e->cf);
	assert_true(cf_parse_text(&e->cf, "test.cf", text.data, text.len, &d));
	assert_true(cf_finalize(&e->cf, "test.cf", &d));
	assert_true(policy_load(&e->policy, cf_str(&e->cf, P_transport_table),
				cf_str(&e->cf, P_mynetworks), cf_str(&e->cf, P_inet_interfaces),
				cf_str(&e->cf, P_proxy_interfaces), &d));
	e->queue = queue_open(cf_str(&e->cf, P_queue_directory));
	assert_non_null(e->queue);
	e->config = (struct smtpd_config){ &e->cf, &e->policy, e->queue, false };
	buf_free(&text);
}

static void env_close(struct env *e)
{
	queue_close(e->queue);
	policy_free(&e->policy);
	cf_free(&e->cf);
}

static struct smtpd *session(struct env *e, const char *client)
{
	struct smtpd_client c = { 0 };
	assert_true(ipaddr_parse(client, strlen(client), &c.addr));
	c.port = 40000;
	assert_true(ipaddr_parse("192.0.2.1", 9, &c.local));
	c.local_port = 25;
	return smtpd_new(&e->config, &c, (struct smtpd_io){ wake, e });
}

/* take: the output so far, consumed. */
static char *take(struct smtpd *s)
{
	struct buf *out = smtpd_output(s);
	char *text = xstrdup(buf_cstr(out));
	buf_reset(out);
	return text;
}

/* send: feed all of text as one read, running the queue's group commit
 * whenever the session waits for it, as the event loop does. */
static void client_send(struct env *e, struct smtpd *s, const char *text, size_t n)
{
	size_t used = 0;
	while (used < n && smtpd_status(s) != SMTPD_CLOSING) {
		used += smtpd_feed(s, text + used, n - used);
		if (smtpd_status(s) == SMTPD_WAITING)
			queue_flush(e->queue);
	}
}

/* expect: after sending text, the replies are exactly want. */
static void expect(struct env *e, struct smtpd *s, const char *text, const char *want)
{
	client_send(e, s, text, strlen(text));
	char *got = take(s);
	if (strcmp(got, want) != 0) {
		/* queue ids vary: compare up to "queued as " then skip the id. */
		const char *q = strstr(want, "queued as ");
		if (q == NULL || strncmp(got, want, (size_t)(q - want) + 10) != 0 ||
		    strcmp(got + (q - want) + 10 + QID_LEN, q + 10 + 2) != 0) {
			print_error("sent:\n%s\nwanted:\n%s\ngot:\n%s\n", text, want, got);
			fail();
		}
	}
	free(got);
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;
	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

#define GREETING "220 mail.hosted.test ESMTP vhostmta\r\n"
#define EHLO_REPLY "250-mail.hosted.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n" \
		   "250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
#define TLS_EHLO_REPLY "250-mail.hosted.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n" \
		       "250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
#define QUEUED "250 2.0.0 Ok: queued as XX\r\n"

static struct smtpd *greeted(struct env *e, const char *client)
{
	struct smtpd *s = session(e, client);
	char *g = take(s);
	assert_string_equal(g, GREETING);
	free(g);
	return s;
}

static void test_basic_transaction(void **state)
{
	struct env e;
	env_open(&e, NULL);
	struct smtpd *s = greeted(&e, "198.51.100.7");
	expect(&e, s, "EHLO client.example\r\n", EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<user@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "RCPT TO:<User@HOSTED.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	expect(&e, s, "Subject: hi\r\n\r\n..stuffed\r\nbody\r\n.\r\n", QUEUED);
	assert_int_equal(count_files(tmp("q/incoming")), 1);
	assert_int_equal(count_files(tmp("q/tmp")), 0);
	expect(&e, s, "QUIT\r\n", "221 2.0.0 Bye\r\n");
	assert_int_equal(smtpd_status(s), SMTPD_CLOSING);
	smtpd_free(s);

	/* Read the message back: envelope and unstuffed content. */
	DIR *d = opendir(tmp("q/incoming"));
	struct dirent *de;
	char path[600];
	while ((de = readdir(d)) != NULL && de->d_name[0] == '.')
		;
	assert_non_null(de);
	snprintf(path, sizeof path, "%s/%s", tmp("q/incoming"), de->d_name);
	closedir(d);
	struct qmsg m;
	char err[200];
	assert_true(qmsg_read(path, &m, err, sizeof err));
	assert_string_equal(m.sender, "a@b.example");
	assert_int_equal(m.nrcpts, 2);
	assert_string_equal(m.rcpts[0], "user@hosted.test");
	assert_string_equal(m.rcpts[1], "User@hosted.test");
	FILE *f = fopen(path, "rb");
	char *data = xmalloc(m.data_len + 1);
	assert_int_equal(fseek(f, m.data_offset, SEEK_SET), 0);
	/* The DATA records' payloads, concatenated. */
	size_t got = 0;
	while (got < m.data_len) {
		unsigned char h[5];
		assert_int_equal(fread(h, 1, 5, f), 5);
		assert_int_equal(h[0], QREC_DATA);
		size_t len = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
		assert_int_equal(fread(data + got, 1, len, f), len);
		got += len;
	}
	data[got] = 0;
	fclose(f);
	assert_true(str_has_prefix(data, "Received: from client.example ([198.51.100.7])\r\n\tby mail.hosted.test (vhostmta) with ESMTP id "));
	assert_non_null(strstr(data, "\r\nSubject: hi\r\n\r\n.stuffed\r\nbody\r\n"));
	assert_null(strstr(data, "..stuffed"));
	free(data);
	qmsg_free(&m);
	env_close(&e);
}

static void test_order_and_syntax(void **state)
{
	struct env e;
	env_open(&e, "smtpd_helo_required = yes\n");
	struct smtpd *s = greeted(&e, "127.0.0.1");
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
	expect(&e, s, "HELO\r\n", "501 5.5.4 Syntax: HELO hostname\r\n");
	expect(&e, s, "HELO c.example\r\n", "250 mail.hosted.test\r\n");
	expect(&e, s, "RCPT TO:<user@hosted.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	expect(&e, s, "DATA\r\n", "503 5.5.1 Error: need RCPT command\r\n");
	expect(&e, s, "MAIL FROM:<a@b.example> SIZE=1\r\n",
	       "555 5.5.4 Unsupported option: ESMTP parameters need EHLO\r\n");
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "503 5.5.1 Error: nested MAIL command\r\n");
	expect(&e, s, "DATA\r\n", "554 5.5.1 Error: no valid recipients\r\n");
	expect(&e, s, "RSET\r\n", "250 2.0.0 Ok\r\n");
	expect(&e, s, "MAIL TO:<a@b.example>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	expect(&e, s, "FOO bar\r\n", "502 5.5.2 Error: command not recognized\r\n");
	expect(&e, s, "STARTTLS\r\n", "502 5.5.1 Error: command not implemented\r\n");
	expect(&e, s, "VRFY user\r\n",
	       "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
	expect(&e, s, "HELP\r\n", "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT\r\n");
	expect(&e, s, "noop\r\n", "250 2.0.0 Ok\r\n");
	smtpd_free(s);
	env_close(&e);
}

/* STARTTLS in the engine (RFC 3207): offered only with a certificate and a
 * level other than none; the 220 hands over to the connection layer;
 * plaintext pipelined after it ends the session (CVE-2011-0411); after
 * the handshake everything starts over; encrypt refuses mail before it. */
static void test_starttls(void **state)
{
	struct env e;
	env_open(&e, "smtpd_tls_security_level = may\n");
	e.config.tls = true;
	struct smtpd *s = greeted(&e, "198.51.100.7");
	expect(&e, s, "STARTTLS\r\n", "503 5.5.1 Error: send EHLO first\r\n");
	expect(&e, s, "EHLO c.example\r\n", TLS_EHLO_REPLY);
	expect(&e, s, "STARTTLS now\r\n", "501 5.5.4 Syntax: STARTTLS\r\n");
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "STARTTLS\r\n", "503 5.5.1 Error: MAIL transaction in progress\r\n");
	expect(&e, s, "RSET\r\n", "250 2.0.0 Ok\r\n");
	expect(&e, s, "STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n");
	assert_int_equal(smtpd_status(s), SMTPD_STARTTLS);
	/* Nothing is consumed until the handshake is done. */
	assert_int_equal(smtpd_feed(s, "EHLO x\r\n", 8), 0);
	smtpd_tls_started(s, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)");
	assert_int_equal(smtpd_status(s), SMTPD_OPEN);
	char *none = take(s);
	assert_string_equal(none, ""); /* no second greeting */
	free(none);
	/* The earlier EHLO is forgotten: MAIL with parameters needs a new one. */
	expect(&e, s, "MAIL FROM:<a@b.example> SIZE=10\r\n",
	       "555 5.5.4 Unsupported option: ESMTP parameters need EHLO\r\n");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "STARTTLS\r\n", "554 5.5.1 Error: TLS already active\r\n");
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<user@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	expect(&e, s, "Subject: hi\r\n\r\nbody\r\n.\r\n", QUEUED);
	smtpd_free(s);

	/* The injection: STARTTLS and a command in one read never gets
	 * to the handshake; the command is never answered. */
	s = greeted(&e, "198.51.100.7");
	expect(&e, s, "EHLO c.example\r\n", TLS_EHLO_REPLY);
	expect(&e, s, "STARTTLS\r\nRSET\r\n", "554 5.5.0 Error: improper use of SMTP command pipelining\r\n");
	assert_int_equal(smtpd_status(s), SMTPD_CLOSING);
	smtpd_free(s);

	/* A shutdown during the handshake: 421 inside TLS, not before. */
	s = greeted(&e, "198.51.100.7");
	expect(&e, s, "EHLO c.example\r\n", TLS_EHLO_REPLY);
	expect(&e, s, "STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n");
	smtpd_shutdown(s);
	none = take(s);
	assert_string_equal(none, "");
	free(none);
	smtpd_tls_started(s, "TLSv1.2 with cipher X (128/128 bits)");
	char *got = take(s);
	assert_string_equal(got, "421 4.3.2 mail.hosted.test Service shutting down\r\n");
	free(got);
	assert_int_equal(smtpd_status(s), SMTPD_CLOSING);
	smtpd_free(s);
	env_close(&e);

	/* No certificate loaded: not offered, not accepted. */
	env_open(&e, "smtpd_tls_security_level = may\n");
	s = greeted(&e, "198.51.100.7");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "STARTTLS\r\n", "502 5.5.1 Error: command not implemented\r\n");
	smtpd_free(s);
	env_close(&e);

	/* encrypt: mail only after STARTTLS. */
	env_open(&e, "smtpd_tls_security_level = encrypt\n");
	e.config.tls = true;
	s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n", TLS_EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n");
	expect(&e, s, "RCPT TO:<user@hosted.test>\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n");
	expect(&e, s, "VRFY x\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n");
	expect(&e, s, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	expect(&e, s, "STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n");
	smtpd_tls_started(s, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<user@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	expect(&e, s, "Subject: hi\r\n\r\nbody\r\n.\r\n", QUEUED);
	smtpd_free(s);
	env_close(&e);
}

/* The relay policy as the session applies it: inside and outside mynetworks. */
static void test_relay_policy(void **state)
{
	static const struct {
		const char *client, *rcpt, *reply;
	} cases[] = {
		{ "198.51.100.7", "<user@hosted.test>", "250 2.1.5 Ok\r\n" },
		{ "198.51.100.7", "<user@elsewhere.test>", "554 5.7.1 <user@elsewhere.test>: Relay access denied\r\n" },
		{ "198.51.100.7", "<@hosted.test:user@elsewhere.test>", "554 5.7.1 <user@elsewhere.test>: Relay access denied\r\n" },
		{ "198.51.100.7", "<user%elsewhere.test@hosted.test>", "250 2.1.5 Ok\r\n" },
		{ "198.51.100.7", "<user@[192.0.2.1]>", "250 2.1.5 Ok\r\n" },
		{ "198.51.100.7", "<user@[192.0.2.77]>", "554 5.7.1 <user@[192.0.2.77]>: Relay access denied\r\n" },
		{ "198.51.100.7", "<postmaster>", "250 2.1.5 Ok\r\n" },
		{ "127.0.0.1", "<user@elsewhere.test>", "250 2.1.5 Ok\r\n" },
		{ "127.0.0.1", "<user@[192.0.2.77]>", "250 2.1.5 Ok\r\n" },
	};
	struct env e;
	env_open(&e, NULL);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct smtpd *s = greeted(&e, cases[i].client);
		char line[300];
		expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
		expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
		snprintf(line, sizeof line, "RCPT TO:%s\r\n", cases[i].rcpt);
		expect(&e, s, line, cases[i].reply);
		smtpd_free(s);
	}
	env_close(&e);
}

static void test_pipelining(void **state)
{
	struct env e;
	env_open(&e, NULL);
	struct smtpd *s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@hosted.test>\r\nRCPT TO:<y@nowhere.test>\r\nDATA\r\n",
	       "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	/* The final dot and the next transaction in one read. */
	expect(&e, s, "hello\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<x@hosted.test>\r\nDATA\r\n",
	       "250 2.0.0 Ok: queued as XX\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	expect(&e, s, ".\r\nQUIT\r\n", "250 2.0.0 Ok: queued as XX\r\n221 2.0.0 Bye\r\n");
	assert_int_equal(count_files(tmp("q/incoming")), 2);
	assert_true(e.wakes >= 2);
	smtpd_free(s);
	env_close(&e);
}

/* Pipelining without EHLO, or after a command that must end a group,
 * ends the session: content sent with DATA before the 354 never becomes
 * a message. */
static void test_improper_pipelining(void **state)
{
	static const char *const openers[] = { "HELO c.example\r\n", "EHLO c.example\r\n" };
	static const char *const bursts[] = {
		"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@hosted.test>\r\n",
		"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@hosted.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
	};
	for (size_t k = 0; k < 2; k++) {
		struct env e;
		env_open(&e, NULL);
		struct smtpd *s = greeted(&e, "127.0.0.1");
		client_send(&e, s, openers[k], strlen(openers[k]));
		free(take(s));
		client_send(&e, s, bursts[k], strlen(bursts[k]));
		char *got = take(s);
		assert_non_null(strstr(got, "554 5.5.0 Error: improper use of SMTP command pipelining\r\n"));
		assert_null(strstr(got, "queued as"));
		assert_int_equal(smtpd_status(s), SMTPD_CLOSING);
		assert_int_equal(count_files(tmp("q/incoming")), 0);
		free(got);
		smtpd_free(s);
		env_close(&e);
	}
	/* EHLO followed by more in the same read. */
	struct env e;
	env_open(&e, NULL);
	struct smtpd *s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n",
	       "554 5.5.0 Error: improper use of SMTP command pipelining\r\n");
	smtpd_free(s);
	env_close(&e);
}

/* SMTP smuggling: every sequence that some server takes for the end of
 * DATA is content here, the message is refused at the real end, and what
 * follows the fake end is never a command. */
static void test_smuggling(void **state)
{
	static const char *const fake_ends[] = {
		"\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n", "\r\n.\r", "\n.", ".\n", "\r\n.\rX\r\n",
		"\r\n\n.\r\n", "\r\r\n.\n", "x\ry\r\n",
	};
	for (size_t i = 0; i < ARRAY_LEN(fake_ends); i++) {
		struct env e;
		struct buf msg = BUF_INIT;
		env_open(&e, NULL);
		struct smtpd *s = greeted(&e, "127.0.0.1");
		expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
		expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
		expect(&e, s, "RCPT TO:<x@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
		expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
		buf_printf(&msg, "Subject: one\r\n\r\nbody%sMAIL FROM:<evil@b.example>\r\n"
				 "RCPT TO:<victim@hosted.test>\r\nDATA\r\nSubject: two\r\n\r\n.\r\n",
			   fake_ends[i]);
		client_send(&e, s, msg.data, msg.len);
		char *got = take(s);
		if (strcmp(got, "550 5.5.2 Error: bare <CR> or <LF> in message content (SMTP "
				"smuggling defense): message discarded\r\n") != 0) {
			print_error("case %zu: got %s\n", i, got);
			fail();
		}
		free(got);
		assert_int_equal(count_files(tmp("q/incoming")), 0);
		assert_int_equal(count_files(tmp("q/tmp")), 0);
		/* The session goes on: a clean message is accepted. */
		expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
		buf_free(&msg);
		smtpd_free(s);
		env_close(&e);
	}
}

static void test_bad_command_lines(void **state)
{
	struct env e;
	env_open(&e, "line_length_limit = 600\n");
	struct smtpd *s = greeted(&e, "127.0.0.1");
	expect(&e, s, "NOOP\n", "500 5.5.2 Error: bare <LF> received\r\n");
	expect(&e, s, "NO\rOP\r\n", "500 5.5.2 Error: bare <CR> in command\r\n");
	client_send(&e, s, "NO\0OP\r\n", 7);
	char *got = take(s);
	assert_string_equal(got, "500 5.5.2 Error: NUL byte in command\r\n");
	free(got);
	/* A megabyte without CRLF, in many reads: one reply at the end. */
	char block[4096];
	memset(block, 'A', sizeof block);
	for (int i = 0; i < 256; i++)
		client_send(&e, s, block, sizeof block);
	got = take(s);
	assert_string_equal(got, "");
	free(got);
	expect(&e, s, "\r\n", "500 5.5.2 Error: line too long\r\n");
	expect(&e, s, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	smtpd_free(s);
	env_close(&e);
}

static void test_limits(void **state)
{
	struct env e;
	env_open(&e, "smtpd_recipient_limit = 2\nmessage_size_limit = 1000\n"
		     "smtpd_hard_error_limit = 3\nsmtpd_junk_command_limit = 5\n");
	struct smtpd *s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n",
	       "250-mail.hosted.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n");
	expect(&e, s, "MAIL FROM:<a@b.example> SIZE=1001\r\n", "552 5.3.4 Message size exceeds fixed limit\r\n");
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<x@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "RCPT TO:<y@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "RCPT TO:<z@hosted.test>\r\n", "452 4.5.3 Error: too many recipients\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	struct buf big = BUF_INIT;
	for (int i = 0; i < 40; i++)
		buf_puts(&big, "0123456789012345678901234567890123456789\r\n");
	buf_puts(&big, ".\r\n");
	expect(&e, s, big.data, "552 5.3.4 Error: message file too big\r\n");
	assert_int_equal(count_files(tmp("q/incoming")), 0);
	assert_int_equal(count_files(tmp("q/tmp")), 0);
	/* Errors: the third one ends the session (552 above was the second). */
	expect(&e, s, "BOGUS\r\n",
	       "502 5.5.2 Error: command not recognized\r\n421 4.7.0 mail.hosted.test Error: too many errors\r\n");
	assert_int_equal(smtpd_status(s), SMTPD_CLOSING);
	smtpd_free(s);
	s = greeted(&e, "127.0.0.1");
	expect(&e, s, "NOOP\r\nNOOP\r\n", "554 5.5.0 Error: improper use of SMTP command pipelining\r\n");
	smtpd_free(s);
	s = greeted(&e, "127.0.0.1");
	for (int i = 0; i < 5; i++)
		expect(&e, s, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	expect(&e, s, "NOOP\r\n", "421 4.7.0 mail.hosted.test Error: too many junk commands\r\n");
	smtpd_free(s);
	buf_free(&big);
	env_close(&e);
}

/* A client that vanishes, times out, or meets a shutdown leaves no
 * partial queue file; a message already handed over is still queued. */
static void test_endings(void **state)
{
	struct env e;
	env_open(&e, NULL);
	struct smtpd *s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<x@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	expect(&e, s, "half a message\r\n", "");
	smtpd_eof(s);
	assert_int_equal(smtpd_status(s), SMTPD_CLOSING);
	smtpd_free(s);
	assert_int_equal(count_files(tmp("q/tmp")), 0);
	assert_int_equal(count_files(tmp("q/incoming")), 0);

	s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	smtpd_timeout(s);
	char *got = take(s);
	assert_string_equal(got, "421 4.4.2 mail.hosted.test Error: timeout exceeded\r\n");
	free(got);
	smtpd_free(s);

	/* Shutdown inside DATA: the message is answered, then 421. */
	s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<x@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	smtpd_shutdown(s);
	expect(&e, s, "hi\r\n.\r\n",
	       "250 2.0.0 Ok: queued as XX\r\n421 4.3.2 mail.hosted.test Service shutting down\r\n");
	smtpd_free(s);

	/* Shutdown inside DATA, and the message is refused: 550, then 421. */
	s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<x@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	smtpd_shutdown(s);
	expect(&e, s, "bare\nlf\r\n.\r\n",
	       "550 5.5.2 Error: bare <CR> or <LF> in message content (SMTP smuggling defense): "
	       "message discarded\r\n421 4.3.2 mail.hosted.test Service shutting down\r\n");
	assert_int_equal(smtpd_status(s), SMTPD_CLOSING);
	smtpd_free(s);

	/* The client leaves while the queue commits: the message stays queued. */
	s = greeted(&e, "127.0.0.1");
	expect(&e, s, "EHLO c.example\r\n", EHLO_REPLY);
	expect(&e, s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	expect(&e, s, "RCPT TO:<x@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	expect(&e, s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	smtpd_feed(s, "hi\r\n.\r\n", 7);
	assert_int_equal(smtpd_status(s), SMTPD_WAITING);
	smtpd_eof(s);
	smtpd_free(s);
	queue_flush(e.queue);
	assert_int_equal(count_files(tmp("q/incoming")), 2);
	env_close(&e);
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/vhostmta-smtpd.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic_transaction),
		cmocka_unit_test(test_order_and_syntax),
		cmocka_unit_test(test_relay_policy),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_improper_pipelining),
		cmocka_unit_test(test_smuggling),
		cmocka_unit_test(test_bad_command_lines),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_endings),
		cmocka_unit_test(test_starttls),
	};
	return cmocka_run_group_tests_name("smtpd", tests, setup, teardown);
}
