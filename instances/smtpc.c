/* smtpc.c: one outbound SMTP/LMTP connection on sd-event (smtpc.h).
 * Owns the socket and its three event sources (I/O; one timer, re-armed
 * with each phase's timeout; a defer source that reports from the loop
 * what was decided inside a call), the input line assembly and reply
 * parsing, the output buffer, the content encoder, and the state of the
 * transaction between smtpc_send() and done(). After STARTTLS the same
 * socket carries a TLS session (tls.h): the I/O table is switched, and
 * nothing read before the switch is ever taken as a reply after it.
 *
 * Callbacks run only from event handlers. A callback may end the
 * connection (smtpc_abort in done()): the connection is then only marked,
 * and freed when the handler unwinds, so no handler ever touches freed
 * memory. */
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "log.h"
#include "queue.h"
#include "smtpc.h"
#include "util.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define IN_CHUNK (16 * 1024)       /* one read */
#define BODY_CHUNK (64 * 1024)     /* content read from the queue file at once */
#define WRITE_BURST (1024 * 1024)  /* bytes per wakeup: other connections get their turn */
#define DEFAULT_TIMEOUT (300 * 1000000ULL) /* a timeout left at 0 */
#define HOST_TEXT 256
#define WHERE_TEXT 112             /* an address, or a socket path (sun_path) */
#define HOSTIP_TEXT (HOST_TEXT + WHERE_TEXT + 3)
#define PEER_TEXT (HOSTIP_TEXT + 8)
#define ADDR_MAX 2048              /* longest envelope address we send */
#define EXT_LINE_MAX 256           /* longest EHLO keyword line kept */

enum ext {
	EXT_PIPELINING = 1 << 0,
	EXT_SIZE = 1 << 1,
	EXT_8BITMIME = 1 << 2,
	EXT_STARTTLS = 1 << 3,
	EXT_ENHANCED = 1 << 4,
};

/* The phases of a connection; each one that waits has its own timeout. */
enum state {
	ST_CONNECTING, /* connect() in progress */
	ST_GREETING,   /* waiting for the 220 */
	ST_EHLO,       /* EHLO or LHLO sent */
	ST_HELO,       /* HELO sent after EHLO was refused */
	ST_STARTTLS,   /* STARTTLS sent */
	ST_TLS,        /* the TLS handshake */
	ST_READY,      /* idle: the caller sends or quits */
	ST_MAIL,       /* waiting for the MAIL reply */
	ST_RCPT,       /* waiting for RCPT replies */
	ST_DATA,       /* waiting for the DATA reply */
	ST_BODY,       /* writing the content */
	ST_DOT,        /* waiting for the reply (LMTP: replies) to the final dot */
	ST_RSET,       /* after a failed transaction, before done() */
	ST_QUIT,       /* saying goodbye; no more callbacks */
	ST_DEAD,       /* failed: reporting, then freed */
};

/* Where a recipient is in the transaction. */
enum rstate {
	RS_WAIT, /* RCPT not sent yet */
	RS_SENT, /* RCPT sent, no reply yet */
	RS_OK,   /* RCPT accepted: the result comes after the content */
	RS_DONE, /* result final */
};

enum io_rc { IO_OK, IO_AGAIN, IO_EOF, IO_ERROR };

/* The I/O layer: plain TCP or UNIX stream, or TLS after STARTTLS. */
struct smtpc_io {
	enum io_rc (*read)(struct smtpc *c, void *p, size_t n, size_t *done);
	enum io_rc (*write)(struct smtpc *c, const void *p, size_t n, size_t *done);
	void (*close)(struct smtpc *c);
};

struct smtpc {
	sd_event *event;
	struct smtpc_cfg cfg;
	char *helo_name;
	const struct smtpc_ops *ops;
	void *ctx;
	char hostip[HOSTIP_TEXT]; /* "host[addr]" for texts */
	char peer[PEER_TEXT];     /* "host[addr]:port" for relay= */
	char *host;               /* as given: the name TLS verifies */

	int fd, family;
	const struct smtpc_io *io;
	int io_error;       /* errno of the last IO_ERROR */
	uint32_t io_extra;  /* events the I/O layer needs besides ours: what
			     * the TLS handshake or a TLS write waits for */
	uint32_t rd_want;   /* what a TLS read waits for (asked only while
			     * replies are read: never a busy loop) */
	struct tls_ctx *tls_x; /* the context, from cfg.tls_ctx */
	struct tls *tls;    /* after STARTTLS was accepted */
	bool tls_up;        /* the handshake is done */
	bool tls_more;      /* TLS: input may wait inside the library */
	char tls_sum[128];  /* smtpc_tls_summary */
	sd_event_source *io_src, *timer, *defer;

	enum state st;
	unsigned busy;      /* handlers on the stack */
	bool freed;         /* free when the handlers unwind */
	bool quiet;         /* no more callbacks (quit, abort) */
	bool closing;       /* inside closed() */
	bool failed;        /* why is set: report and end */
	bool done_pending;  /* the transaction is over: done() from the loop */
	bool eof;           /* the server closed its side */
	struct smtpc_result why;

	unsigned ext;
	uint64_t size_limit;

	size_t in_off, in_len; /* unconsumed input is in[in_off..in_len) */
	struct buf line;       /* a reply line being assembled */
	struct smtpc_reply rep;

	struct buf out;
	size_t out_off;        /* out.data[out_off..out.len) waits to be written */

	/* the transaction */
	struct smtpc_txn *t;
	unsigned char *rst;    /* enum rstate per recipient */
	size_t rcpt_pending;   /* RCPT replies still due */
	size_t cursor;         /* where the next RCPT/LMTP reply's recipient is sought */
	size_t naccepted;
	bool pipelined;        /* every command of the transaction was sent at once */
	bool mail_failed;
	struct qdata qd;
	char *chunk;           /* BODY_CHUNK bytes of content */
	bool enc_bol, enc_cr;  /* the encoder: at a line start; a CR waits */
	size_t enc_col;
	bool dot_queued;       /* the final dot is in out */

	char in[IN_CHUNK];
};

static size_t live;

size_t smtpc_count(void) { return live; }

/* ---- reply parsing -------------------------------------------------------- */

void smtpc_reply_init(struct smtpc_reply *r)
{
	memset(r, 0, sizeof *r);
}

void smtpc_reply_free(struct smtpc_reply *r)
{
	for (size_t i = 0; i < r->next; i++)
		free(r->ext[i]);
	free(r->ext);
	smtpc_reply_init(r);
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_print(char ch) { return ch >= 0x20 && ch <= 0x7e; }

/* dsn_len: the length of an RFC 3463 code "C.S.D" at p whose class C is
 * cls (2, 4 or 5), followed by a space or the end; 0 if there is none. */
static size_t dsn_len(const char *p, size_t n, char cls)
{
	size_t i = 2;

	if (n < 5 || p[0] != cls || (cls != '2' && cls != '4' && cls != '5') || p[1] != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < n && is_digit(p[i]) && d < 4) {
			i++;
			d++;
		}
		if (d == 0 || d > 3)
			return 0;
		if (part == 0) {
			if (i >= n || p[i] != '.')
				return 0;
			i++;
		}
	}
	return i == n || p[i] == ' ' ? i : 0;
}

/* text_add: append p[0..n) to the reply text, unprintable bytes as '?',
 * as much as fits. */
static void text_add(char *text, const char *p, size_t n)
{
	size_t len = strlen(text);

	for (size_t i = 0; i < n && len < SMTPC_REPLY_MAX - 1; i++)
		text[len++] = is_print(p[i]) ? p[i] : '?';
	text[len] = 0;
}

/* ext_add: keep one EHLO keyword line, upper-cased and printable; an
 * overlong one is dropped rather than cut (a cut SIZE would lie). */
static void ext_add(struct smtpc_reply *r, const char *p, size_t n)
{
	if (n == 0 || n > EXT_LINE_MAX)
		return;
	char *s = xmalloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		s[i] = !is_print(ch) ? '?' : ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch;
	}
	s[n] = 0;
	r->ext = xreallocarray(r->ext, r->next + 1, sizeof *r->ext);
	r->ext[r->next++] = s;
}

enum smtpc_rp smtpc_reply_line(struct smtpc_reply *r, const char *line, size_t len)
{
	if (r->end || len < 3 || len > SMTPC_LINE_MAX || memchr(line, 0, len) != NULL)
		return SMTPC_RP_BAD;
	if (!is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]))
		return SMTPC_RP_BAD;
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (code < 200 || code > 599 || (len > 3 && line[3] != ' ' && line[3] != '-'))
		return SMTPC_RP_BAD;
	if ((r->code != 0 && code != r->code) || r->nlines >= SMTPC_REPLY_LINES)
		return SMTPC_RP_BAD;
	r->nlines++;

	const char *p = line + 4;
	size_t n = len > 4 ? len - 4 : 0;
	if (r->nlines == 1) {
		r->code = code;
		snprintf(r->text, sizeof r->text, "%d", code);
		size_t d = dsn_len(p, n, line[0]);
		memcpy(r->dsn, p, d);
		r->dsn[d] = 0;
	} else {
		if (line[0] == '2')
			ext_add(r, p, n);
		/* "550-5.7.1 a" "550 5.7.1 b" reads "550 5.7.1 a b". */
		size_t d = strlen(r->dsn);
		if (d > 0 && n >= d && memcmp(p, r->dsn, d) == 0 && (n == d || p[d] == ' ')) {
			p += n == d ? d : d + 1;
			n -= n == d ? d : d + 1;
		}
	}
	if (n > 0) {
		text_add(r->text, " ", 1);
		text_add(r->text, p, n);
	}
	if (len == 3 || line[3] == ' ') {
		r->end = true;
		return SMTPC_RP_DONE;
	}
	return SMTPC_RP_MORE;
}

/* ---- results ------------------------------------------------------------ */

static void res_set(struct smtpc_result *res, int code, const char *dsn, const char *reply,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void res_set(struct smtpc_result *res, int code, const char *dsn, const char *reply,
		    const char *fmt, ...)
{
	va_list ap;

	res->code = code;
	snprintf(res->dsn, sizeof res->dsn, "%s", dsn);
	snprintf(res->reply, sizeof res->reply, "%s", reply);
	va_start(ap, fmt);
	vsnprintf(res->text, sizeof res->text, fmt, ap);
	va_end(ap);
}

/* reply_dsn: the reply's enhanced status, else one from its class. */
static const char *reply_dsn(const struct smtpc_reply *r)
{
	if (r->dsn[0])
		return r->dsn;
	switch (r->code / 100) {
	case 2:
		return "2.0.0";
	case 4:
		return "4.0.0";
	default:
		return "5.0.0";
	}
}

/* res_said: the server's reply to cmd, in Postfix's words. */
static void res_said(struct smtpc *c, struct smtpc_result *res, const struct smtpc_reply *r,
		     const char *cmd)
{
	res_set(res, r->code, reply_dsn(r), r->text, "host %s said: %s (in reply to %s command)",
		c->hostip, r->text, cmd);
}

/* res_ok: a final 2xx: the reply is the whole story. */
static void res_ok(struct smtpc_result *res, const struct smtpc_reply *r)
{
	res_set(res, r->code, reply_dsn(r), r->text, "%s", r->text);
}

/* ---- the event sources ---------------------------------------------------- */

static uint64_t or_default(uint64_t us) { return us ? us : DEFAULT_TIMEOUT; }

static uint64_t phase_timeout(const struct smtpc *c, enum state st)
{
	const struct smtpc_cfg *g = &c->cfg;

	switch (st) {
	case ST_CONNECTING:
		return or_default(g->connect_us);
	case ST_GREETING:
	case ST_EHLO:
	case ST_HELO:
	case ST_STARTTLS:
		return or_default(g->helo_us);
	case ST_TLS:
		return or_default(g->starttls_us);
	case ST_MAIL:
		return or_default(g->mail_us);
	case ST_RCPT:
		return or_default(g->rcpt_us);
	case ST_DATA:
		return or_default(g->data_init_us);
	case ST_BODY:
		return or_default(g->data_xfer_us);
	case ST_DOT:
		return or_default(g->data_done_us);
	case ST_RSET: /* no parameter of its own: housekeeping, like QUIT */
	case ST_QUIT:
		return or_default(g->quit_us);
	case ST_READY:
	case ST_DEAD:
		break;
	}
	return 0;
}

static void timer_arm(struct smtpc *c, uint64_t us)
{
	if (us == 0) {
		sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
		return;
	}
	/* Coalesce wakeups, but keep short test timeouts short. */
	uint64_t acc = us / 8 < 1000000ULL ? us / 8 : 1000000ULL;
	sd_event_source_set_time_accuracy(c->timer, acc ? acc : 1);
	sd_event_source_set_time_relative(c->timer, us);
	sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

static const char *const state_names[] = {
	"CONNECTING", "GREETING", "EHLO", "HELO", "STARTTLS", "TLS", "READY", "MAIL", "RCPT",
	"DATA", "BODY", "DOT", "RSET", "QUIT", "DEAD",
};

/* set_state: enter st with its timeout (entering the same state again,
 * on progress, restarts it). */
static void set_state(struct smtpc *c, enum state st)
{
	if (st != c->st)
		msg_debug("%s: %s -> %s", c->peer, state_names[c->st], state_names[st]);
	c->st = st;
	timer_arm(c, phase_timeout(c, st));
}

/* kick: run the connection's step from the loop (after a call from the
 * caller decided something). */
static void kick(struct smtpc *c)
{
	if (c->defer && sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT) < 0)
		msg_error("cannot schedule the connection to %s", c->peer); /* its timer ends it */
}

/* reading: whether replies are read in st (not during the handshake:
 * the library reads then). */
static bool reading(enum state st)
{
	return st != ST_CONNECTING && st != ST_TLS && st != ST_BODY && st != ST_DEAD;
}

static void update_events(struct smtpc *c)
{
	uint32_t ev = 0;

	if (c->io_src == NULL || c->freed)
		return;
	if (c->st == ST_CONNECTING) {
		ev = EPOLLOUT;
	} else if (c->st != ST_DEAD) {
		if (reading(c->st) && !c->eof && c->in_off == c->in_len)
			ev |= EPOLLIN | c->rd_want;
		if (c->out_off < c->out.len || (c->st == ST_BODY && !c->dot_queued))
			ev |= EPOLLOUT;
		ev |= c->io_extra;
	}
	/* Input the library holds already wakes no epoll: read it from the
	 * loop. */
	if (c->tls_more && reading(c->st) && !c->eof && c->in_off == c->in_len)
		kick(c);
	if (ev == 0) {
		sd_event_source_set_enabled(c->io_src, SD_EVENT_OFF);
		return;
	}
	if (sd_event_source_set_io_events(c->io_src, ev) < 0 ||
	    sd_event_source_set_enabled(c->io_src, SD_EVENT_ON) < 0)
		msg_error("event loop refuses the connection to %s", c->peer); /* the timer ends it */
}

static void really_free(struct smtpc *c)
{
	sd_event_source_disable_unref(c->io_src);
	sd_event_source_disable_unref(c->timer);
	sd_event_source_disable_unref(c->defer);
	if (c->fd >= 0)
		c->io->close(c);
	smtpc_reply_free(&c->rep);
	buf_free(&c->line);
	buf_free(&c->out);
	free(c->rst);
	free(c->chunk);
	free(c->helo_name);
	free(c->host);
	free(c);
	live--;
}

/* end: the connection is over; freed now, or when the handlers on the
 * stack have unwound. */
static void end(struct smtpc *c)
{
	c->freed = true;
	c->quiet = true;
	if (c->io_src)
		sd_event_source_set_enabled(c->io_src, SD_EVENT_OFF);
	sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
	sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
	if (c->busy == 0)
		really_free(c);
}

static void enter(struct smtpc *c) { c->busy++; }

static void leave(struct smtpc *c)
{
	if (--c->busy == 0 && c->freed)
		really_free(c);
}

/* ---- the plain I/O layer ------------------------------------------------- */

static bool errno_again(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static enum io_rc plain_read(struct smtpc *c, void *p, size_t n, size_t *done)
{
	ssize_t r = recv(c->fd, p, n, 0);

	if (r > 0) {
		*done = (size_t)r;
		return IO_OK;
	}
	if (r == 0)
		return IO_EOF;
	if (errno_again())
		return IO_AGAIN;
	c->io_error = errno;
	return IO_ERROR;
}

static enum io_rc plain_write(struct smtpc *c, const void *p, size_t n, size_t *done)
{
	ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);

	if (r > 0) {
		*done = (size_t)r;
		return IO_OK;
	}
	if (r == 0 || errno_again())
		return IO_AGAIN;
	c->io_error = errno;
	return IO_ERROR;
}

static void plain_close(struct smtpc *c)
{
	close(c->fd);
	c->fd = -1;
}

static const struct smtpc_io plain_io = { plain_read, plain_write, plain_close };

/* ---- the TLS I/O layer --------------------------------------------------- */

/* tls_rc: what a TLS step's result means to the connection; want:
 * where the events it waits for are kept. */
static enum io_rc tls_rc(struct smtpc *c, enum tls_rc rc, uint32_t ev, uint32_t *want)
{
	*want = rc == TLS_WANT ? ev : 0;
	switch (rc) {
	case TLS_OK:
		return IO_OK;
	case TLS_WANT:
		return IO_AGAIN;
	case TLS_EOF:
		return IO_EOF;
	case TLS_ERROR:
		break;
	}
	msg_debug("%s: TLS: %s", c->peer, tls_error(c->tls));
	c->io_error = EPROTO;
	return IO_ERROR;
}

static enum io_rc tls_io_read(struct smtpc *c, void *p, size_t n, size_t *done)
{
	uint32_t ev = 0;
	enum io_rc rc = tls_rc(c, tls_read(c->tls, p, n, done, &ev), ev, &c->rd_want);

	/* Only after input: a partial record may count as pending too, and
	 * reading it would just wait again. */
	c->tls_more = rc == IO_OK && tls_pending(c->tls);
	return rc;
}

static enum io_rc tls_io_write(struct smtpc *c, const void *p, size_t n, size_t *done)
{
	uint32_t ev = 0;

	return tls_rc(c, tls_write(c->tls, p, n, done, &ev), ev, &c->io_extra);
}

static void tls_io_close(struct smtpc *c)
{
	tls_free(c->tls);
	c->tls = NULL;
	close(c->fd);
	c->fd = -1;
}

static const struct smtpc_io tls_io = { tls_io_read, tls_io_write, tls_io_close };

/* ---- failures ------------------------------------------------------------- */

static const char *phase(const struct smtpc *c)
{
	switch (c->st) {
	case ST_CONNECTING:
		return "connecting";
	case ST_GREETING:
		return "receiving the initial server greeting";
	case ST_EHLO:
		return c->cfg.lmtp ? "performing the LHLO handshake" : "performing the EHLO handshake";
	case ST_HELO:
		return "performing the HELO handshake";
	case ST_STARTTLS:
		return "sending STARTTLS";
	case ST_TLS:
		return "performing the TLS handshake";
	case ST_READY:
		return "idle";
	case ST_MAIL:
		return "sending MAIL FROM";
	case ST_RCPT:
		return "sending RCPT TO";
	case ST_DATA:
		return "sending DATA command";
	case ST_BODY:
		return "sending message body";
	case ST_DOT:
		return "sending end of data -- message may be sent more than once";
	case ST_RSET:
		return "sending RSET";
	case ST_QUIT:
		return "sending QUIT";
	case ST_DEAD:
		break;
	}
	return "closing";
}

static const char *command(const struct smtpc *c)
{
	switch (c->st) {
	case ST_EHLO:
		return c->cfg.lmtp ? "LHLO" : "EHLO";
	case ST_HELO:
		return "HELO";
	case ST_STARTTLS:
		return "STARTTLS";
	case ST_MAIL:
		return "MAIL FROM";
	case ST_RCPT:
		return "RCPT TO";
	case ST_DATA:
		return "DATA";
	case ST_DOT:
		return "end of DATA";
	case ST_RSET:
		return "RSET";
	case ST_QUIT:
		return "QUIT";
	default:
		return "no";
	}
}

static void fail(struct smtpc *c, int code, const char *dsn, const char *reply,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* fail: the connection is over, for the first reason given. */
static void fail(struct smtpc *c, int code, const char *dsn, const char *reply,
		 const char *fmt, ...)
{
	va_list ap;

	if (c->failed)
		return;
	c->failed = true;
	c->why.code = code;
	snprintf(c->why.dsn, sizeof c->why.dsn, "%s", dsn);
	snprintf(c->why.reply, sizeof c->why.reply, "%s", reply);
	va_start(ap, fmt);
	vsnprintf(c->why.text, sizeof c->why.text, fmt, ap);
	va_end(ap);
	msg_debug("%s: %s", c->peer, c->why.text);
	kick(c);
}

static void fail_lost(struct smtpc *c)
{
	fail(c, 0, "4.4.2", "", "lost connection with %s while %s", c->hostip, phase(c));
}

static void fail_said(struct smtpc *c, const struct smtpc_reply *r)
{
	if (c->st == ST_READY)
		fail(c, r->code, reply_dsn(r), r->text, "host %s said: %s", c->hostip, r->text);
	else
		fail(c, r->code, reply_dsn(r), r->text, "host %s said: %s (in reply to %s command)",
		     c->hostip, r->text, command(c));
}

/* fail_unexpected: a well-formed reply that makes no sense here (a 354
 * to RCPT, a 2xx to DATA): the dialogue is lost, nothing is decided. */
static void fail_unexpected(struct smtpc *c, const struct smtpc_reply *r)
{
	fail(c, 0, "4.5.0", r->text, "host %s said: %s (unexpected reply to %s command)",
	     c->hostip, r->text, command(c));
}

/* defer_outstanding: every recipient without a final result gets the
 * connection's failure, as a deferral. */
static void defer_outstanding(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;

	for (size_t i = 0; i < t->nrcpts; i++) {
		if (c->rst[i] == RS_DONE)
			continue;
		res_set(&t->rcpts[i].res, 0, c->why.dsn, c->why.reply, "%s", c->why.text);
		c->rst[i] = RS_DONE;
	}
}

/* report_failure: done() for the transaction (and any sent from within
 * done()), then closed(), then the end. */
static void report_failure(struct smtpc *c)
{
	c->st = ST_DEAD;
	sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
	if (c->io_src)
		sd_event_source_set_enabled(c->io_src, SD_EVENT_OFF);
	while (c->t != NULL && !c->quiet) {
		struct smtpc_txn *t = c->t;
		defer_outstanding(c);
		c->t = NULL;
		c->ops->done(c->ctx, c, t);
		if (c->freed)
			return;
	}
	if (!c->quiet) {
		c->closing = true;
		c->ops->closed(c->ctx, c, &c->why);
	}
	end(c);
}

/* ---- output ---------------------------------------------------------------- */

static void cmd(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cmd(struct smtpc *c, const char *fmt, ...)
{
	va_list ap;
	size_t start = c->out.len;

	va_start(ap, fmt);
	buf_vprintf(&c->out, fmt, ap);
	va_end(ap);
	if (log_verbose()) {
		struct buf b = BUF_INIT;
		buf_put_printable(&b, c->out.data + start, c->out.len - start);
		msg_debug("%s: > %s", c->peer, buf_cstr(&b));
		buf_free(&b);
	}
	buf_puts(&c->out, "\r\n");
}

/* body_encode: the wire form of content p[0..n): CRLF line ends (a bare
 * CR or LF becomes one), a leading dot doubled, lines longer than the
 * limit folded with CRLF SP. The state carries across chunks. */
static void body_encode(struct smtpc *c, const char *p, size_t n)
{
	size_t limit = c->cfg.line_length_limit, col = c->enc_col;
	bool bol = c->enc_bol;
	struct buf *o = &c->out;

	/* At most 7 bytes out per byte in: CRLF for a waiting CR, a dot, a
	 * fold, the byte. */
	buf_reserve(o, n * 7 + 8);
	char *w = o->data + o->len;
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (c->enc_cr) {
			c->enc_cr = false;
			*w++ = '\r';
			*w++ = '\n';
			col = 0;
			bol = true;
			if (ch == '\n')
				continue;
		}
		if (ch == '\r') {
			c->enc_cr = true;
			continue;
		}
		if (ch == '\n') {
			*w++ = '\r';
			*w++ = '\n';
			col = 0;
			bol = true;
			continue;
		}
		if (bol && ch == '.') {
			*w++ = '.';
			col++;
		}
		if (limit > 0 && col >= limit) {
			*w++ = '\r';
			*w++ = '\n';
			*w++ = ' ';
			col = 1;
		}
		*w++ = ch;
		col++;
		bol = false;
	}
	o->len = (size_t)(w - o->data);
	o->data[o->len] = 0;
	c->enc_col = col;
	c->enc_bol = bol;
}

/* body_end: the last line ended, then the final dot. */
static void body_end(struct smtpc *c)
{
	if (c->enc_cr || !c->enc_bol)
		buf_puts(&c->out, "\r\n");
	buf_puts(&c->out, ".\r\n");
	c->enc_cr = false;
	c->enc_bol = true;
	c->dot_queued = true;
	msg_debug("%s: > (content) .", c->peer);
}

/* body_fill: the next chunk of content into out. It reads on while out
 * holds less than a chunk, so that the last piece of content and the
 * final dot go out in one write (a lone small write waits for the
 * peer's delayed ACK). */
static void body_fill(struct smtpc *c)
{
	while (!c->dot_queued && c->out.len < BODY_CHUNK) {
		long n = qdata_read(&c->qd, c->chunk, BODY_CHUNK);
		if (n < 0) {
			/* Only dropping the connection ends DATA without a message. */
			fail(c, 0, "4.3.0", "", "error reading the queue file of %s: %s",
			     c->t->id ? c->t->id : "a message", strerror(errno));
			return;
		}
		if (n == 0)
			body_end(c);
		else
			body_encode(c, c->chunk, (size_t)n);
	}
}

static void flush_output(struct smtpc *c)
{
	size_t burst = 0;

	while (!c->failed && c->fd >= 0) {
		if (c->out_off == c->out.len) {
			buf_reset(&c->out);
			c->out_off = 0;
			if (c->st != ST_BODY || c->dot_queued || burst >= WRITE_BURST)
				break;
			body_fill(c);
			continue;
		}
		size_t n = 0;
		enum io_rc rc = c->io->write(c, c->out.data + c->out_off, c->out.len - c->out_off, &n);
		if (rc == IO_AGAIN)
			break;
		if (rc != IO_OK) {
			msg_debug("%s: write: %s", c->peer, strerror(c->io_error));
			fail_lost(c);
			return;
		}
		c->out_off += n;
		burst += n;
		if (c->st == ST_BODY)
			timer_arm(c, phase_timeout(c, ST_BODY)); /* progress */
	}
	if (!c->failed && c->st == ST_BODY && c->dot_queued && c->out_off == c->out.len)
		set_state(c, ST_DOT);
}

/* ---- the transaction ---------------------------------------------------- */

/* next_rcpt: the first recipient at or after i in state rs, or nrcpts. */
static size_t next_rcpt(const struct smtpc *c, size_t i, enum rstate rs)
{
	while (i < c->t->nrcpts && c->rst[i] != rs)
		i++;
	return i;
}

static void send_rcpt(struct smtpc *c, size_t i)
{
	cmd(c, "RCPT TO:<%s>", c->t->rcpts[i].addr);
	c->rst[i] = RS_SENT;
	c->rcpt_pending++;
}

/* txn_over: the results are final; RSET first if the server still holds
 * a half transaction. */
static void txn_over(struct smtpc *c, bool rset)
{
	if (rset) {
		cmd(c, "RSET");
		set_state(c, ST_RSET);
		return;
	}
	c->done_pending = true;
}

static void start_data(struct smtpc *c)
{
	c->naccepted = 0;
	for (size_t i = 0; i < c->t->nrcpts; i++)
		c->naccepted += c->rst[i] == RS_OK;
}

static void on_mail(struct smtpc *c, const struct smtpc_reply *r)
{
	struct smtpc_txn *t = c->t;

	switch (r->code / 100) {
	case 2:
		break;
	case 4:
	case 5:
		for (size_t i = 0; i < t->nrcpts; i++) {
			if (c->rst[i] == RS_DONE)
				continue;
			res_said(c, &t->rcpts[i].res, r, "MAIL FROM");
			c->rst[i] = RS_DONE;
		}
		c->mail_failed = true;
		if (!c->pipelined) {
			txn_over(c, true);
			return;
		}
		break;
	default:
		fail_unexpected(c, r);
		return;
	}
	if (!c->pipelined)
		send_rcpt(c, next_rcpt(c, 0, RS_WAIT));
	set_state(c, ST_RCPT);
}

/* after_rcpts: every RCPT reply is in. */
static void after_rcpts(struct smtpc *c)
{
	start_data(c);
	if (c->pipelined) {
		set_state(c, ST_DATA); /* its reply is due either way */
		return;
	}
	if (c->naccepted == 0) {
		txn_over(c, true);
		return;
	}
	cmd(c, "DATA");
	set_state(c, ST_DATA);
}

static void on_rcpt(struct smtpc *c, const struct smtpc_reply *r)
{
	struct smtpc_txn *t = c->t;
	int cls = r->code / 100;

	if (cls != 2 && cls != 4 && cls != 5) {
		fail_unexpected(c, r);
		return;
	}
	c->rcpt_pending--;
	if (!c->mail_failed) {
		size_t i = next_rcpt(c, c->cursor, RS_SENT);
		if (i == t->nrcpts)
			msg_panic("smtpc: RCPT reply without a recipient");
		c->cursor = i + 1;
		if (cls == 2) {
			c->rst[i] = RS_OK;
		} else {
			res_said(c, &t->rcpts[i].res, r, "RCPT TO");
			c->rst[i] = RS_DONE;
		}
	}
	if (c->rcpt_pending > 0) {
		set_state(c, ST_RCPT);
		return;
	}
	size_t next = c->pipelined ? t->nrcpts : next_rcpt(c, 0, RS_WAIT);
	if (next < t->nrcpts && !c->mail_failed) {
		send_rcpt(c, next);
		set_state(c, ST_RCPT);
		return;
	}
	after_rcpts(c);
}

static void start_body(struct smtpc *c)
{
	qdata_init(&c->qd, c->t->data_fd, c->t->data_offset);
	if (c->chunk == NULL)
		c->chunk = xmalloc(BODY_CHUNK);
	c->enc_bol = true;
	c->enc_cr = false;
	c->enc_col = 0;
	c->dot_queued = false;
	c->cursor = 0;
	set_state(c, ST_BODY);
}

static void on_data(struct smtpc *c, const struct smtpc_reply *r)
{
	int cls = r->code / 100;

	if (c->mail_failed || c->naccepted == 0) {
		/* Pipelined DATA after nothing was accepted: a refusal is due;
		 * a 354 would start a message we cannot end cleanly. */
		if (cls == 4 || cls == 5)
			txn_over(c, true);
		else
			fail_unexpected(c, r);
		return;
	}
	if (cls == 3) {
		start_body(c);
		return;
	}
	if (cls == 2) {
		fail_unexpected(c, r);
		return;
	}
	for (size_t i = 0; i < c->t->nrcpts; i++) {
		if (c->rst[i] == RS_OK) {
			res_said(c, &c->t->rcpts[i].res, r, "DATA");
			c->rst[i] = RS_DONE;
		}
	}
	txn_over(c, true);
}

static void dot_result(struct smtpc *c, size_t i, const struct smtpc_reply *r)
{
	if (r->code / 100 == 2)
		res_ok(&c->t->rcpts[i].res, r);
	else
		res_said(c, &c->t->rcpts[i].res, r, "end of DATA");
	c->rst[i] = RS_DONE;
}

static void on_dot(struct smtpc *c, const struct smtpc_reply *r)
{
	struct smtpc_txn *t = c->t;
	int cls = r->code / 100;

	if (cls != 2 && cls != 4 && cls != 5) {
		fail_unexpected(c, r);
		return;
	}
	if (!c->cfg.lmtp) {
		for (size_t i = 0; i < t->nrcpts; i++)
			if (c->rst[i] == RS_OK)
				dot_result(c, i, r);
		txn_over(c, false);
		return;
	}
	size_t i = next_rcpt(c, c->cursor, RS_OK);
	if (i == t->nrcpts)
		msg_panic("smtpc: LMTP reply without a recipient");
	dot_result(c, i, r);
	c->cursor = i + 1;
	if (next_rcpt(c, c->cursor, RS_OK) == t->nrcpts)
		txn_over(c, false);
	else
		set_state(c, ST_DOT);
}

static void on_rset(struct smtpc *c, const struct smtpc_reply *r)
{
	if (r->code / 100 == 2)
		c->done_pending = true;
	else
		fail_said(c, r);
}

/* addr_sendable: an address we can put on a command line: no control
 * characters (they would end or split the command), bounded. */
static bool addr_sendable(const char *s)
{
	size_t n = 0;

	for (; n <= ADDR_MAX && s[n] != 0; n++)
		if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f)
			return false;
	return n <= ADDR_MAX;
}

/* txn_refuse: the transaction ends before anything is sent; every
 * recipient without a result gets this one. */
static void txn_refuse(struct smtpc *c, int code, const char *dsn, const char *text)
{
	for (size_t i = 0; i < c->t->nrcpts; i++) {
		if (c->rst[i] != RS_DONE)
			res_set(&c->t->rcpts[i].res, code, dsn, "", "%s", text);
		c->rst[i] = RS_DONE;
	}
	c->done_pending = true;
	kick(c);
}

/* txn_start: fresh results and per-recipient state for t. */
static void txn_start(struct smtpc *c, struct smtpc_txn *t)
{
	c->t = t;
	free(c->rst);
	c->rst = xcalloc(t->nrcpts ? t->nrcpts : 1, 1);
	for (size_t i = 0; i < t->nrcpts; i++)
		memset(&t->rcpts[i].res, 0, sizeof t->rcpts[i].res);
	c->rcpt_pending = c->cursor = c->naccepted = 0;
	c->pipelined = c->mail_failed = c->dot_queued = false;
}

/* txn_local_checks: what can be decided without the server. False when
 * the transaction is already over. */
static bool txn_local_checks(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;
	char text[SMTPC_TEXT_MAX];

	if (c->size_limit > 0 && t->size > c->size_limit) {
		snprintf(text, sizeof text, "message size %llu exceeds size limit %llu of server %s",
			 (unsigned long long)t->size, (unsigned long long)c->size_limit, c->hostip);
		txn_refuse(c, 552, "5.3.4", text);
		return false;
	}
	if (!addr_sendable(t->sender)) {
		txn_refuse(c, 553, "5.1.7", "sender address with a control character: not sent");
		return false;
	}
	bool any = false;
	for (size_t i = 0; i < t->nrcpts; i++) {
		if (addr_sendable(t->rcpts[i].addr)) {
			any = true;
			continue;
		}
		res_set(&t->rcpts[i].res, 553, "5.1.3", "",
			"recipient address with a control character: not sent");
		c->rst[i] = RS_DONE;
	}
	if (!any) {
		txn_refuse(c, 0, "4.0.0", ""); /* every recipient has its result */
		return false;
	}
	return true;
}

void smtpc_send(struct smtpc *c, struct smtpc_txn *t)
{
	if (c->closing)
		msg_panic("smtpc_send: inside closed() for %s", c->peer);
	if (c->st == ST_DEAD && !c->quiet) {
		/* From done() on a failed connection: the failure ends it too. */
		txn_start(c, t);
		kick(c);
		return;
	}
	if (c->st != ST_READY || c->t != NULL || c->quiet || c->done_pending)
		msg_panic("smtpc_send: the connection to %s is not ready", c->peer);
	txn_start(c, t);
	if (!txn_local_checks(c))
		return;
	char size[32] = "";
	if (c->ext & EXT_SIZE)
		snprintf(size, sizeof size, " SIZE=%llu", (unsigned long long)t->size);
	cmd(c, "MAIL FROM:<%s>%s%s", t->sender, size,
	    t->body_8bit && (c->ext & EXT_8BITMIME) ? " BODY=8BITMIME" : "");
	if (c->ext & EXT_PIPELINING) {
		c->pipelined = true;
		for (size_t i = 0; i < t->nrcpts; i++)
			if (c->rst[i] == RS_WAIT)
				send_rcpt(c, i);
		cmd(c, "DATA");
	}
	set_state(c, ST_MAIL);
	kick(c);
}

/* finish_txn: done() from the loop, the connection idle again. */
static void finish_txn(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;

	c->done_pending = false;
	c->t = NULL;
	set_state(c, ST_READY);
	if (!c->quiet && t != NULL)
		c->ops->done(c->ctx, c, t);
}

/* ---- the handshake ---------------------------------------------------------- */

static void on_greeting(struct smtpc *c, const struct smtpc_reply *r)
{
	switch (r->code / 100) {
	case 2:
		cmd(c, "%s %s", c->cfg.lmtp ? "LHLO" : "EHLO", c->helo_name);
		set_state(c, ST_EHLO);
		break;
	case 4:
		fail(c, r->code, reply_dsn(r), r->text, "host %s refused to talk to me: %s",
		     c->hostip, r->text);
		break;
	case 5: {
		/* As Postfix's smtp_skip_5xx_greeting: a server that will not
		 * talk says nothing about the recipients: the next MX host is
		 * tried, and after the last the mail is deferred. */
		char dsn[sizeof r->dsn];
		snprintf(dsn, sizeof dsn, "4%s", reply_dsn(r) + 1);
		fail(c, 0, dsn, r->text, "host %s refused to talk to me: %s", c->hostip, r->text);
		break;
	}
	default:
		fail_unexpected(c, r);
		break;
	}
}

/* size_param: "SIZE" or "SIZE n"; 0 for none or junk. */
static uint64_t size_param(const char *arg)
{
	unsigned long long v;

	while (*arg == ' ')
		arg++;
	if (*arg == 0 || !str_parse_ull(arg, UINT64_MAX, &v))
		return 0;
	return v;
}

static void parse_ext(struct smtpc *c, const struct smtpc_reply *r)
{
	c->ext = 0;
	c->size_limit = 0;
	for (size_t i = 0; i < r->next; i++) {
		const char *s = r->ext[i];
		size_t k = strcspn(s, " ");
		if (k == 10 && memcmp(s, "PIPELINING", k) == 0) {
			c->ext |= EXT_PIPELINING;
		} else if (k == 4 && memcmp(s, "SIZE", k) == 0) {
			c->ext |= EXT_SIZE;
			c->size_limit = size_param(s + k);
		} else if (k == 8 && memcmp(s, "8BITMIME", k) == 0) {
			c->ext |= EXT_8BITMIME;
		} else if (k == 8 && memcmp(s, "STARTTLS", k) == 0) {
			c->ext |= EXT_STARTTLS;
		} else if (k == 19 && memcmp(s, "ENHANCEDSTATUSCODES", k) == 0) {
			c->ext |= EXT_ENHANCED;
		}
	}
}

static void become_ready(struct smtpc *c)
{
	set_state(c, ST_READY);
	if (!c->quiet)
		c->ops->ready(c->ctx, c);
}

/* tls_wanted: whether this connection is to try STARTTLS at all. */
static bool tls_wanted(const struct smtpc *c)
{
	return !c->cfg.lmtp && c->cfg.tls_level != TLS_LEVEL_NONE && !c->tls_up;
}

static bool tls_required(const struct smtpc *c)
{
	return tls_wanted(c) && c->cfg.tls_level >= TLS_LEVEL_ENCRYPT;
}

/* after_ehlo: STARTTLS when the level asks for it and the server offers
 * it; plaintext only when it is not offered and the level allows. */
static void after_ehlo(struct smtpc *c)
{
	if (!tls_wanted(c)) {
		become_ready(c);
		return;
	}
	if (!(c->ext & EXT_STARTTLS)) {
		if (tls_required(c))
			fail(c, 0, "4.7.4", "", "TLS is required, but was not offered by host %s",
			     c->hostip);
		else
			become_ready(c);
		return;
	}
	/* Asked before STARTTLS: without an engine the server is not made
	 * to wait for a handshake, and the server offered TLS, so no level
	 * goes on in plaintext. */
	c->tls_x = c->cfg.tls_ctx ? c->cfg.tls_ctx(c->cfg.tls_arg) : NULL;
	if (c->tls_x == NULL) {
		fail(c, 0, "4.7.5", "", "TLS is required, but our TLS engine is unavailable");
		return;
	}
	cmd(c, "STARTTLS");
	set_state(c, ST_STARTTLS);
}

static void on_ehlo(struct smtpc *c, const struct smtpc_reply *r)
{
	switch (r->code / 100) {
	case 2:
		parse_ext(c, r);
		after_ehlo(c);
		break;
	case 5:
		if (tls_required(c)) {
			fail(c, 0, "4.7.4", r->text, "TLS is required, but host %s refused EHLO: %s",
			     c->hostip, r->text);
			break;
		}
		if (!c->cfg.lmtp) {
			cmd(c, "HELO %s", c->helo_name);
			set_state(c, ST_HELO);
			break;
		}
		fail_said(c, r);
		break;
	case 4:
		fail_said(c, r);
		break;
	default:
		fail_unexpected(c, r);
		break;
	}
}

static void on_helo(struct smtpc *c, const struct smtpc_reply *r)
{
	switch (r->code / 100) {
	case 2:
		c->ext = 0;
		c->size_limit = 0;
		become_ready(c);
		break;
	case 4:
	case 5:
		fail_said(c, r);
		break;
	default:
		fail_unexpected(c, r);
		break;
	}
}

/* ---- STARTTLS ------------------------------------------------------------------- */

/* tls_established: the verdict on the certificate, logged; at level
 * verify anything less than verified ends the connection. Then EHLO
 * again: what the server offered in plaintext counts no more. */
static void tls_established(struct smtpc *c)
{
	char why[256], desc[160];
	enum tls_verdict v = tls_verdict(c->tls, why, sizeof why);
	static const char *const adj[] = { "Untrusted", "Trusted", "Verified" };

	c->tls_up = true;
	c->io_extra = 0;
	snprintf(c->tls_sum, sizeof c->tls_sum, "%s:%s:%s", tls_version(c->tls),
		 tls_cipher(c->tls), tls_verdict_name(v));
	tls_describe(c->tls, desc, sizeof desc);
	msg_info("%s TLS connection established to %s: %s", adj[v], c->peer, desc);
	if (c->cfg.tls_level == TLS_LEVEL_VERIFY && v == TLS_UNTRUSTED) {
		fail(c, 0, "4.7.5", "", "Server certificate not trusted (%s) for host %s", why,
		     c->hostip);
		return;
	}
	if (c->cfg.tls_level == TLS_LEVEL_VERIFY && v == TLS_TRUSTED) {
		fail(c, 0, "4.7.5", "", "Server certificate not verified (%s) for host %s", why,
		     c->hostip);
		return;
	}
	c->ext = 0;
	c->size_limit = 0;
	c->tls_more = tls_pending(c->tls);
	cmd(c, "EHLO %s", c->helo_name);
	set_state(c, ST_EHLO);
}

/* handshake: one step of the TLS handshake. */
static void handshake(struct smtpc *c)
{
	uint32_t ev = 0;

	switch (tls_handshake(c->tls, &ev)) {
	case TLS_OK:
		tls_established(c);
		break;
	case TLS_WANT:
		c->io_extra = ev;
		break;
	case TLS_EOF:
	case TLS_ERROR:
		fail(c, 0, "4.7.5", "", "cannot start TLS with host %s: handshake failed: %s",
		     c->hostip, tls_error(c->tls));
		break;
	}
}

/* discard_input: whatever came with or after the 220 to STARTTLS. A
 * server (or a man in the middle) may append lines there; read after
 * the handshake they would pass for replies sent inside TLS. */
static void discard_input(struct smtpc *c)
{
	size_t n = c->in_len - c->in_off + c->line.len;

	c->in_off = c->in_len = 0;
	buf_reset(&c->line);
	if (n > 0)
		msg_warn("%s: %zu bytes after the reply to STARTTLS discarded", c->peer, n);
}

static void start_tls(struct smtpc *c)
{
	c->tls = tls_client(c->tls_x, c->fd, c->host);
	if (c->tls == NULL) {
		fail(c, 0, "4.7.5", "", "cannot start TLS with host %s: no TLS session", c->hostip);
		return;
	}
	c->io = &tls_io;
	set_state(c, ST_TLS);
	handshake(c);
}

static void on_starttls(struct smtpc *c, const struct smtpc_reply *r)
{
	char dsn[sizeof r->dsn];

	if (r->code == 220 && c->out_off == c->out.len) {
		discard_input(c);
		start_tls(c);
		return;
	}
	if (r->code / 100 != 4 && r->code / 100 != 5) {
		/* A 220 before STARTTLS was even sent counts as unexpected too. */
		fail_unexpected(c, r);
		return;
	}
	/* Refused: never on in plaintext (that would need a new
	 * connection), and a deferral whatever the code: TLS may work later
	 * or at another MX host. */
	snprintf(dsn, sizeof dsn, "4%s", reply_dsn(r) + 1);
	fail(c, 0, dsn, r->text, "host %s said: %s (in reply to STARTTLS command)", c->hostip,
	     r->text);
}

/* ---- input ------------------------------------------------------------------ */

static void on_reply(struct smtpc *c, const struct smtpc_reply *r)
{
	msg_debug("%s: < %s", c->peer, r->text);
	if (c->st == ST_QUIT) {
		end(c);
		return;
	}
	if (r->code == 421 && c->st != ST_GREETING) {
		fail_said(c, r); /* the server is closing */
		return;
	}
	switch (c->st) {
	case ST_GREETING:
		on_greeting(c, r);
		break;
	case ST_EHLO:
		on_ehlo(c, r);
		break;
	case ST_HELO:
		on_helo(c, r);
		break;
	case ST_STARTTLS:
		on_starttls(c, r);
		break;
	case ST_MAIL:
		on_mail(c, r);
		break;
	case ST_RCPT:
		on_rcpt(c, r);
		break;
	case ST_DATA:
		on_data(c, r);
		break;
	case ST_DOT:
		on_dot(c, r);
		break;
	case ST_RSET:
		on_rset(c, r);
		break;
	case ST_READY:
		fail_unexpected(c, r); /* nothing was asked */
		break;
	default:
		msg_panic("smtpc: reply in state %d", (int)c->st);
	}
}

static void fail_malformed(struct smtpc *c)
{
	if (c->st == ST_QUIT) {
		end(c);
		return;
	}
	fail(c, 0, "4.5.0", "", "host %s sent a malformed reply while %s", c->hostip, phase(c));
}

/* process_input: assemble lines from the input read; true when a whole
 * reply was handled or the input was refused (the state may have
 * changed), false when more input is needed. A line is bounded while it
 * is being assembled: an endless one is refused, not buffered. */
static bool process_input(struct smtpc *c)
{
	while (c->in_off < c->in_len) {
		const char *p = c->in + c->in_off;
		size_t avail = c->in_len - c->in_off;
		const char *nl = memchr(p, '\n', avail);
		size_t take = nl ? (size_t)(nl - p) + 1 : avail;

		if (c->line.len + take > SMTPC_LINE_MAX + 2) {
			c->in_off = c->in_len = 0;
			buf_reset(&c->line);
			fail_malformed(c);
			return true;
		}
		buf_append(&c->line, p, take);
		c->in_off += take;
		if (nl == NULL)
			break;
		size_t len = c->line.len - 1;
		if (len > 0 && c->line.data[len - 1] == '\r')
			len--;
		enum smtpc_rp rp = smtpc_reply_line(&c->rep, c->line.data, len);
		buf_reset(&c->line);
		if (rp == SMTPC_RP_BAD) {
			c->in_off = c->in_len = 0;
			fail_malformed(c);
			return true;
		}
		if (rp == SMTPC_RP_DONE) {
			struct smtpc_reply r = c->rep;
			smtpc_reply_init(&c->rep);
			on_reply(c, &r);
			smtpc_reply_free(&r);
			return true;
		}
	}
	c->in_off = c->in_len = 0;
	return false;
}

static void read_input(struct smtpc *c)
{
	size_t n = 0;

	if (!reading(c->st) || c->eof || c->in_off < c->in_len || c->fd < 0)
		return;
	switch (c->io->read(c, c->in, sizeof c->in, &n)) {
	case IO_OK:
		c->in_off = 0;
		c->in_len = n;
		break;
	case IO_AGAIN:
		break;
	case IO_ERROR:
		msg_debug("%s: read: %s", c->peer, strerror(c->io_error));
		c->eof = true;
		break;
	case IO_EOF:
		c->eof = true;
		break;
	}
}

/* ---- the steps ---------------------------------------------------------------- */

/* step: whatever can be done now: report a failure, end a transaction,
 * handle the replies read, write. Callbacks may end c (c->freed): it
 * stays allocated until the handler that called step unwinds. */
static void step(struct smtpc *c)
{
	for (;;) {
		if (c->freed)
			return;
		if (c->failed) {
			report_failure(c);
			return;
		}
		if (c->done_pending) {
			finish_txn(c);
			continue;
		}
		if (reading(c->st) && process_input(c))
			continue;
		if (c->eof && reading(c->st)) {
			if (c->st == ST_QUIT)
				end(c);
			else
				fail_lost(c);
			continue;
		}
		enum state before = c->st;
		flush_output(c);
		if (c->failed || c->st != before)
			continue;
		break;
	}
	update_events(c);
}

static void connect_done(struct smtpc *c)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		fail(c, 0, "4.4.1", "", "connect to %s: %s", c->peer, strerror(err));
		return;
	}
	msg_debug("%s: connected", c->peer);
	set_state(c, ST_GREETING);
}

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct smtpc *c = userdata;
	(void)src;
	(void)fd;

	enter(c);
	if (c->st == ST_CONNECTING)
		connect_done(c);
	else if (c->st == ST_TLS)
		handshake(c);
	else if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR | c->rd_want))
		read_input(c);
	step(c);
	leave(c);
	return 0;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct smtpc *c = userdata;
	(void)src;
	(void)usec;

	enter(c);
	if (c->st == ST_QUIT)
		end(c);
	else if (c->st == ST_CONNECTING)
		fail(c, 0, "4.4.1", "", "connect to %s: %s", c->peer, strerror(ETIMEDOUT));
	else if (c->st != ST_READY && c->st != ST_DEAD)
		fail(c, 0, "4.4.2", "", "conversation with %s timed out while %s", c->hostip,
		     phase(c));
	step(c);
	leave(c);
	return 0;
}

static int on_defer(sd_event_source *src, void *userdata)
{
	struct smtpc *c = userdata;
	(void)src;

	enter(c);
	if (c->tls_more)
		read_input(c);
	step(c);
	leave(c);
	return 0;
}

/* ---- connecting ----------------------------------------------------------------- */

/* printable_copy: s[0..n) into out (size outlen), unprintable bytes as '?'. */
static void printable_copy(char *out, size_t outlen, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n && i + 1 < outlen; i++)
		out[i] = is_print(s[i]) ? s[i] : '?';
	out[i] = 0;
}

/* peer_names: "host[addr]" and "host[addr]:port" (or "host[/path]"). */
static void peer_names(struct smtpc *c, const char *host, const struct sockaddr *sa,
		       socklen_t len)
{
	char h[HOST_TEXT], where[WHERE_TEXT];

	printable_copy(h, sizeof h, host ? host : "", host ? strnlen(host, HOST_TEXT) : 0);
	if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *su = (const struct sockaddr_un *)sa;
		size_t off = offsetof(struct sockaddr_un, sun_path);
		size_t n = len > off ? len - off : 0;
		if (n > sizeof su->sun_path)
			n = sizeof su->sun_path;
		if (n > 0 && su->sun_path[0] == 0) { /* abstract: "@name" */
			where[0] = '@';
			printable_copy(where + 1, sizeof where - 1, su->sun_path + 1, n - 1);
		} else {
			printable_copy(where, sizeof where, su->sun_path, strnlen(su->sun_path, n));
		}
		snprintf(c->hostip, sizeof c->hostip, "%s[%s]", h, where);
		snprintf(c->peer, sizeof c->peer, "%s", c->hostip);
		return;
	}
	struct ipaddr ip;
	uint16_t port = 0;
	if (ipaddr_from_sockaddr(sa, len, &ip, &port))
		ipaddr_format(&ip, where);
	else
		snprintf(where, sizeof where, "?");
	snprintf(c->hostip, sizeof c->hostip, "%s[%s]", h, where);
	snprintf(c->peer, sizeof c->peer, "%s:%u", c->hostip, (unsigned)port);
}

/* bind_source: the one source address; a failure fails the connection,
 * it never falls back to another address. */
static bool bind_source(struct smtpc *c, const struct sockaddr *src, socklen_t srclen)
{
	struct ipaddr ip;
	char text[IPADDR_STRLEN] = "?";
	uint16_t port;
	int one = 1;

	if (ipaddr_from_sockaddr(src, srclen, &ip, &port))
		ipaddr_format(&ip, text);
	if (src->sa_family != c->family) {
		fail(c, 0, "4.4.0", "", "bind %s failed: %s", text, strerror(EAFNOSUPPORT));
		return false;
	}
	/* The port comes with connect(): ports are shared per destination. */
	(void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	if (bind(c->fd, src, srclen) < 0) {
		fail(c, 0, "4.4.0", "", "bind %s failed: %s", text, strerror(errno));
		return false;
	}
	return true;
}

static void start_connect(struct smtpc *c, const struct sockaddr *addr, socklen_t addrlen,
			  const struct sockaddr *src, socklen_t srclen)
{
	int family = addr->sa_family;

	if ((family != AF_INET && family != AF_INET6 && family != AF_UNIX) ||
	    addrlen > sizeof(struct sockaddr_storage)) {
		fail(c, 0, "4.4.1", "", "connect to %s: %s", c->peer, strerror(EAFNOSUPPORT));
		return;
	}
	c->family = family;
	c->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		fail(c, 0, "4.3.0", "", "connect to %s: socket: %s", c->peer, strerror(errno));
		return;
	}
	if (src != NULL && family != AF_UNIX && !bind_source(c, src, srclen))
		return;
	if (connect(c->fd, addr, addrlen) == 0) {
		set_state(c, ST_GREETING);
	} else if (errno == EINPROGRESS || errno == EINTR) {
		set_state(c, ST_CONNECTING);
	} else {
		fail(c, 0, "4.4.1", "", "connect to %s: %s", c->peer, strerror(errno));
		return;
	}
	int r = sd_event_add_io(c->event, &c->io_src, c->fd,
				c->st == ST_CONNECTING ? EPOLLOUT : EPOLLIN, on_io, c);
	if (r < 0)
		msg_fatal("sd_event_add_io: %s", strerror(-r));
}

struct smtpc *smtpc_connect(sd_event *event, const struct smtpc_cfg *cfg,
			    const struct smtpc_ops *ops, void *ctx, const char *host,
			    const struct sockaddr *addr, socklen_t addrlen,
			    const struct sockaddr *src, socklen_t srclen)
{
	struct smtpc *c = xcalloc(1, sizeof *c);
	int r;

	live++;
	c->event = event;
	c->cfg = *cfg;
	c->helo_name = xstrdup(cfg->helo_name ? cfg->helo_name : "localhost");
	c->host = xstrdup(host ? host : "");
	c->cfg.helo_name = c->helo_name;
	c->ops = ops;
	c->ctx = ctx;
	c->fd = -1;
	c->io = &plain_io;
	c->st = ST_CONNECTING;
	smtpc_reply_init(&c->rep);
	peer_names(c, host, addr, addrlen);
	if ((r = sd_event_add_defer(event, &c->defer, on_defer, c)) < 0 ||
	    (r = sd_event_source_set_enabled(c->defer, SD_EVENT_OFF)) < 0 ||
	    (r = sd_event_add_time_relative(event, &c->timer, CLOCK_MONOTONIC,
					    phase_timeout(c, ST_CONNECTING), 0, on_timer, c)) < 0)
		msg_fatal("sd_event: %s", strerror(-r));
	start_connect(c, addr, addrlen, src, srclen);
	return c;
}

/* ---- the rest of the API ------------------------------------------------------------ */

void smtpc_quit(struct smtpc *c)
{
	if (c->closing || c->freed)
		return;
	if (c->st != ST_READY || c->t != NULL || c->failed || c->done_pending) {
		end(c); /* nothing polite to say in mid-dialogue */
		return;
	}
	c->quiet = true;
	cmd(c, "QUIT");
	set_state(c, ST_QUIT);
	kick(c);
}

void smtpc_abort(struct smtpc *c)
{
	if (c->closing || c->freed)
		return;
	end(c);
}

const char *smtpc_peer(const struct smtpc *c) { return c->peer; }

bool smtpc_usable(const struct smtpc *c)
{
	return c->st == ST_READY && !c->failed && !c->freed && !c->quiet;
}

const char *smtpc_tls_summary(const struct smtpc *c)
{
	return c->tls_up ? c->tls_sum : "none";
}

bool smtpc_has_pipelining(const struct smtpc *c) { return (c->ext & EXT_PIPELINING) != 0; }

uint64_t smtpc_size_limit(const struct smtpc *c) { return c->size_limit; }
