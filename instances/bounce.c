/* bounce.c: delivery status notifications (bounce.h). Builds the three
 * parts of a multipart/report (the human explanation, the
 * message/delivery-status fields, the original's header section) in
 * memory, picks a boundary that occurs in none of them, and writes the
 * result as a new queue message from the null sender.
 *
 * Decisions where the contract is silent:
 * - The whole DSN is 7-bit: every byte of hostile text (addresses, server
 *   replies, the original's headers) that is not printable ASCII becomes
 *   '?', so the DSN needs no BODY=8BITMIME and any next hop takes it.
 *   The original's headers keep their TABs (folding); the fields and the
 *   explanation turn every run of white space (CR and LF included) into
 *   one space.
 * - Fields are folded at white space near 78 columns; a run of more than
 *   WORD_MAX bytes without white space is split, so no line ever exceeds
 *   998 octets. Header lines of the original longer than 998 octets are
 *   split into continuation lines.
 * - The sender becomes the envelope recipient unchanged, so a sender that
 *   is not printable ASCII or longer than an address can be gets no DSN
 *   (logged), like the null sender.
 * - A failure to read the original's content is logged and the DSN goes
 *   out without the headers part: the sender still learns the outcome.
 * - The CLIENT record of a DSN is "127.0.0.1 localhost": it was made
 *   here, not received. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounce.h"
#include "buf.h"
#include "cf.h"
#include "log.h"
#include "mailaddr.h"
#include "util.h"

#define ADDR_MAX 512      /* a recipient address as shown in the DSN */
#define HOST_MAX 255      /* Remote-MTA */
#define TEXT_MAX 4096     /* a diagnostic or explanation */
#define NAME_MAX_SHOWN 64 /* mail_name in the signature */
#define WORD_MAX 900      /* longer runs without white space are split */
#define FIELD_WIDTH 78    /* where fields fold */
#define TEXT_WIDTH 72     /* where the explanation wraps */
#define MAIL_LINE_MAX 998      /* RFC 5322 §2.1.1, without CRLF */
#define BOUNDARY_HOST 40  /* the part of myhostname in the boundary */
#define DATA_CHUNK 65536
#define READ_CHUNK 8192
#define DSN_CLIENT "127.0.0.1 localhost"

/* The DSN being built. */
struct dsn {
	const struct cf *cf;
	const struct bounce_msg *b;
	const char *id;       /* the DSN's own queue id */
	char orig_id[QID_LEN + 8];
	struct buf text;      /* part 1: text/plain */
	struct buf status;    /* part 2: message/delivery-status */
	struct buf headers;   /* part 3: text/rfc822-headers, empty: omitted */
	char boundary[QID_LEN + 16 + BOUNDARY_HOST];
};

static bool is_printable(unsigned char c) { return c >= 0x20 && c < 0x7f; }

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* rfc5322_date: t as "Mon, 2 Jan 2006 15:04:05 -0700", local time. */
static const char *rfc5322_date(time_t t, char out[64])
{
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(out, 64, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
		snprintf(out, 64, "Thu, 01 Jan 1970 00:00:00 +0000");
	return out;
}

static time_t us_to_time(uint64_t us) { return (time_t)(us / 1000000u); }

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* clean: hostile text s made safe for one field: printable ASCII, white
 * space runs (CR and LF included) as one space, no space at either end,
 * at most max bytes (then "..."). */
static void clean(struct buf *out, const char *s, size_t max)
{
	bool space = false;
	size_t start = out->len;

	for (; s != NULL && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (is_space(c)) {
			space = out->len > start;
			continue;
		}
		if (out->len - start >= max) {
			buf_puts(out, "...");
			return;
		}
		if (space)
			buf_putc(out, ' ');
		space = false;
		buf_putc(out, is_printable(c) ? (char)c : '?');
	}
}

/* put_folded: lead, then the words of text (as clean() made it) after
 * single spaces, breaking the line before a word that would pass width;
 * continuation lines start with indent. No line passes MAIL_LINE_MAX as long
 * as lead does not. */
static void put_folded(struct buf *out, const char *lead, const char *text, const char *indent,
		       size_t width)
{
	size_t col = strlen(lead), ilen = strlen(indent);
	bool bare = false; /* at the start of a continuation line */

	buf_puts(out, lead);
	for (const char *p = text; *p;) {
		size_t n = strcspn(p, " ");
		if (n > WORD_MAX)
			n = WORD_MAX;
		if (!bare && col + 1 + n > width) {
			buf_puts(out, "\r\n");
			buf_puts(out, indent);
			col = ilen;
			bare = true;
		}
		if (!bare) {
			buf_putc(out, ' ');
			col++;
		}
		buf_append(out, p, n);
		col += n;
		bare = false;
		p += n;
		if (*p == ' ')
			p++;
	}
	buf_puts(out, "\r\n");
}

/* field: "Name: type; value" (type may be NULL), value cleaned and folded. */
static void field(struct buf *out, const char *name, const char *type, const char *value,
		  size_t max)
{
	struct buf lead = BUF_INIT, v = BUF_INIT;

	buf_printf(&lead, "%s:", name);
	if (type)
		buf_printf(&lead, " %s;", type);
	clean(&v, value, max);
	put_folded(out, buf_cstr(&lead), buf_cstr(&v), " ", FIELD_WIDTH);
	buf_free(&lead);
	buf_free(&v);
}

/* status_ok: an RFC 3463 status code, class.subject.detail. */
static bool status_ok(const char *s)
{
	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		size_t n = strspn(s, "0123456789");
		if (n < 1 || n > 3)
			return false;
		s += n;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == 0;
}

/* sender_ok: can the sender be the envelope recipient of a DSN? */
static bool sender_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > LOCAL_MAX + DOMAIN_MAX + 1)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_printable((unsigned char)s[i]) || s[i] == ' ')
			return false;
	return true;
}

static bool failed(const struct dsn *d) { return d->b->kind == BOUNCE_FAILED; }

/* give_up: when the original expires (for the delay warning). */
static time_t give_up(const struct dsn *d)
{
	return us_to_time(d->b->m->time_us) + (time_t)cf_num(d->cf, P_maximal_queue_lifetime);
}

/* ---- part 1: the explanation ------------------------------------------ */

static void text_intro(struct dsn *d, struct buf *t)
{
	char date[64];

	buf_printf(t, "This is the mail system at host %s.\r\n\r\n", cf_str(d->cf, P_myhostname));
	if (failed(d)) {
		buf_puts(t, "Your message could not be delivered to one or more of its\r\n"
			    "recipients. The reasons are listed below; no further attempts\r\n"
			    "will be made for these recipients.\r\n\r\n");
	} else {
		buf_printf(t, "This is only a warning: you do not need to send your message\r\n"
			      "again.\r\n\r\n"
			      "Your message has not yet reached the recipients listed below.\r\n"
			      "Delivery is still being retried. If it has not succeeded by\r\n"
			      "%s, the mail system will give up and\r\n"
			      "return the message to you.\r\n\r\n",
			   rfc5322_date(give_up(d), date));
	}
	buf_puts(t, "For help, write to the postmaster of this system and include this\r\n"
		    "report. A machine-readable delivery report and the headers of your\r\n"
		    "message are attached.\r\n\r\n");
}

static void build_text(struct dsn *d)
{
	struct buf *t = &d->text, name = BUF_INIT, lead = BUF_INIT, v = BUF_INIT;

	text_intro(d, t);
	clean(&name, cf_str(d->cf, P_mail_name), NAME_MAX_SHOWN);
	buf_printf(t, "                   The %s program\r\n", buf_cstr(&name));
	for (size_t i = 0; i < d->b->nrcpts; i++) {
		const struct bounce_rcpt *r = &d->b->rcpts[i];
		const char *why = r->text && *r->text ? r->text : r->diag;
		buf_reset(&lead);
		buf_reset(&v);
		buf_putc(&lead, '<');
		clean(&lead, r->addr, ADDR_MAX);
		buf_puts(&lead, ">:");
		clean(&v, why && *why ? why : failed(d) ? "delivery failed" : "delivery delayed",
		      TEXT_MAX);
		buf_puts(t, "\r\n");
		put_folded(t, buf_cstr(&lead), buf_cstr(&v), "    ", TEXT_WIDTH);
	}
	buf_free(&name);
	buf_free(&lead);
	buf_free(&v);
}

/* ---- part 2: message/delivery-status ---------------------------------- */

static void build_status(struct dsn *d)
{
	struct buf *s = &d->status;
	char date[64];

	field(s, "Reporting-MTA", "dns", cf_str(d->cf, P_myhostname), HOST_MAX);
	field(s, "X-Vhostmta-Queue-ID", NULL, d->orig_id, QID_LEN + 4);
	field(s, "X-Vhostmta-Sender", "rfc822", d->b->m->sender, ADDR_MAX);
	field(s, "Arrival-Date", NULL, rfc5322_date(us_to_time(d->b->m->time_us), date), 64);
	for (size_t i = 0; i < d->b->nrcpts; i++) {
		const struct bounce_rcpt *r = &d->b->rcpts[i];
		buf_puts(s, "\r\n");
		field(s, "Final-Recipient", "rfc822", r->addr, ADDR_MAX);
		field(s, "Action", NULL, failed(d) ? "failed" : "delayed", 16);
		field(s, "Status", NULL,
		      status_ok(r->dsn) ? r->dsn : failed(d) ? "5.0.0" : "4.0.0", 16);
		if (r->remote_mta != NULL && *r->remote_mta)
			field(s, "Remote-MTA", "dns", r->remote_mta, HOST_MAX);
		if (r->diag != NULL && *r->diag)
			field(s, "Diagnostic-Code", "smtp", r->diag, TEXT_MAX);
		if (!failed(d))
			field(s, "Will-Retry-Until", NULL, rfc5322_date(give_up(d), date), 64);
	}
}

/* ---- part 3: the original's header section ---------------------------- */

/* header_line: one line of the original's headers (without its line
 * end), made 7-bit and split at MAIL_LINE_MAX, appended to out unless that
 * would pass limit; false then. */
static bool header_line(struct buf *out, const char *p, size_t n, size_t limit)
{
	struct buf l = BUF_INIT;
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (col == MAIL_LINE_MAX) {
			buf_puts(&l, "\r\n ");
			col = 1;
		}
		buf_putc(&l, is_printable(c) || c == '\t' ? (char)c : '?');
		col++;
	}
	buf_puts(&l, "\r\n");
	bool fits = l.len <= limit - out->len;
	if (fits)
		buf_append(out, l.data, l.len);
	buf_free(&l);
	return fits;
}

/* read_headers: the original's content up to its first empty line, at
 * most bounce_size_limit bytes of it as the DSN carries it, whole lines
 * only. false on a read error. */
static bool read_headers(struct dsn *d)
{
	size_t limit = (size_t)cf_num(d->cf, P_bounce_size_limit);
	struct buf line = BUF_INIT;
	struct qdata q;
	char chunk[READ_CHUNK];
	bool more = limit > 0, ok = true;

	qdata_init(&q, d->b->data_fd, d->b->m->data_offset);
	while (more) {
		long r = qdata_read(&q, chunk, sizeof chunk);
		if (r < 0) {
			msg_warn("%s: read content for the notification: %s", d->orig_id,
				 strerror(errno));
			ok = false;
			break;
		}
		if (r == 0) {
			/* A last line without its line end. */
			if (line.len > 0)
				header_line(&d->headers, line.data, line.len, limit);
			break;
		}
		for (long i = 0; more && i < r; i++) {
			if (chunk[i] != '\n') {
				buf_putc(&line, chunk[i]);
				/* Longer than the limit: it can never fit. */
				more = line.len <= limit;
				continue;
			}
			if (line.len > 0 && line.data[line.len - 1] == '\r')
				line.len--;
			more = line.len > 0 &&
			       header_line(&d->headers, line.data, line.len, limit);
			buf_reset(&line);
		}
	}
	buf_free(&line);
	return ok;
}

/* ---- the whole message ------------------------------------------------ */

static bool in_part(const struct buf *b, const char *s)
{
	return b->len > 0 && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* choose_boundary: from the DSN's id and myhostname, with a counter that
 * moves on while any part contains it (hostile headers could). */
static void choose_boundary(struct dsn *d)
{
	const char *host = cf_str(d->cf, P_myhostname);

	for (unsigned n = 0;; n++) {
		snprintf(d->boundary, sizeof d->boundary, "%s.%u/%.*s", d->id, n,
			 BOUNDARY_HOST, host);
		if (!in_part(&d->text, d->boundary) && !in_part(&d->status, d->boundary) &&
		    !in_part(&d->headers, d->boundary))
			return;
	}
}

static void put_part(struct buf *out, const struct dsn *d, const char *headers,
		     const struct buf *body)
{
	buf_printf(out, "--%s\r\n%s\r\n", d->boundary, headers);
	buf_append(out, body->data, body->len);
	buf_puts(out, "\r\n");
}

static void assemble(struct dsn *d, struct buf *out)
{
	char date[64];

	buf_printf(out, "Date: %s\r\n", rfc5322_date(time(NULL), date));
	buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
		   cf_str(d->cf, P_myorigin));
	buf_printf(out, "Subject: %s\r\n", failed(d) ? "Undelivered Mail Returned to Sender"
						     : "Delayed Mail (still being retried)");
	buf_printf(out, "To: <%s>\r\n", d->b->m->sender);
	buf_printf(out, "Message-Id: <%s@%s>\r\n", d->id, cf_str(d->cf, P_myhostname));
	buf_puts(out, "Auto-Submitted: auto-replied\r\n"
		      "MIME-Version: 1.0\r\n"
		      "Content-Type: multipart/report; report-type=delivery-status;\r\n");
	buf_printf(out, "\tboundary=\"%s\"\r\n", d->boundary);
	buf_puts(out, "Content-Transfer-Encoding: 7bit\r\n\r\n"
		      "This is a MIME-encapsulated message.\r\n\r\n");
	put_part(out, d, "Content-Description: Notification\r\n"
			 "Content-Type: text/plain; charset=us-ascii\r\n", &d->text);
	put_part(out, d, "Content-Description: Delivery report\r\n"
			 "Content-Type: message/delivery-status\r\n", &d->status);
	if (d->headers.len > 0)
		put_part(out, d, failed(d) ? "Content-Description: Undelivered Message Headers\r\n"
					     "Content-Type: text/rfc822-headers\r\n"
					   : "Content-Description: Delayed Message Headers\r\n"
					     "Content-Type: text/rfc822-headers\r\n",
			 &d->headers);
	buf_printf(out, "--%s--\r\n", d->boundary);
}

/* enqueue: the envelope records of the DSN, then its content. */
static bool enqueue(struct qfile *f, const char *rcpt, const struct buf *content)
{
	struct buf b = BUF_INIT;
	bool ok;

	buf_printf(&b, "%d", QFILE_VERSION);
	ok = qfile_add(f, QREC_VERSION, b.data, b.len);
	buf_reset(&b);
	buf_printf(&b, "%llu", (unsigned long long)now_us());
	ok = ok && qfile_add(f, QREC_TIME, b.data, b.len);
	ok = ok && qfile_add(f, QREC_CLIENT, DSN_CLIENT, strlen(DSN_CLIENT));
	ok = ok && qfile_add(f, QREC_SENDER, "", 0);
	ok = ok && qfile_add(f, QREC_RCPT, rcpt, strlen(rcpt));
	for (size_t off = 0; ok && off < content->len; off += DATA_CHUNK) {
		size_t n = content->len - off < DATA_CHUNK ? content->len - off : DATA_CHUNK;
		ok = qfile_add(f, QREC_DATA, content->data + off, n);
	}
	buf_free(&b);
	return ok;
}

static void dsn_free(struct dsn *d)
{
	buf_free(&d->text);
	buf_free(&d->status);
	buf_free(&d->headers);
}

/* refuse: why b gets no DSN (logged), or NULL when it can have one. */
static const char *refuse(const struct bounce_msg *b)
{
	if (b->m->sender == NULL || b->m->sender[0] == 0)
		return "null sender";
	if (!sender_ok(b->m->sender))
		return "unusable sender address";
	if (b->nrcpts == 0 || b->rcpts == NULL)
		return "no recipients to report";
	return NULL;
}

bool bounce_write(struct queue *q, const struct cf *cf, const struct bounce_msg *b,
		  qdone_fn *done, void *ctx, char id[QID_LEN + 1])
{
	const char *what = b->kind == BOUNCE_FAILED ? "non-delivery" : "delay";
	struct dsn d = { .cf = cf, .b = b, .id = id };
	struct buf oid = BUF_INIT, content = BUF_INIT;
	const char *why;

	clean(&oid, b->m->id, QID_LEN);
	snprintf(d.orig_id, sizeof d.orig_id, "%s", buf_cstr(&oid));
	buf_free(&oid);
	if ((why = refuse(b)) != NULL) {
		msg_info("%s: sender %s notification not sent: %s", d.orig_id, what, why);
		return false;
	}
	struct qfile *f = queue_create(q, id);
	if (f == NULL) {
		msg_warn("%s: sender %s notification: cannot create a queue file", d.orig_id, what);
		return false;
	}
	build_text(&d);
	build_status(&d);
	if (b->data_fd >= 0 && !read_headers(&d))
		buf_reset(&d.headers);
	choose_boundary(&d);
	assemble(&d, &content);
	bool ok = enqueue(f, b->m->sender, &content);
	int err = errno;
	buf_free(&content);
	dsn_free(&d);
	if (!ok) {
		msg_warn("%s: sender %s notification: queue file write error: %s", d.orig_id,
			 what, strerror(err));
		queue_abort(f);
		return false;
	}
	queue_submit(f, done, ctx);
	msg_info("%s: sender %s notification: %s", d.orig_id, what, id);
	return true;
}
