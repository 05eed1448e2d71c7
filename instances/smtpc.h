/* smtpc.h: one outbound SMTP or LMTP connection (the delivery side's
 * client). Non-blocking, on the instance's sd-event loop: connect (from a
 * given source address, never another), greeting, EHLO (HELO fallback;
 * LHLO for LMTP), then transactions one after another on the same
 * connection until the caller quits. STARTTLS (RFC 3207) as the
 * security level says, with EHLO again inside TLS. PIPELINING is used
 * when offered (RFC 2920); content is read from the queue file, sent
 * CRLF-only and dot-stuffed, lines longer than line_length_limit folded.
 * Every reply is hostile input: short, overlong, endless multi-line and
 * malformed replies are handled, and reply text is made printable and
 * bounded before the caller sees it. */
#ifndef VHOSTMTA_SMTPC_H
#define VHOSTMTA_SMTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <systemd/sd-event.h>

#include "tls.h"

#define SMTPC_REPLY_MAX 512  /* "550 5.1.1 text" kept of a reply (printable) */
#define SMTPC_TEXT_MAX 768   /* a whole explanation, see smtpc_result.text */

struct smtpc_cfg {
	const char *helo_name;    /* smtp_helo_name */
	bool lmtp;                /* LHLO and one reply per recipient after DATA */
	uint64_t connect_us, helo_us, mail_us, rcpt_us, data_init_us,
		 data_xfer_us, data_done_us, quit_us; /* smtp_*_timeout */
	size_t line_length_limit; /* smtp_line_length_limit; 0: never fold */
	/* STARTTLS (SMTP only; LMTP never uses TLS). none: never; may:
	 * when offered; encrypt: required; verify: required, and the
	 * certificate must be trusted and name the host. */
	enum tls_level tls_level;  /* smtp_tls_security_level */
	uint64_t starttls_us;      /* smtp_starttls_timeout: the handshake */
	/* The client context, made when first needed; NULL: our TLS engine
	 * is unavailable (the connection then fails rather than go on in
	 * plaintext after the server offered TLS). */
	struct tls_ctx *(*tls_ctx)(void *arg);
	void *tls_arg;
};

/* The outcome for one recipient, or why a connection failed. */
struct smtpc_result {
	int code;       /* the server's reply code; 0: no reply (connection
			 * failure, timeout, protocol error): deferred */
	char dsn[12];   /* enhanced status: from the reply when it has one,
			 * else 2.0.0 / 4.0.0 / 5.0.0 from the code, 4.4.x for
			 * connection problems */
	char reply[SMTPC_REPLY_MAX]; /* "550 5.1.1 <a@b>: no such user", one
			 * line (multi-line replies joined with spaces), safe;
			 * "" when there was no reply */
	/* In Postfix's words, for log lines and bounces, e.g. "host
	 * mx.dest.test[192.0.2.1] said: 550 5.1.1 ... (in reply to RCPT TO
	 * command)", "connect to mx.dest.test[192.0.2.1]:25: Connection
	 * refused", "conversation with mx.dest.test[192.0.2.1] timed out
	 * while sending end of data -- message may be sent more than once" */
	char text[SMTPC_TEXT_MAX];
};

struct smtpc_rcpt {
	const char *addr;        /* set by the caller */
	struct smtpc_result res; /* set by smtpc before done() */
};

/* One transaction, owned by the caller until done() has returned. */
struct smtpc_txn {
	const char *id;     /* queue id, for log lines */
	const char *sender; /* "" for the null sender */
	bool body_8bit;     /* BODY=8BITMIME (when the server offers 8BITMIME) */
	uint64_t size;      /* content bytes, for SIZE= (when offered) */
	int data_fd;        /* the queue file, and the message's data_offset */
	long data_offset;   /* (queue.h, qdata_read) */
	size_t nrcpts;
	struct smtpc_rcpt *rcpts;
};

struct smtpc;

struct smtpc_ops {
	/* Greeted and EHLO/LHLO accepted: the caller sends a transaction
	 * with smtpc_send() or ends with smtpc_quit(). */
	void (*ready)(void *ctx, struct smtpc *c);
	/* The transaction is over: every rcpts[i].res is set (2xx delivered,
	 * 4xx or code 0 deferred, 5xx failed). If the connection is still
	 * usable, the caller may smtpc_send() again or smtpc_quit(), and
	 * must do one of them (or smtpc_abort) before returning or later; if
	 * it is not, closed() follows as soon as done() returns. */
	void (*done)(void *ctx, struct smtpc *c, struct smtpc_txn *t);
	/* The connection failed or ended outside the caller's control:
	 * before ready() (connect, bind, greeting, EHLO), while idle, or
	 * after a transaction (421, dropped). why->text says what happened.
	 * c is freed when closed() returns. */
	void (*closed)(void *ctx, struct smtpc *c, const struct smtpc_result *why);
};

/* smtpc_connect: start a connection to addr (AF_INET, AF_INET6 or
 * AF_UNIX), from bind when it is not NULL (IPv4/IPv6 only: a failed
 * bind fails the connection with the reason, it never falls back).
 * host: the name to log ("mx.dest.test", or the socket path's host
 * "localhost"). Failures are reported through closed(), never before
 * smtpc_connect returns. */
struct smtpc *smtpc_connect(sd_event *event, const struct smtpc_cfg *cfg,
			    const struct smtpc_ops *ops, void *ctx, const char *host,
			    const struct sockaddr *addr, socklen_t addrlen,
			    const struct sockaddr *bind, socklen_t bindlen);
/* smtpc_send: only when ready (after ready() or a done() on a usable
 * connection). t must stay valid until done(). */
void smtpc_send(struct smtpc *c, struct smtpc_txn *t);
/* smtpc_quit: QUIT politely (waiting quit_us at most) and free c; no
 * more callbacks. */
void smtpc_quit(struct smtpc *c);
/* smtpc_abort: close now and free c; no more callbacks. */
void smtpc_abort(struct smtpc *c);

/* "host[addr]:port" (or "host[/path]") for relay= in log lines. */
const char *smtpc_peer(const struct smtpc *c);
/* smtpc_usable: in done(), whether the connection can carry another
 * transaction; when false, closed() follows as soon as done() returns
 * (a transaction sent anyway is ended at once with the connection's
 * failure, every recipient deferred). */
bool smtpc_usable(const struct smtpc *c);
/* smtpc_tls_summary: "none" for a plaintext connection, else
 * "VERSION:CIPHER:VERDICT", e.g. "TLSv1.3:TLS_AES_256_GCM_SHA384:untrusted". */
const char *smtpc_tls_summary(const struct smtpc *c);
/* smtpc_count: connections not yet freed, those still saying QUIT
 * included (for an orderly shutdown, and for tests). */
size_t smtpc_count(void);
/* The server's extensions, valid after ready(). */
bool smtpc_has_pipelining(const struct smtpc *c);
uint64_t smtpc_size_limit(const struct smtpc *c); /* 0: none announced */

/* ---- reply parsing, separate so tests and fuzzers can reach it ------- */

/* One reply, assembled line by line: "250-..." continues, "250 ..." (or a
 * bare "250") ends it. Every line of a reply must have the same code;
 * a line that is not 3 digits then ' ' or '-' or end, a changing code,
 * more than SMTPC_REPLY_LINES lines or a line longer than
 * SMTPC_LINE_MAX bytes is a protocol error. */
#define SMTPC_REPLY_LINES 100
#define SMTPC_LINE_MAX 4096

struct smtpc_reply {
	int code;         /* 0 until the first line */
	size_t nlines;
	char text[SMTPC_REPLY_MAX]; /* code, enhanced status and text,
				     * lines joined by " ", printable */
	char dsn[12];     /* enhanced status code of the first line, or "" */
	char **ext;       /* EHLO only: the keyword lines, upper-cased */
	size_t next;
	bool end;         /* the last line has been seen */
};

enum smtpc_rp { SMTPC_RP_MORE, SMTPC_RP_DONE, SMTPC_RP_BAD };

void smtpc_reply_init(struct smtpc_reply *r);
void smtpc_reply_free(struct smtpc_reply *r);
/* smtpc_reply_line: feed one line (without its CRLF; may hold any bytes,
 * NUL included). */
enum smtpc_rp smtpc_reply_line(struct smtpc_reply *r, const char *line, size_t len);

#endif
