/* smtpd.c: the ESMTP server session engine. A commands[] table drives the
 * protocol: each verb names the states it is allowed in and its handler.
 * A session holds one transaction at a time (struct txn), discarded by
 * RSET, HELO/EHLO, errors and the end of DATA. Message content goes
 * through a byte-level state machine in which only <CR><LF>.<CR><LF> ends
 * the data and any bare CR or LF spoils the message (SMTP smuggling). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cf.h"
#include "log.h"
#include "mailaddr.h"
#include "policy.h"
#include "queue.h"
#include "smtpd.h"
#include "util.h"

#define DATA_CHUNK 65536   /* content is written to the queue file in chunks */
#define HELO_MAX 255       /* the part of a HELO argument that is kept */
#define ADDR_TEXT (LOCAL_MAX + DOMAIN_MAX + 2)

struct smtpd_stats smtpd_stats;

enum state {
	S_START, /* greeted, no HELO/EHLO yet */
	S_READY, /* HELO/EHLO done, no transaction */
	S_MAIL,  /* MAIL accepted */
	S_RCPT,  /* at least one RCPT accepted */
	S_DATA,  /* reading message content */
	S_WAIT,  /* message handed to the queue, waiting for the commit */
	S_CLOSING,
	S_TLS,   /* 220 to STARTTLS said: the connection does the handshake */
};

static const char *const state_names[] = {
	"START", "READY", "MAIL", "RCPT", "DATA", "WAIT", "CLOSING", "TLS",
};

/* Where the DATA state machine is within a line. */
enum dstate {
	D_BOL,   /* at the beginning of a line */
	D_TEXT,  /* inside a line */
	D_CR,    /* inside a line, after CR */
	D_DOT,   /* a line that starts with '.' */
	D_DOTCR, /* ".<CR>" at the beginning of a line */
};

struct txn {
	char from[ADDR_TEXT];
	struct mail_params params;
	char **rcpts;
	size_t nrcpts, rcpt_cap;
	struct qfile *qf;
	char id[QID_LEN + 1];
	uint64_t size;     /* content bytes received */
	bool too_big;      /* over message_size_limit: discard, 552 at the end */
	bool bare_eol;     /* a bare CR or LF: discard, 550 at the end */
	bool io_error;     /* the queue file could not be written */
	struct buf chunk;  /* content not yet written to the queue file */
};

struct smtpd {
	const struct smtpd_config *cfg;
	struct smtpd_client client;
	char client_text[IPADDR_STRLEN + 8]; /* "[addr]:port" */
	struct smtpd_io io;
	struct buf out;
	struct buf line;      /* a command line being assembled */
	bool line_overflow;   /* the current line is too long: discard to CRLF */
	uint64_t lines;       /* whole lines consumed (smtpd_progress) */
	enum state state;
	enum dstate dstate;
	bool esmtp;
	bool tls;             /* inside TLS, after STARTTLS */
	char tls_desc[128];   /* "TLSv1.3 with cipher ..." for Received */
	bool shutdown;        /* 421 after the current transaction */
	bool freed;           /* smtpd_free while the queue still calls back */
	char helo[HELO_MAX + 1];
	unsigned errors, junk;
	struct txn t;
	/* The input of the feed in progress, to detect improper pipelining. */
	size_t feed_left;
};

struct command {
	const char *verb;
	unsigned states; /* bit mask of enum state where it is allowed */
	bool junk;       /* counts against smtpd_junk_command_limit */
	bool last;       /* RFC 2920: must end a pipelined group */
	bool pre_tls;    /* allowed before STARTTLS under smtpd_tls_security_level = encrypt */
	void (*run)(struct smtpd *s, const char *arg, size_t n);
};

#define IN(st) (1u << (st))
#define ANY_CMD (IN(S_START) | IN(S_READY) | IN(S_MAIL) | IN(S_RCPT))

/* --- output ------------------------------------------------------------ */

static void reply(struct smtpd *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct smtpd *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&s->out, fmt, ap);
	va_end(ap);
	buf_puts(&s->out, "\r\n");
}

static long long param(const struct smtpd *s, enum param_id id) { return cf_num(s->cfg->cf, id); }
static const char *param_str(const struct smtpd *s, enum param_id id) { return cf_str(s->cfg->cf, id); }

static void enter_state(struct smtpd *s, enum state st)
{
	if (log_verbose() > 1)
		msg_debug("%s: %s -> %s", s->client_text, state_names[s->state], state_names[st]);
	s->state = st;
}

/* safe: client text made printable for the log (static buffer). */
static const char *safe(const char *p, size_t n)
{
	static struct buf b;
	buf_reset(&b);
	buf_put_printable(&b, p, n > 300 ? 300 : n);
	return buf_cstr(&b);
}

/* error: an error reply; at smtpd_hard_error_limit the session ends. */
static void error(struct smtpd *s, const char *text)
{
	reply(s, "%s", text);
	if (++s->errors >= (unsigned)param(s, P_smtpd_hard_error_limit)) {
		reply(s, "421 4.7.0 %s Error: too many errors", param_str(s, P_myhostname));
		msg_info("too many errors from %s", s->client_text);
		enter_state(s, S_CLOSING);
	}
}

/* --- transactions ------------------------------------------------------ */

static void txn_reset(struct smtpd *s)
{
	struct txn *t = &s->t;

	for (size_t i = 0; i < t->nrcpts; i++)
		free(t->rcpts[i]);
	free(t->rcpts);
	if (t->qf)
		queue_abort(t->qf);
	buf_free(&t->chunk);
	memset(t, 0, sizeof *t);
}

static void reject_log(struct smtpd *s, const char *verb, const char *text, const char *to)
{
	smtpd_stats.rejected++;
	msg_info("NOQUEUE: reject: %s from %s: %s; from=<%s>%s%s%s proto=%s helo=<%s>", verb,
		 s->client_text, text, s->t.from, to ? " to=<" : "", to ? to : "", to ? ">" : "",
		 s->esmtp ? "ESMTP" : "SMTP", s->helo);
}

/* --- commands ---------------------------------------------------------- */

static bool tls_offered(const struct smtpd *s)
{
	return s->cfg->tls && !s->tls && strcmp(param_str(s, P_smtpd_tls_security_level), "none") != 0;
}

static bool tls_required(const struct smtpd *s)
{
	return !s->tls && strcmp(param_str(s, P_smtpd_tls_security_level), "encrypt") == 0;
}

static void do_helo(struct smtpd *s, const char *arg, size_t n, bool esmtp)
{
	if (n == 0) {
		error(s, esmtp ? "501 5.5.4 Syntax: EHLO hostname" : "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	txn_reset(s);
	snprintf(s->helo, sizeof s->helo, "%s", safe(arg, n > HELO_MAX ? HELO_MAX : n));
	s->esmtp = esmtp;
	enter_state(s, S_READY);
	const char *me = param_str(s, P_myhostname);
	if (!esmtp) {
		reply(s, "250 %s", me);
		return;
	}
	reply(s, "250-%s", me);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %lld", param(s, P_message_size_limit));
	reply(s, "250-ENHANCEDSTATUSCODES");
	if (tls_offered(s))
		reply(s, "250-STARTTLS");
	reply(s, "250 8BITMIME");
}

static void cmd_ehlo(struct smtpd *s, const char *arg, size_t n) { do_helo(s, arg, n, true); }
static void cmd_helo(struct smtpd *s, const char *arg, size_t n) { do_helo(s, arg, n, false); }

/* colon_arg: "FROM:" or "TO:" (any case) at the start of arg; the rest. */
static bool colon_arg(const char *kw, const char **arg, size_t *n)
{
	size_t k = strlen(kw);
	if (*n < k || ascii_strncasecmp(*arg, kw, k) != 0)
		return false;
	*arg += k;
	*n -= k;
	while (*n > 0 && (**arg == ' ' || **arg == '\t')) {
		(*arg)++;
		(*n)--;
	}
	return true;
}

static void cmd_mail(struct smtpd *s, const char *arg, size_t n)
{
	struct mailbox mb;
	struct mail_params mp;

	if (s->state == S_START && param(s, P_smtpd_helo_required)) {
		error(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state == S_MAIL || s->state == S_RCPT) {
		error(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (!colon_arg("FROM:", &arg, &n)) {
		error(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	mailaddr_err e = parse_mail_from(arg, n, param(s, P_strict_rfc821_envelopes), &mb, &mp);
	if (e) {
		error(s, e);
		return;
	}
	if (!s->esmtp && (mp.has_size || mp.body != BODY_NONE)) {
		error(s, "555 5.5.4 Unsupported option: ESMTP parameters need EHLO");
		return;
	}
	if (mp.has_size && mp.size > (uint64_t)param(s, P_message_size_limit)) {
		error(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	txn_reset(s);
	mailbox_format(&mb, s->t.from);
	s->t.params = mp;
	enter_state(s, S_MAIL);
	reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct smtpd *s, const char *arg, size_t n)
{
	struct mailbox mb;
	char to[ADDR_TEXT];

	if (s->state != S_MAIL && s->state != S_RCPT) {
		error(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (!colon_arg("TO:", &arg, &n)) {
		error(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	mailaddr_err e = parse_rcpt_to(arg, n, param(s, P_strict_rfc821_envelopes), &mb);
	if (e) {
		error(s, e);
		return;
	}
	mailbox_format(&mb, to);
	if (s->t.nrcpts >= (size_t)param(s, P_smtpd_recipient_limit)) {
		reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (policy_rcpt(s->cfg->policy, &s->client.addr, &mb) == RCPT_DENIED) {
		char text[ADDR_TEXT + 64];
		snprintf(text, sizeof text, "554 5.7.1 <%s>: Relay access denied", to);
		reject_log(s, "RCPT", text, to);
		error(s, text);
		return;
	}
	if (s->t.nrcpts == s->t.rcpt_cap) {
		s->t.rcpt_cap = s->t.rcpt_cap ? 2 * s->t.rcpt_cap : 8;
		s->t.rcpts = xreallocarray(s->t.rcpts, s->t.rcpt_cap, sizeof *s->t.rcpts);
	}
	s->t.rcpts[s->t.nrcpts++] = xstrdup(to);
	enter_state(s, S_RCPT);
	reply(s, "250 2.1.5 Ok");
}

/* received: the trace header this instance prepends (RFC 5321 §4.4). */
static void received(struct smtpd *s, struct buf *b)
{
	char date[64], addr[IPADDR_STRLEN];
	time_t now = time(NULL);
	struct tm tm;

	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", localtime_r(&now, &tm));
	buf_printf(b, "Received: from %s ([%s])\r\n", s->helo, ipaddr_format(&s->client.addr, addr));
	if (s->tls)
		buf_printf(b, "\t(using %s)\r\n", s->tls_desc);
	/* RFC 3848: ESMTPS is ESMTP inside TLS. */
	buf_printf(b, "\tby %s (%s) with %s%s id %s", param_str(s, P_myhostname),
		   param_str(s, P_mail_name), s->esmtp ? "ESMTP" : "SMTP", s->tls ? "S" : "",
		   s->t.id);
	if (s->t.nrcpts == 1)
		buf_printf(b, "\r\n\tfor <%s>", s->t.rcpts[0]);
	buf_printf(b, "; %s\r\n", date);
}

/* start_queue_file: the envelope records, written before the content. */
static bool start_queue_file(struct smtpd *s)
{
	struct txn *t = &s->t;
	struct buf b = BUF_INIT;
	char addr[IPADDR_STRLEN];
	bool ok;

	t->qf = queue_create(s->cfg->queue, t->id);
	if (t->qf == NULL)
		return false;
	buf_printf(&b, "%d", QFILE_VERSION);
	ok = qfile_add(t->qf, QREC_VERSION, b.data, b.len);
	buf_reset(&b);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	buf_printf(&b, "%llu", (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
	ok = ok && qfile_add(t->qf, QREC_TIME, b.data, b.len);
	buf_reset(&b);
	buf_printf(&b, "%s %s", ipaddr_format(&s->client.addr, addr), s->helo);
	ok = ok && qfile_add(t->qf, QREC_CLIENT, b.data, b.len);
	ok = ok && qfile_add(t->qf, QREC_SENDER, t->from, strlen(t->from));
	for (size_t i = 0; ok && i < t->nrcpts; i++)
		ok = qfile_add(t->qf, QREC_RCPT, t->rcpts[i], strlen(t->rcpts[i]));
	if (ok && t->params.body != BODY_NONE) {
		const char *body = t->params.body == BODY_8BITMIME ? "BODY=8BITMIME" : "BODY=7BIT";
		ok = qfile_add(t->qf, QREC_ATTR, body, strlen(body));
	}
	buf_reset(&b);
	received(s, &b);
	buf_append(&t->chunk, b.data, b.len);
	buf_free(&b);
	return ok;
}

static void cmd_data(struct smtpd *s, const char *arg, size_t n)
{
	if (s->state != S_RCPT) {
		error(s, s->state == S_MAIL ? "554 5.5.1 Error: no valid recipients"
					    : "503 5.5.1 Error: need RCPT command");
		return;
	}
	if (n > 0) {
		error(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (!start_queue_file(s)) {
		reply(s, "451 4.3.0 Error: queue file write error");
		txn_reset(s);
		enter_state(s, S_READY);
		return;
	}
	msg_info("%s: client=%s, helo=<%s>", s->t.id, s->client_text, s->helo);
	s->dstate = D_BOL;
	enter_state(s, S_DATA);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_rset(struct smtpd *s, const char *arg, size_t n)
{
	txn_reset(s);
	if (s->state != S_START)
		enter_state(s, S_READY);
	reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtpd *s, const char *arg, size_t n) { reply(s, "250 2.0.0 Ok"); }

static void cmd_vrfy(struct smtpd *s, const char *arg, size_t n)
{
	if (param(s, P_disable_vrfy_command))
		error(s, "502 5.5.1 VRFY command is disabled");
	else if (n == 0)
		error(s, "501 5.5.4 Syntax: VRFY address");
	else
		reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtpd *s, const char *arg, size_t n)
{
	reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT");
}

static void cmd_quit(struct smtpd *s, const char *arg, size_t n)
{
	reply(s, "221 2.0.0 Bye");
	txn_reset(s);
	enter_state(s, S_CLOSING);
}

static void cmd_unimplemented(struct smtpd *s, const char *arg, size_t n)
{
	error(s, "502 5.5.1 Error: command not implemented");
}

/* cmd_starttls: RFC 3207. After the 220 the connection layer drops any
 * input it already holds (plaintext pipelined after STARTTLS must never
 * be read as if it came inside TLS: CVE-2011-0411; this command ends a
 * pipelined group, so such input has already ended the session). */
static void cmd_starttls(struct smtpd *s, const char *arg, size_t n)
{
	if (s->tls) {
		error(s, "554 5.5.1 Error: TLS already active");
		return;
	}
	if (!tls_offered(s)) {
		error(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (n > 0) {
		error(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (!s->esmtp) {
		error(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (s->state == S_MAIL || s->state == S_RCPT) {
		error(s, "503 5.5.1 Error: MAIL transaction in progress");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	enter_state(s, S_TLS);
}

static const struct command commands[] = {
	{ "EHLO", ANY_CMD, false, true, true, cmd_ehlo },
	{ "HELO", ANY_CMD, false, true, true, cmd_helo },
	{ "MAIL", ANY_CMD, false, false, false, cmd_mail },
	{ "RCPT", ANY_CMD, false, false, false, cmd_rcpt },
	{ "DATA", ANY_CMD, false, true, false, cmd_data },
	{ "RSET", ANY_CMD, true, false, true, cmd_rset },
	{ "NOOP", ANY_CMD, true, true, true, cmd_noop },
	{ "VRFY", ANY_CMD, true, true, false, cmd_vrfy },
	{ "HELP", ANY_CMD, true, true, true, cmd_help },
	{ "QUIT", ANY_CMD, false, true, true, cmd_quit },
	{ "EXPN", ANY_CMD, true, true, false, cmd_unimplemented },
	{ "ETRN", ANY_CMD, true, true, false, cmd_unimplemented },
	{ "TURN", ANY_CMD, true, true, false, cmd_unimplemented },
	{ "BDAT", ANY_CMD, false, true, false, cmd_unimplemented },
	{ "AUTH", ANY_CMD, false, true, false, cmd_unimplemented },
	{ "STARTTLS", ANY_CMD, false, true, true, cmd_starttls },
};

static const struct command *find_command(const char *p, size_t n)
{
	for (size_t i = 0; i < ARRAY_LEN(commands); i++) {
		size_t k = strlen(commands[i].verb);
		if (n >= k && ascii_strncasecmp(p, commands[i].verb, k) == 0 && (n == k || p[k] == ' '))
			return &commands[i];
	}
	return NULL;
}

/* pipelining_abuse: RFC 2920: commands that end a group may not be
 * followed by more input in the same read, and nothing may be pipelined
 * without an EHLO that offered PIPELINING. */
static bool pipelining_abuse(const struct smtpd *s, const struct command *c)
{
	if (s->feed_left == 0)
		return false;
	return c == NULL || c->last || !s->esmtp;
}

/* command: one complete command line (without CRLF). */
static void command(struct smtpd *s, const char *p, size_t n)
{
	const struct command *c = find_command(p, n);

	if (memchr(p, '\0', n)) {
		error(s, "500 5.5.2 Error: NUL byte in command");
		return;
	}
	if (memchr(p, '\r', n)) {
		error(s, "500 5.5.2 Error: bare <CR> in command");
		return;
	}
	if (pipelining_abuse(s, c)) {
		msg_info("improper command pipelining after %s from %s", c ? c->verb : "command",
			 s->client_text);
		reply(s, "554 5.5.0 Error: improper use of SMTP command pipelining");
		txn_reset(s);
		enter_state(s, S_CLOSING);
		return;
	}
	if (c == NULL) {
		error(s, "502 5.5.2 Error: command not recognized");
		return;
	}
	if (c->junk && ++s->junk > (unsigned)param(s, P_smtpd_junk_command_limit)) {
		reply(s, "421 4.7.0 %s Error: too many junk commands", param_str(s, P_myhostname));
		enter_state(s, S_CLOSING);
		return;
	}
	if (!c->pre_tls && tls_required(s)) {
		error(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	size_t k = strlen(c->verb);
	const char *arg = p + k;
	size_t an = n - k;
	while (an > 0 && *arg == ' ') {
		arg++;
		an--;
	}
	while (an > 0 && arg[an - 1] == ' ')
		an--;
	c->run(s, arg, an);
}

/* --- message content --------------------------------------------------- */

static void flush_chunk(struct smtpd *s)
{
	struct txn *t = &s->t;
	if (t->chunk.len == 0)
		return;
	if (!t->too_big && !t->bare_eol && !t->io_error &&
	    !qfile_add(t->qf, QREC_DATA, t->chunk.data, t->chunk.len))
		t->io_error = true;
	buf_reset(&t->chunk);
}

/* content: bytes of the message as stored (dots unstuffed, CRLF lines). */
static void content(struct smtpd *s, const char *p, size_t n)
{
	struct txn *t = &s->t;

	t->size += n;
	if (t->size > (uint64_t)param(s, P_message_size_limit))
		t->too_big = true;
	if (t->too_big || t->bare_eol || t->io_error)
		return;
	buf_append(&t->chunk, p, n);
	if (t->chunk.len >= DATA_CHUNK)
		flush_chunk(s);
}

static void committed(void *ctx, int err, const char *id);

/* after_transaction: a shutdown that waited for the transaction to end. */
static void after_transaction(struct smtpd *s)
{
	if (s->shutdown && s->state != S_CLOSING) {
		reply(s, "421 4.3.2 %s Service shutting down", param_str(s, P_myhostname));
		enter_state(s, S_CLOSING);
	}
}

/* end_of_data: the final dot: reject, or hand the message to the queue. */
static void end_of_data(struct smtpd *s)
{
	struct txn *t = &s->t;

	flush_chunk(s);
	if (t->bare_eol) {
		msg_info("%s: reject: bare <CR> or <LF> in message content from %s", t->id,
			 s->client_text);
		error(s, "550 5.5.2 Error: bare <CR> or <LF> in message content (SMTP smuggling "
			 "defense): message discarded");
	} else if (t->too_big) {
		msg_info("%s: reject: message of %llu bytes exceeds the size limit, from %s", t->id,
			 (unsigned long long)t->size, s->client_text);
		error(s, "552 5.3.4 Error: message file too big");
	} else if (t->io_error) {
		reply(s, "451 4.3.0 Error: queue file write error");
	} else {
		struct qfile *qf = t->qf;
		t->qf = NULL;
		enter_state(s, S_WAIT);
		queue_submit(qf, committed, s);
		return;
	}
	txn_reset(s);
	enter_state(s, S_READY);
	after_transaction(s);
}

/* committed: the queue's group commit made the message durable. */
static void committed(void *ctx, int err, const char *id)
{
	struct smtpd *s = ctx;

	if (err == 0) {
		smtpd_stats.messages++;
		msg_info("%s: from=<%s>, size=%llu, nrcpt=%zu (queued)", id, s->t.from,
			 (unsigned long long)s->t.size, s->t.nrcpts);
	} else {
		msg_error("%s: queue commit failed: %s", id, strerror(err));
	}
	if (s->freed) {
		/* The client left before the answer; the message stays queued. */
		txn_reset(s);
		buf_free(&s->out);
		buf_free(&s->line);
		free(s);
		return;
	}
	if (err == 0)
		reply(s, "250 2.0.0 Ok: queued as %s", id);
	else
		reply(s, "451 4.3.0 Error: queue file write error");
	txn_reset(s);
	enter_state(s, S_READY);
	after_transaction(s);
	s->io.wake(s->io.ctx);
}

/* data_bytes: the DATA state machine over p[0..n); returns bytes used
 * (less than n when the message ended). Runs of ordinary bytes are
 * copied at once. */
static size_t data_bytes(struct smtpd *s, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		char c = p[i];
		switch (s->dstate) {
		case D_TEXT: {
			size_t j = i;
			while (j < n && p[j] != '\r' && p[j] != '\n')
				j++;
			content(s, p + i, j - i);
			i = j;
			if (i == n)
				break;
			if (p[i] == '\n')
				s->t.bare_eol = true; /* bare LF: stays inside the line */
			else
				s->dstate = D_CR;
			if (p[i] == '\n')
				content(s, "\n", 1);
			i++;
			break;
		}
		case D_CR:
			if (c == '\n') {
				s->lines++;
				content(s, "\r\n", 2);
				s->dstate = D_BOL;
				i++;
			} else {
				s->t.bare_eol = true; /* bare CR */
				content(s, "\r", 1);
				s->dstate = D_TEXT;
			}
			break;
		case D_BOL:
			if (c == '.') {
				s->dstate = D_DOT;
				i++;
			} else {
				s->dstate = D_TEXT;
			}
			break;
		case D_DOT:
			if (c == '\r') {
				s->dstate = D_DOTCR;
				i++;
			} else {
				s->dstate = D_TEXT; /* a stuffed dot: dropped */
			}
			break;
		case D_DOTCR:
			if (c == '\n') {
				end_of_data(s);
				return i + 1;
			}
			s->t.bare_eol = true; /* ".<CR>" without <LF> */
			content(s, "\r", 1);
			s->dstate = D_TEXT;
			break;
		}
	}
	return i;
}

/* --- input ------------------------------------------------------------- */

/* line_bytes: assemble a command line; returns bytes used. A line ends at
 * LF; a LF without CR before it is refused. */
static size_t line_bytes(struct smtpd *s, const char *p, size_t n)
{
	const char *lf = memchr(p, '\n', n);
	size_t take = lf ? (size_t)(lf - p) + 1 : n;
	size_t limit = (size_t)param(s, P_line_length_limit);

	if (!s->line_overflow) {
		if (s->line.len + take > limit + 2)
			s->line_overflow = true;
		else
			buf_append(&s->line, p, take);
	}
	if (lf == NULL)
		return take;
	s->lines++;
	s->feed_left = n - take;
	if (s->line_overflow) {
		error(s, "500 5.5.2 Error: line too long");
	} else if (s->line.len < 2 || s->line.data[s->line.len - 2] != '\r') {
		error(s, "500 5.5.2 Error: bare <LF> received");
	} else {
		command(s, s->line.data, s->line.len - 2);
	}
	buf_reset(&s->line);
	s->line_overflow = false;
	return take;
}

size_t smtpd_feed(struct smtpd *s, const char *p, size_t n)
{
	size_t used = 0;

	while (used < n && s->state != S_WAIT && s->state != S_CLOSING && s->state != S_TLS) {
		if (s->state == S_DATA)
			used += data_bytes(s, p + used, n - used);
		else
			used += line_bytes(s, p + used, n - used);
	}
	s->feed_left = 0;
	return used;
}

/* --- life cycle -------------------------------------------------------- */

struct smtpd *smtpd_new(const struct smtpd_config *cfg, const struct smtpd_client *client,
			struct smtpd_io io)
{
	struct smtpd *s = xcalloc(1, sizeof *s);
	char addr[IPADDR_STRLEN];

	s->cfg = cfg;
	s->client = *client;
	s->io = io;
	snprintf(s->client_text, sizeof s->client_text, "[%s]:%u",
		 ipaddr_format(&client->addr, addr), client->port);
	smtpd_stats.sessions++;
	reply(s, "220 %s", param_str(s, P_smtpd_banner));
	return s;
}

enum smtpd_status smtpd_status(const struct smtpd *s)
{
	switch (s->state) {
	case S_CLOSING:
		return SMTPD_CLOSING;
	case S_WAIT:
		return SMTPD_WAITING;
	case S_TLS:
		return SMTPD_STARTTLS;
	default:
		return SMTPD_OPEN;
	}
}

struct buf *smtpd_output(struct smtpd *s) { return &s->out; }

uint64_t smtpd_progress(const struct smtpd *s) { return s->lines; }

uint64_t smtpd_slow(const struct smtpd *s)
{
	if (s->errors <= (unsigned)param(s, P_smtpd_soft_error_limit))
		return 0;
	return (uint64_t)param(s, P_smtpd_error_sleep_time) * 1000000ULL;
}

void smtpd_eof(struct smtpd *s)
{
	if (s->state == S_DATA)
		msg_info("%s: lost connection after DATA from %s", s->t.id, s->client_text);
	if (s->state != S_WAIT) {
		txn_reset(s);
		enter_state(s, S_CLOSING);
	}
}

void smtpd_timeout(struct smtpd *s)
{
	if (s->state == S_WAIT || s->state == S_CLOSING)
		return;
	if (s->state == S_TLS) { /* no plaintext reply in the middle of a handshake */
		msg_info("timeout after STARTTLS from %s", s->client_text);
		enter_state(s, S_CLOSING);
		return;
	}
	msg_info("timeout after %s from %s", state_names[s->state], s->client_text);
	reply(s, "421 4.4.2 %s Error: timeout exceeded", param_str(s, P_myhostname));
	txn_reset(s);
	enter_state(s, S_CLOSING);
}

void smtpd_shutdown(struct smtpd *s)
{
	if (s->state == S_DATA || s->state == S_WAIT || s->state == S_TLS) {
		s->shutdown = true;
		return;
	}
	if (s->state == S_CLOSING)
		return;
	reply(s, "421 4.3.2 %s Service shutting down", param_str(s, P_myhostname));
	txn_reset(s);
	enter_state(s, S_CLOSING);
}

void smtpd_free(struct smtpd *s)
{
	if (s == NULL)
		return;
	if (s->state == S_WAIT) {
		s->freed = true; /* committed() frees it */
		return;
	}
	txn_reset(s);
	buf_free(&s->out);
	buf_free(&s->line);
	free(s);
}

void smtpd_tls_started(struct smtpd *s, const char *desc)
{
	if (s->state != S_TLS)
		msg_panic("smtpd_tls_started in state %s", state_names[s->state]);
	txn_reset(s);
	s->helo[0] = 0;
	s->esmtp = false;
	s->line_overflow = false;
	buf_reset(&s->line);
	s->tls = true;
	snprintf(s->tls_desc, sizeof s->tls_desc, "%s", desc);
	enter_state(s, S_START);
	if (s->shutdown) {
		reply(s, "421 4.3.2 %s Service shutting down", param_str(s, P_myhostname));
		enter_state(s, S_CLOSING);
	}
}
