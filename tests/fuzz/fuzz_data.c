/* fuzz_data.c: the DATA content state machine of the session engine. A
 * fixed dialogue (EHLO, MAIL, RCPT to a hosted domain, DATA) opens each
 * message; the input is the content, cut into reads where it says, and
 * after a final dot the rest of the input is the next message (up to
 * MAX_MESSAGES). A model written from RFC 5321 and DESIGN §5 predicts
 * each outcome, and the session must agree with it exactly:
 * - only <CR><LF>.<CR><LF> (or "." CRLF at the very start) ends the data,
 *   and until then nothing is answered and every byte is consumed;
 * - a bare CR or LF anywhere rejects the message (550), else a message
 *   over message_size_limit is rejected (552), else it is queued (250);
 * - the queued content is the Received header, then the content with
 *   one leading dot removed from every line that has one (RFC 5321
 *   4.5.2), CRLF lines;
 * - after the reply the session takes commands again (NOOP says 250).
 *
 * Input: [count byte: low 3 bits K, bit 3: HELO instead of EHLO] [K
 * split lengths] [content]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include "buf.h"
#include "cf.h"
#include "fuzzutil.h"
#include "policy.h"
#include "queue.h"
#include "smtpd.h"

#define SIZE_LIMIT 4000
#define F_HELO 1
#define MAX_MESSAGES 8 /* per input: each costs a commit; the rest is ignored */

static struct cf cf;
static struct policy policy;
static struct queue *queue;
static char incoming[600];
static char landed[QID_LEN + 64]; /* the file the last commit wrote */
static int wakes;

static void wake(void *ctx) { wakes++; }

static void on_new(void *ctx, const char *name)
{
	snprintf(landed, sizeof landed, "%s", name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = fuzz_tmpdir("data");
	struct diag d = DIAG_INIT;
	struct buf text = BUF_INIT;
	char path[600];
	static const char transport[] = "hosted.test\tsmtp:[192.0.2.100]:25\n";

	fuzz_quiet();
	snprintf(path, sizeof path, "%s/transport", dir);
	fuzz_write_file(path, (const uint8_t *)transport, sizeof transport - 1);
	buf_printf(&text,
		   "myhostname = mail.hosted.test\ninstance_name = f\n"
		   "inet_interfaces = 192.0.2.1\nmynetworks = 127.0.0.0/8\n"
		   "queue_directory = %s/q\ntransport_table = %s/transport\n"
		   "message_size_limit = %d\nsmtpd_hard_error_limit = 100000\n",
		   dir, dir, SIZE_LIMIT);
	cf_init(&cf);
	if (!cf_parse_text(&cf, "fuzz.cf", text.data, text.len, &d) || !cf_finalize(&cf, "fuzz.cf", &d) ||
	    !policy_load(&policy, cf_str(&cf, P_transport_table), cf_str(&cf, P_mynetworks),
			 cf_str(&cf, P_inet_interfaces), cf_str(&cf, P_proxy_interfaces), &d))
		abort();
	buf_free(&text);
	queue = queue_open(cf_str(&cf, P_queue_directory));
	if (queue == NULL)
		abort();
	queue_set_notify(queue, on_new, NULL);
	snprintf(incoming, sizeof incoming, "%s/q/incoming", dir);
	return 0;
}

/* ---- the model ---------------------------------------------------------- */

/* data_end: the length of the content up to and including the final
 * ".\r\n", and of the body before it; false if the data does not end. */
static bool data_end(const char *p, size_t n, size_t *end, size_t *body)
{
	if (n >= 3 && memcmp(p, ".\r\n", 3) == 0) {
		*body = 0;
		*end = 3;
		return true;
	}
	const char *e = memmem(p, n, "\r\n.\r\n", 5);
	if (e == NULL)
		return false;
	*body = (size_t)(e - p) + 2;
	*end = *body + 3;
	return true;
}

static bool has_bare_eol(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return true;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return true;
	}
	return false;
}

/* unstuff: the body as stored: one leading dot off every line. */
static void unstuff(const char *p, size_t n, struct buf *out)
{
	bool bol = true;

	for (size_t i = 0; i < n; i++) {
		if (bol && p[i] == '.') {
			bol = false;
			continue;
		}
		buf_putc(out, p[i]);
		bol = p[i] == '\n';
	}
}

/* ---- the session -------------------------------------------------------- */

static void expect(struct smtpd *s, const char *want)
{
	struct buf *out = smtpd_output(s);
	FUZZ_CHECK(strcmp(buf_cstr(out), want) == 0, "wanted \"%s\", got \"%s\"", want, buf_cstr(out));
	buf_reset(out);
}

static void command(struct smtpd *s, const char *line, const char *want)
{
	FUZZ_CHECK(smtpd_feed(s, line, strlen(line)) == strlen(line), "%s not consumed", line);
	expect(s, want);
}

static void open_message(struct smtpd *s)
{
	command(s, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
	command(s, "RCPT TO:<user@hosted.test>\r\n", "250 2.1.5 Ok\r\n");
	command(s, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
}

/* feed: n bytes of content in the input's reads; all must be consumed. */
static void feed(struct smtpd *s, struct fuzz_splits *sp, const char *p, size_t n)
{
	while (n > 0) {
		size_t k = fuzz_splits_next(sp, n);
		size_t used = smtpd_feed(s, p, k);
		FUZZ_CHECK(used == k, "content consumed %zu of %zu", used, k);
		p += k;
		n -= k;
		if (n > 0) {
			FUZZ_CHECK(smtpd_status(s) == SMTPD_OPEN, "left DATA before the final dot");
			FUZZ_CHECK(smtpd_output(s)->len == 0, "a reply before the final dot: %s",
				   buf_cstr(smtpd_output(s)));
		}
	}
}

/* check_queued: the file the commit wrote holds the message as sent. */
static void check_queued(const char *id, bool esmtp, const struct buf *body)
{
	char path[700], err[256];
	struct qmsg *m;
	size_t n;

	snprintf(path, sizeof path, "%s/%s", incoming, landed);
	FUZZ_CHECK(qmsg_read_all(path, &m, &n, err, sizeof err), "queued file unreadable: %s", err);
	FUZZ_CHECK(n == 1 && strcmp(m[0].id, id) == 0, "queued id");
	FUZZ_CHECK(strcmp(m[0].sender, "a@b.example") == 0, "queued sender");
	FUZZ_CHECK(m[0].nrcpts == 1 && strcmp(m[0].rcpts[0], "user@hosted.test") == 0, "queued rcpt");

	int fd = open(path, O_RDONLY | O_CLOEXEC);
	FUZZ_CHECK(fd >= 0, "open %s", path);
	struct qdata qd;
	struct buf got = BUF_INIT;
	char chunk[4096];
	long r;
	qdata_init(&qd, fd, m[0].data_offset);
	while ((r = qdata_read(&qd, chunk, sizeof chunk)) > 0)
		buf_append(&got, chunk, (size_t)r);
	close(fd);
	FUZZ_CHECK(r == 0 && got.len == m[0].data_len, "content read back");

	/* The Received header, then the body exactly. */
	struct buf head = BUF_INIT;
	buf_printf(&head, "Received: from client.example ([198.51.100.7])\r\n"
			  "\tby mail.hosted.test (vhostmta) with %s id %s\r\n"
			  "\tfor <user@hosted.test>; ", esmtp ? "ESMTP" : "SMTP", id);
	FUZZ_CHECK(got.len > head.len && memcmp(got.data, head.data, head.len) == 0,
		   "Received header");
	const char *date_end = memmem(got.data + head.len, got.len - head.len, "\r\n", 2);
	FUZZ_CHECK(date_end != NULL, "Received header not ended");
	size_t off = (size_t)(date_end + 2 - got.data);
	FUZZ_CHECK(got.len - off == body->len &&
			   (body->len == 0 || memcmp(got.data + off, body->data, body->len) == 0),
		   "queued body differs from the sent body unstuffed (%zu vs %zu bytes)",
		   got.len - off, body->len);
	buf_free(&head);
	buf_free(&got);
	qmsg_free_all(m, n);
	unlink(path);
}

/* message: one message's content p[0..end); the reply the model predicts. */
static void message(struct smtpd *s, struct fuzz_splits *sp, bool esmtp, const char *p,
		    size_t end, size_t blen)
{
	struct buf body = BUF_INIT;
	bool bare = has_bare_eol(p, blen);

	unstuff(p, blen, &body);
	feed(s, sp, p, end);
	if (bare) {
		expect(s, "550 5.5.2 Error: bare <CR> or <LF> in message content (SMTP smuggling "
			  "defense): message discarded\r\n");
	} else if (body.len > SIZE_LIMIT) {
		expect(s, "552 5.3.4 Error: message file too big\r\n");
	} else {
		FUZZ_CHECK(smtpd_status(s) == SMTPD_WAITING, "not waiting for the commit");
		FUZZ_CHECK(smtpd_output(s)->len == 0, "a reply before the commit");
		int before = wakes;
		landed[0] = 0;
		FUZZ_CHECK(queue_flush(queue) == 1, "commit");
		FUZZ_CHECK(wakes == before + 1, "no wake after the commit");
		const char *out = buf_cstr(smtpd_output(s));
		const char *prefix = "250 2.0.0 Ok: queued as ";
		size_t pl = strlen(prefix);
		FUZZ_CHECK(strlen(out) == pl + QID_LEN + 2 && memcmp(out, prefix, pl) == 0 &&
				   strcmp(out + pl + QID_LEN, "\r\n") == 0,
			   "queued reply: %s", out);
		char id[QID_LEN + 1];
		memcpy(id, out + pl, QID_LEN);
		id[QID_LEN] = 0;
		buf_reset(smtpd_output(s));
		check_queued(id, esmtp, &body);
	}
	buf_free(&body);
	FUZZ_CHECK(smtpd_status(s) == SMTPD_OPEN, "not open after the message");
	command(s, "NOOP\r\n", "250 2.0.0 Ok\r\n");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_splits sp;
	unsigned flags;
	struct smtpd_client c = { 0 };
	struct smtpd_config config = { &cf, &policy, queue, false };

	fuzz_splits_take(&sp, &data, &size, &flags);
	bool esmtp = !(flags & F_HELO);
	char *p = malloc(size ? size : 1);
	memcpy(p, data, size);

	ipaddr_parse("198.51.100.7", 12, &c.addr);
	c.port = 40000;
	ipaddr_parse("192.0.2.1", 9, &c.local);
	c.local_port = 25;
	struct smtpd *s = smtpd_new(&config, &c, (struct smtpd_io){ wake, NULL });
	buf_reset(smtpd_output(s));
	if (esmtp)
		command(s, "EHLO client.example\r\n", "250-mail.hosted.test\r\n250-PIPELINING\r\n"
			"250-SIZE 4000\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n");
	else
		command(s, "HELO client.example\r\n", "250 mail.hosted.test\r\n");

	const char *q = p;
	size_t left = size, end, blen;
	for (int k = 0; k < MAX_MESSAGES; k++) {
		open_message(s);
		if (!data_end(q, left, &end, &blen)) {
			/* The rest never ends the data: the client leaves in
			 * the middle. */
			feed(s, &sp, q, left);
			FUZZ_CHECK(smtpd_status(s) == SMTPD_OPEN && smtpd_output(s)->len == 0,
				   "unfinished data answered");
			break;
		}
		message(s, &sp, esmtp, q, end, blen);
		q += end;
		left -= end;
	}
	smtpd_eof(s);
	smtpd_free(s);
	free(p);
	FUZZ_CHECK(queue_pending(queue) == 0, "a message left uncommitted");
	return 0;
}
