/* test_bounce.c: instances/bounce.c. An original message goes through a
 * real queue in a temporary directory; its DSN is written, flushed and
 * read back with qmsg_read_all and qdata_read, then taken apart: the
 * envelope (null sender, the original sender as the one recipient), the
 * top-level headers, the multipart/report structure and its boundary,
 * the delivery-status fields per recipient, the original's headers (and
 * not its body) within bounce_size_limit, and the line rules (CRLF, at
 * most 998 octets, printable ASCII or TAB) under hostile recipients,
 * replies and headers. No DSN for the null sender; the delay warning;
 * the log lines, word for word. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bounce.h"
#include "buf.h"
#include "cf.h"
#include "log.h"
#include "queue.h"
#include "util.h"
#include "testutil.h"

#define L(x) x, sizeof(x) - 1
#define SENDER "alice@example.org"
#define HOST "mail.example.test"
#define ARRIVAL_US "1700000000123456"

/* ---- fixture: a queue in a fresh directory, a configuration ----------- */

struct fx {
	char dir[64];
	struct queue *q;
	struct cf cf;
	/* The original, read back from the queue. */
	struct qmsg *msgs;
	size_t nmsgs;
	struct qmsg *orig;
	int fd;
};

static void fx_config(struct fx *f, const char *size_limit)
{
	struct diag d = DIAG_INIT;

	cf_free(&f->cf);
	cf_init(&f->cf);
	cf_set_id(&f->cf, P_instance_name, "t", "test", 0);
	cf_set_id(&f->cf, P_myhostname, HOST, "test", 0);
	cf_set_id(&f->cf, P_myorigin, "example.test", "test", 0);
	cf_set_id(&f->cf, P_maximal_queue_lifetime, "2d", "test", 0);
	if (size_limit)
		cf_set_id(&f->cf, P_bounce_size_limit, size_limit, "test", 0);
	assert_true(cf_finalize(&f->cf, "test", &d));
}

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof *f);

	snprintf(f->dir, sizeof f->dir, "/tmp/test_bounce.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	f->q = queue_open(f->dir);
	if (f->q == NULL)
		return -1;
	cf_init(&f->cf);
	fx_config(f, NULL);
	f->fd = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	queue_close(f->q);
	cf_free(&f->cf);
	if (f->msgs)
		qmsg_free_all(f->msgs, f->nmsgs);
	if (f->fd >= 0)
		close(f->fd);
	rm_tree(f->dir);
	free(f);
	return 0;
}

/* ---- the queue ---------------------------------------------------------- */

struct done {
	int calls, err;
	char id[QID_LEN + 1];
};

static void on_done(void *ctx, int err, const char *id)
{
	struct done *d = ctx;

	d->calls++;
	d->err = err;
	snprintf(d->id, sizeof d->id, "%s", id);
}

static void add(struct qfile *qf, int type, const void *p, size_t n)
{
	if (!qfile_add(qf, (enum qrec_type)type, p, n))
		fail_msg("qfile_add '%c': %s", type, strerror(errno));
}

/* find: the file of incoming/ that holds message id, all its messages
 * read (*msgs, *n) and the index of id in *at. */
static bool find(struct fx *f, const char *id, char path[512], struct qmsg **msgs, size_t *n,
		 size_t *at)
{
	char sub[100], err[256];
	DIR *d;
	struct dirent *de;

	snprintf(sub, sizeof sub, "%s/incoming", f->dir);
	d = opendir(sub);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, 512, "%s/%.*s", sub, 300, de->d_name);
		if (!qmsg_read_all(path, msgs, n, err, sizeof err))
			fail_msg("%s: %s", path, err);
		for (size_t i = 0; i < *n; i++) {
			if (strcmp((*msgs)[i].id, id) == 0) {
				*at = i;
				closedir(d);
				return true;
			}
		}
		qmsg_free_all(*msgs, *n);
	}
	closedir(d);
	return false;
}

/* original: queue a message from sender with content, flush, and load it
 * as f->orig with its file open as f->fd. */
static void original(struct fx *f, const char *sender, const char *content, size_t len)
{
	char id[QID_LEN + 1], path[512];
	struct done dn = { 0 };
	size_t at;
	struct qfile *qf = queue_create(f->q, id);

	assert_non_null(qf);
	add(qf, QREC_VERSION, L("1"));
	add(qf, QREC_TIME, L(ARRIVAL_US));
	add(qf, QREC_CLIENT, L("192.0.2.1 mx.example.org"));
	add(qf, QREC_SENDER, sender, strlen(sender));
	add(qf, QREC_RCPT, L("bob@remote.test"));
	if (len > 0)
		add(qf, QREC_DATA, content, len);
	queue_submit(qf, on_done, &dn);
	assert_int_equal(queue_flush(f->q), 1);
	assert_int_equal(dn.calls, 1);
	assert_int_equal(dn.err, 0);
	assert_true(find(f, id, path, &f->msgs, &f->nmsgs, &at));
	f->orig = &f->msgs[at];
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(f->fd >= 0);
}

/* The DSN read back: envelope and content. */
struct got {
	char *client, *sender, *rcpt;
	size_t nrcpts;
	char *text; /* the content, NUL-terminated */
	size_t len;
};

static void got_free(struct got *g)
{
	free(g->client);
	free(g->sender);
	free(g->rcpt);
	free(g->text);
}

/* dsn: bounce_write for b, flushed; the DSN read back into g. */
static void dsn(struct fx *f, const struct bounce_msg *b, struct got *g, char **log)
{
	char id[QID_LEN + 1], path[512];
	struct done dn = { 0 };
	struct qmsg *msgs;
	size_t n, at;

	cap_begin();
	bool ok = bounce_write(f->q, &f->cf, b, on_done, &dn, id);
	*log = cap_end();
	assert_true(ok);
	assert_int_equal(queue_flush(f->q), 1);
	assert_int_equal(dn.calls, 1);
	assert_int_equal(dn.err, 0);
	assert_string_equal(dn.id, id);
	assert_true(find(f, id, path, &msgs, &n, &at));

	struct qmsg *m = &msgs[at];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct qdata qd;
	struct buf c = BUF_INIT;
	char chunk[1000];
	long r;

	assert_true(fd >= 0);
	qdata_init(&qd, fd, m->data_offset);
	while ((r = qdata_read(&qd, chunk, sizeof chunk)) > 0)
		buf_append(&c, chunk, (size_t)r);
	assert_int_equal(r, 0);
	close(fd);
	assert_int_equal(c.len, m->data_len);
	g->client = xstrdup(m->client);
	g->sender = xstrdup(m->sender);
	g->nrcpts = m->nrcpts;
	g->rcpt = xstrdup(m->nrcpts ? m->rcpts[0] : "");
	assert_int_equal(m->nattrs, 0);
	g->len = c.len;
	g->text = buf_steal(&c);
	qmsg_free_all(msgs, n);
}

/* ---- taking the DSN apart ----------------------------------------------- */

/* check_lines: every line ends in CRLF, has at most 998 octets and only
 * printable ASCII or TAB. */
static void check_lines(const char *p, size_t n)
{
	size_t start = 0, lineno = 1;

	assert_true(n >= 2);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\r') {
			if (i + 1 >= n || p[i + 1] != '\n')
				fail_msg("line %zu: bare CR", lineno);
			if (i - start > 998)
				fail_msg("line %zu: %zu octets", lineno, i - start);
			i++;
			start = i + 1;
			lineno++;
		} else if (c == '\n') {
			fail_msg("line %zu: bare LF", lineno);
		} else if (!(c == '\t' || (c >= 0x20 && c < 0x7f))) {
			fail_msg("line %zu: byte 0x%02x", lineno, c);
		}
	}
	assert_int_equal(start, n);
}

/* unfold: s with every CRLF that is followed by white space removed. */
static char *unfold(const char *s)
{
	struct buf b = BUF_INIT;

	for (; *s; s++) {
		if (s[0] == '\r' && s[1] == '\n' && (s[2] == ' ' || s[2] == '\t')) {
			s++;
			continue;
		}
		buf_putc(&b, *s);
	}
	return buf_steal(&b);
}

/* has_line: does text (unfolded) hold the whole line? */
static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && strncmp(p + n, "\r\n", 2) == 0)
			return true;
	return false;
}

static void assert_line(const char *text, const char *line)
{
	if (!has_line(text, line))
		fail_msg("line \"%s\" missing from:\n%s", line, text);
}

#define MAX_PARTS 4

struct mime {
	char *headers;              /* top level, unfolded, with the final CRLF */
	char boundary[128];
	size_t nparts;
	char *part_hdr[MAX_PARTS];  /* each part's headers */
	char *part_body[MAX_PARTS]; /* each part's body (ends before the CRLF of the delimiter) */
};

static void mime_free(struct mime *mm)
{
	free(mm->headers);
	for (size_t i = 0; i < mm->nparts; i++) {
		free(mm->part_hdr[i]);
		free(mm->part_body[i]);
	}
}

/* mime_parse: the structure of a multipart message: the boundary from
 * Content-Type, the delimiter lines (the boundary nowhere else), the
 * close delimiter as the last line. */
static void mime_parse(const char *text, struct mime *mm)
{
	const char *body = strstr(text, "\r\n\r\n");

	memset(mm, 0, sizeof *mm);
	assert_non_null(body);
	mm->headers = xstrndup(text, (size_t)(body - text) + 2);
	char *h = unfold(mm->headers);
	free(mm->headers);
	mm->headers = h;
	const char *b = strstr(h, "\r\nContent-Type: multipart/report; report-type=delivery-status;");
	assert_non_null(b);
	b = strstr(b, "boundary=\"");
	assert_non_null(b);
	b += strlen("boundary=\"");
	size_t bl = strcspn(b, "\"");
	assert_true(bl > 0 && bl <= 70);
	assert_true(bl < sizeof mm->boundary);
	memcpy(mm->boundary, b, bl);
	/* RFC 2046 bchars. */
	assert_int_equal(strspn(mm->boundary, "0123456789abcdefghijklmnopqrstuvwxyz"
					      "ABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"),
			 bl);

	char delim[140], close_[140];
	snprintf(delim, sizeof delim, "\r\n--%s\r\n", mm->boundary);
	snprintf(close_, sizeof close_, "\r\n--%s--\r\n", mm->boundary);
	const char *p = body + 2; /* keep the CRLF in front of the first delimiter */
	const char *end = strstr(p, close_);
	assert_non_null(end);
	/* The close delimiter ends the message. */
	assert_int_equal(strlen(end), strlen(close_));
	for (;;) {
		const char *d = strstr(p, delim);
		if (d == NULL || d > end)
			break;
		assert_true(mm->nparts < MAX_PARTS);
		const char *start = d + strlen(delim);
		const char *next = strstr(start, delim);
		if (next == NULL || next > end)
			next = end;
		const char *sep = strstr(start, "\r\n\r\n");
		assert_non_null(sep);
		assert_true(sep < next);
		mm->part_hdr[mm->nparts] = xstrndup(start, (size_t)(sep - start) + 2);
		mm->part_body[mm->nparts] = xstrndup(sep + 4, (size_t)(next - sep - 4));
		mm->nparts++;
		p = next;
		if (next == end)
			break;
	}
	/* The boundary occurs only in the delimiters and in Content-Type. */
	size_t count = 0;
	for (const char *q = text; (q = strstr(q, mm->boundary)) != NULL; q++)
		count++;
	assert_int_equal(count, mm->nparts + 2);
}

/* The original message of most tests. */
#define LONG_HEADER_LEN 2500
static char *sample_content(size_t *len)
{
	struct buf b = BUF_INIT;

	buf_puts(&b, "Received: from mx.example.org ([192.0.2.1])\r\n"
		     "\tby " HOST " (vhostmta) with ESMTP id 0123456789ABCDEF\r\n"
		     "From: Alice <" SENDER ">\r\n"
		     "To: bob@remote.test\r\n"
		     "Subject: hello there\r\n"
		     "X-Eight: caf\xc3\xa9 \x01\x7f end\r\n"
		     "X-Long: ");
	for (size_t i = 0; i < LONG_HEADER_LEN; i++)
		buf_putc(&b, (char)('a' + i % 26));
	buf_puts(&b, "\r\n"
		     "X-Last: yes\r\n"
		     "\r\n"
		     "BODY-LINE-ONE must not be returned\r\n"
		     "Received: a header-like body line\r\n");
	*len = b.len;
	return buf_steal(&b);
}

/* A reply of 1500 bytes and more, with CR, LF, TAB and 8-bit bytes, and a
 * run of 1200 bytes without white space. */
static char *hostile_diag(char **expect)
{
	struct buf b = BUF_INIT, e = BUF_INIT;

	buf_puts(&b, "550-5.7.1 first\r\n550-5.7.1  sec\xffond\tline\r\n550 5.7.1 ");
	buf_puts(&e, "550-5.7.1 first 550-5.7.1 sec?ond line 550 5.7.1 ");
	for (int i = 0; i < 1200; i++)
		buf_putc(&b, 'x');
	for (int i = 0; i < 900; i++)
		buf_putc(&e, 'x');
	buf_putc(&e, ' ');
	for (int i = 0; i < 300; i++)
		buf_putc(&e, 'x');
	for (int i = 0; i < 40; i++) {
		buf_puts(&b, " word\r\n");
		buf_puts(&e, " word");
	}
	assert_true(b.len > 1500);
	*expect = buf_steal(&e);
	return buf_steal(&b);
}

/* flatten: s with every line end and the white space after it as one
 * space (the explanation's wrapped lines joined). */
static char *flatten(const char *s)
{
	struct buf b = BUF_INIT;

	while (*s) {
		if (s[0] == '\r' && s[1] == '\n') {
			s += 2;
			while (*s == ' ')
				s++;
			buf_putc(&b, ' ');
			continue;
		}
		buf_putc(&b, *s++);
	}
	return buf_steal(&b);
}

/* field_value: the unfolded value of the next "Name: " field after *from
 * (which must point at a line end); *from moves past it. */
static char *field_value(const char *name, const char **from)
{
	char key[80];

	snprintf(key, sizeof key, "\r\n%s: ", name);
	const char *p = strstr(*from, key);
	if (p == NULL)
		fail_msg("no %s field in:\n%s", name, *from);
	p += strlen(key);
	size_t n = strcspn(p, "\r");
	*from = p + n;
	return xstrndup(p, n);
}

/* ---- the tests ----------------------------------------------------------- */

static void test_failed(void **state)
{
	struct fx *f = *state;
	size_t len;
	char *content = sample_content(&len), *expect_diag, *diag = hostile_diag(&expect_diag);
	char *log;
	struct got g = { 0 };
	struct mime mm;

	original(f, SENDER, content, len);
	const struct bounce_rcpt rcpts[] = {
		{ "bob@remote.test", "5.1.1", "mx.remote.test",
		  "550 5.1.1 <bob@remote.test>: Recipient address rejected: User unknown",
		  "host mx.remote.test[192.0.2.7] said: 550 5.1.1 <bob@remote.test>: User unknown "
		  "(in reply to RCPT TO command)" },
		{ "\"odd\r\nX-Injected: 1\x01\"@re\xc3\xa9mote.test", "5.7.1",
		  "mx\r\n.evil\x80", diag, "odd\r\nFrom: injected\r\n\r\n--boundary" },
		{ "carol@remote.test", "bogus", "", "", "" },
	};
	struct bounce_msg b = { f->orig, f->fd, BOUNCE_FAILED, rcpts, ARRAY_LEN(rcpts) };
	dsn(f, &b, &g, &log);

	/* The envelope. */
	assert_string_equal(g.sender, "");
	assert_int_equal(g.nrcpts, 1);
	assert_string_equal(g.rcpt, SENDER);
	assert_string_equal(g.client, "127.0.0.1 localhost");
	check_lines(g.text, g.len);
	mime_parse(g.text, &mm);

	/* Top-level headers. */
	char line[200];
	const char *dsn_id = strstr(log, "sender non-delivery notification: ");
	assert_non_null(dsn_id);
	dsn_id += strlen("sender non-delivery notification: ");
	snprintf(line, sizeof line, "%s: sender non-delivery notification: %.*s\n", f->orig->id,
		 QID_LEN, dsn_id);
	assert_logged(log, line);
	snprintf(line, sizeof line, "Message-Id: <%.*s@" HOST ">", QID_LEN, dsn_id);
	assert_line(mm.headers, line);
	assert_line(mm.headers, "From: Mail Delivery System <MAILER-DAEMON@example.test>");
	assert_line(mm.headers, "To: <" SENDER ">");
	assert_line(mm.headers, "Subject: Undelivered Mail Returned to Sender");
	assert_line(mm.headers, "Auto-Submitted: auto-replied");
	assert_line(mm.headers, "MIME-Version: 1.0");
	const char *date = str_has_prefix(mm.headers, "Date: ") ? mm.headers
								 : strstr(mm.headers, "\r\nDate: ");
	assert_non_null(date);
	assert_non_null(strstr(date, " +") ? strstr(date, " +") : strstr(date, " -"));
	assert_null(strstr(mm.headers, "Received:"));

	/* Three parts, in order. */
	assert_int_equal(mm.nparts, 3);
	assert_line(mm.part_hdr[0], "Content-Type: text/plain; charset=us-ascii");
	assert_line(mm.part_hdr[1], "Content-Type: message/delivery-status");
	assert_line(mm.part_hdr[2], "Content-Type: text/rfc822-headers");

	/* The explanation names every recipient and its reason. */
	char *t = flatten(mm.part_body[0]);
	assert_non_null(strstr(t, "This is the mail system at host " HOST "."));
	assert_non_null(strstr(t, "<bob@remote.test>: host mx.remote.test[192.0.2.7] said: 550 "
				  "5.1.1 <bob@remote.test>: User unknown (in reply to RCPT TO "
				  "command)"));
	assert_non_null(strstr(t, "<\"odd X-Injected: 1?\"@re??mote.test>: odd From: injected "
				  "--boundary"));
	assert_non_null(strstr(t, "<carol@remote.test>: delivery failed"));
	assert_null(strstr(mm.part_body[0], "\r\nFrom: injected"));
	free(t);

	/* The delivery-status fields. */
	char *s = unfold(mm.part_body[1]);
	struct buf sb = BUF_INIT;
	buf_puts(&sb, "\r\n");
	buf_puts(&sb, s);
	const char *at = sb.data;
	static const struct { const char *name, *value; } want[] = {
		{ "Reporting-MTA", "dns; " HOST },
		{ "X-Vhostmta-Queue-ID", NULL },
		{ "X-Vhostmta-Sender", "rfc822; " SENDER },
		{ "Arrival-Date", NULL },
		{ "Final-Recipient", "rfc822; bob@remote.test" },
		{ "Action", "failed" },
		{ "Status", "5.1.1" },
		{ "Remote-MTA", "dns; mx.remote.test" },
		{ "Diagnostic-Code", "smtp; 550 5.1.1 <bob@remote.test>: Recipient address "
				     "rejected: User unknown" },
		{ "Final-Recipient", "rfc822; \"odd X-Injected: 1?\"@re??mote.test" },
		{ "Action", "failed" },
		{ "Status", "5.7.1" },
		{ "Remote-MTA", "dns; mx .evil?" },
		{ "Diagnostic-Code", NULL }, /* expect_diag */
		{ "Final-Recipient", "rfc822; carol@remote.test" },
		{ "Action", "failed" },
		{ "Status", "5.0.0" },
	};
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		char *v = field_value(want[i].name, &at);
		if (strcmp(want[i].name, "X-Vhostmta-Queue-ID") == 0)
			assert_string_equal(v, f->orig->id);
		else if (strcmp(want[i].name, "Arrival-Date") == 0)
			assert_true(strlen(v) > 20);
		else if (strcmp(want[i].name, "Diagnostic-Code") == 0 && want[i].value == NULL)
			assert_true(str_has_prefix(v, "smtp; ") && strcmp(v + 6, expect_diag) == 0);
		else
			assert_string_equal(v, want[i].value);
		free(v);
	}
	/* carol has no Remote-MTA or Diagnostic-Code. */
	assert_null(strstr(at, "Remote-MTA"));
	assert_null(strstr(at, "Diagnostic-Code"));
	assert_null(strstr(s, "Will-Retry-Until"));
	/* Per-message fields, then one blank line before each recipient. */
	assert_non_null(strstr(s, "\r\n\r\nFinal-Recipient: rfc822; bob@"));
	assert_non_null(strstr(s, "\r\n\r\nFinal-Recipient: rfc822; \"odd"));
	assert_non_null(strstr(s, "\r\n\r\nFinal-Recipient: rfc822; carol@"));
	/* Folded fields stay near 78 columns unless a word is longer. */
	for (const char *l = mm.part_body[1]; *l;) {
		size_t n = strcspn(l, "\r");
		if (memchr(l, ' ', n) != NULL && n > 78) {
			/* Only a line holding one long word. */
			assert_true(l[0] == ' ' && memchr(l + 1, ' ', n - 1) == NULL);
		}
		l += n;
		l += *l ? 2 : 0;
	}
	free(s);
	buf_free(&sb);

	/* The original's headers, made 7-bit and split, but not its body. */
	const char *h = mm.part_body[2];
	assert_true(str_has_prefix(h, "Received: from mx.example.org ([192.0.2.1])\r\n\tby "));
	assert_non_null(strstr(h, "\r\nSubject: hello there\r\n"));
	assert_non_null(strstr(h, "\r\nX-Eight: caf?? ?? end\r\n"));
	assert_true(strlen(h) >= 2 && strcmp(h + strlen(h) - 13, "X-Last: yes\r\n") == 0);
	char *hu = unfold(h);
	char *lh = strstr(hu, "X-Long: ");
	assert_non_null(lh);
	lh += strlen("X-Long: ");
	for (size_t i = 0; i < LONG_HEADER_LEN; i++) {
		if (lh[0] == ' ') /* the split adds one space */
			lh++;
		assert_int_equal(*lh++, 'a' + i % 26);
	}
	free(hu);
	assert_null(strstr(g.text, "BODY-LINE-ONE"));
	assert_null(strstr(g.text, "header-like body line"));

	mime_free(&mm);
	got_free(&g);
	free(log);
	free(content);
	free(diag);
	free(expect_diag);
}

/* part3: the headers part of the DSN of f's original under the current
 * configuration, or NULL without one. */
static char *part3(struct fx *f, int fd)
{
	const struct bounce_rcpt r = { "bob@remote.test", "5.1.1", NULL, NULL, "gone" };
	struct bounce_msg b = { f->orig, fd, BOUNCE_FAILED, &r, 1 };
	struct got g = { 0 };
	struct mime mm;
	char *log, *out = NULL;

	dsn(f, &b, &g, &log);
	check_lines(g.text, g.len);
	mime_parse(g.text, &mm);
	assert_true(mm.nparts == 2 || mm.nparts == 3);
	if (mm.nparts == 3) {
		assert_line(mm.part_hdr[2], "Content-Type: text/rfc822-headers");
		out = xstrdup(mm.part_body[2]);
	}
	mime_free(&mm);
	got_free(&g);
	free(log);
	return out;
}

static void test_size_limit(void **state)
{
	struct fx *f = *state;
	/* Lines of 21 octets with their CRLF. */
	static const char content[] = "Subject: 1234567890\r\n"
				      "X-Aaaa: 12345678901\r\n"
				      "X-Bbbb: 12345678901\r\n"
				      "X-Cccc: 12345678901\r\n"
				      "\r\n"
				      "body\r\n";
	static const struct { const char *limit, *want; } cases[] = {
		{ "100", "Subject: 1234567890\r\nX-Aaaa: 12345678901\r\nX-Bbbb: 12345678901\r\n"
			 "X-Cccc: 12345678901\r\n" },
		{ "63", "Subject: 1234567890\r\nX-Aaaa: 12345678901\r\nX-Bbbb: 12345678901\r\n" },
		{ "62", "Subject: 1234567890\r\nX-Aaaa: 12345678901\r\n" },
		{ "84", "Subject: 1234567890\r\nX-Aaaa: 12345678901\r\nX-Bbbb: 12345678901\r\n"
			"X-Cccc: 12345678901\r\n" },
		{ "83", "Subject: 1234567890\r\nX-Aaaa: 12345678901\r\nX-Bbbb: 12345678901\r\n" },
		{ "50", "Subject: 1234567890\r\nX-Aaaa: 12345678901\r\n" },
		{ "42", "Subject: 1234567890\r\nX-Aaaa: 12345678901\r\n" },
		{ "41", "Subject: 1234567890\r\n" },
		{ "21", "Subject: 1234567890\r\n" },
		{ "20", NULL },
		{ "0", NULL },
	};

	original(f, SENDER, content, sizeof content - 1);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		fx_config(f, cases[i].limit);
		char *h = part3(f, f->fd);
		if (cases[i].want == NULL) {
			if (h != NULL)
				fail_msg("limit %s: headers part \"%s\"", cases[i].limit, h);
		} else {
			assert_non_null(h);
			if (strcmp(h, cases[i].want) != 0)
				fail_msg("limit %s: \"%s\"", cases[i].limit, h);
		}
		free(h);
	}
}

static void test_content_shapes(void **state)
{
	struct fx *f = *state;
	char *h;

	/* No body, no empty line, no final line end; a bare LF and a CR. */
	original(f, SENDER, L("Subject: x\nX-Cr: a\rb\r\nX-Last: y"));
	h = part3(f, f->fd);
	assert_string_equal(h, "Subject: x\r\nX-Cr: a?b\r\nX-Last: y\r\n");
	free(h);
	/* No content part without a file. */
	assert_null(part3(f, -1));
}

static void test_no_content(void **state)
{
	struct fx *f = *state;

	original(f, SENDER, NULL, 0);
	assert_int_equal(f->orig->data_offset, -1);
	assert_null(part3(f, f->fd));
}

static void test_empty_headers(void **state)
{
	struct fx *f = *state;

	original(f, SENDER, L("\r\nonly a body\r\n"));
	assert_null(part3(f, f->fd));
}

/* A content that cannot be read: the DSN goes out without the headers. */
static void test_read_error(void **state)
{
	struct fx *f = *state;
	const struct bounce_rcpt r = { "bob@remote.test", "5.1.1", NULL, NULL, "gone" };
	struct got g = { 0 };
	struct mime mm;
	char *log;

	original(f, SENDER, L("Subject: x\r\n\r\nbody\r\n"));
	int empty = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(empty >= 0);
	struct bounce_msg b = { f->orig, empty, BOUNCE_FAILED, &r, 1 };
	dsn(f, &b, &g, &log);
	close(empty);
	mime_parse(g.text, &mm);
	assert_int_equal(mm.nparts, 2);
	char line[200];
	snprintf(line, sizeof line, "%s: read content for the notification: ", f->orig->id);
	assert_logged(log, line);
	mime_free(&mm);
	got_free(&g);
	free(log);
}

static void test_delayed(void **state)
{
	struct fx *f = *state;
	size_t len;
	char *content = sample_content(&len), *log;
	struct got g = { 0 };
	struct mime mm;
	const struct bounce_rcpt r = { "bob@remote.test", "4.4.1", "mx.remote.test", NULL,
				       "connect to mx.remote.test[192.0.2.7]:25: Connection timed "
				       "out" };

	original(f, SENDER, content, len);
	struct bounce_msg b = { f->orig, f->fd, BOUNCE_DELAYED, &r, 1 };
	dsn(f, &b, &g, &log);
	check_lines(g.text, g.len);
	mime_parse(g.text, &mm);
	assert_line(mm.headers, "Subject: Delayed Mail (still being retried)");
	assert_line(mm.headers, "To: <" SENDER ">");
	assert_int_equal(mm.nparts, 3);
	char *s = unfold(mm.part_body[1]);
	assert_line(s, "Final-Recipient: rfc822; bob@remote.test");
	assert_line(s, "Action: delayed");
	assert_line(s, "Status: 4.4.1");
	assert_line(s, "Remote-MTA: dns; mx.remote.test");
	assert_null(strstr(s, "Diagnostic-Code"));
	assert_null(strstr(s, "Action: failed"));

	/* Will-Retry-Until and the explanation give the same moment:
	 * arrival + maximal_queue_lifetime (2d). */
	char date[64], want[100];
	time_t until = 1700000000 + 2 * 86400;
	struct tm tm;
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", localtime_r(&until, &tm));
	snprintf(want, sizeof want, "Will-Retry-Until: %s", date);
	assert_line(s, want);
	char *t = flatten(mm.part_body[0]);
	assert_non_null(strstr(t, "still being retried"));
	assert_non_null(strstr(t, date));
	assert_non_null(strstr(t, "<bob@remote.test>: connect to mx.remote.test[192.0.2.7]:25: "
				  "Connection timed out"));
	free(t);
	free(s);

	char line[200];
	const char *id = strstr(log, "sender delay notification: ");
	assert_non_null(id);
	snprintf(line, sizeof line, "%s: sender delay notification: %.*s\n", f->orig->id, QID_LEN,
		 id + strlen("sender delay notification: "));
	assert_logged(log, line);
	mime_free(&mm);
	got_free(&g);
	free(log);
	free(content);
}

/* Never a DSN to the null sender, nor to a sender that cannot be one. */
static void test_refused(void **state)
{
	struct fx *f = *state;
	const struct bounce_rcpt r = { "bob@remote.test", "5.1.1", NULL, NULL, "gone" };
	static const struct { const char *sender, *why; } cases[] = {
		{ "", "null sender" },
		{ "bad\r\nsender@example.org", "unusable sender address" },
		{ "a b@example.org", "unusable sender address" },
	};
	char id[QID_LEN + 1], line[200];
	struct done dn = { 0 };

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		if (f->msgs) {
			qmsg_free_all(f->msgs, f->nmsgs);
			close(f->fd);
			f->msgs = NULL;
		}
		original(f, cases[i].sender, L("Subject: x\r\n\r\nbody\r\n"));
		struct bounce_msg b = { f->orig, f->fd, i == 0 ? BOUNCE_FAILED : BOUNCE_DELAYED,
					&r, 1 };
		cap_begin();
		bool ok = bounce_write(f->q, &f->cf, &b, on_done, &dn, id);
		char *log = cap_end();
		assert_false(ok);
		assert_int_equal(queue_pending(f->q), 0);
		snprintf(line, sizeof line, "%s: sender %s notification not sent: %s\n",
			 f->orig->id, i == 0 ? "non-delivery" : "delay", cases[i].why);
		assert_logged(log, line);
		free(log);
	}
	assert_int_equal(queue_flush(f->q), 0);
	assert_int_equal(dn.calls, 0);
	/* Only the originals are in the queue. */
	assert_int_equal(queue_size(f->q), ARRAY_LEN(cases));
}

/* The queue refuses the DSN (a file size limit breaks the file it
 * spills into): false, logged, nothing left in the queue. */
static void test_write_error(void **state)
{
	struct fx *f = *state;
	const struct bounce_rcpt r = { "bob@remote.test", "5.1.1", NULL, NULL, "gone" };
	struct buf c = BUF_INIT;
	char id[QID_LEN + 1], line[200], tmpdir[100];
	struct done dn = { 0 };
	struct rlimit old, lim;

	/* Headers past QF_SPILL, so the DSN spills into a file of its own. */
	for (int i = 0; c.len <= QF_SPILL + 10000; i++)
		buf_printf(&c, "X-Filler-%06d: %0100d\r\n", i, i);
	buf_puts(&c, "\r\nbody\r\n");
	original(f, SENDER, c.data, c.len);
	fx_config(f, "10000000");
	struct bounce_msg b = { f->orig, f->fd, BOUNCE_FAILED, &r, 1 };

	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 4096;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	cap_begin();
	bool ok = bounce_write(f->q, &f->cf, &b, on_done, &dn, id);
	char *log = cap_end();
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);

	assert_false(ok);
	snprintf(line, sizeof line, "%s: sender non-delivery notification: queue file write error: ",
		 f->orig->id);
	assert_logged(log, line);
	assert_int_equal(queue_pending(f->q), 0);
	assert_int_equal(queue_flush(f->q), 0);
	assert_int_equal(dn.calls, 0);
	assert_int_equal(queue_size(f->q), 1);
	snprintf(tmpdir, sizeof tmpdir, "%s/tmp", f->dir);
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			fail_msg("left in tmp/: %s", de->d_name);
	closedir(d);
	free(log);
	buf_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_failed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_content_shapes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_content, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delayed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
	};

	log_set_prefix(0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
