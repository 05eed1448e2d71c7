/* bounce.h: delivery status notifications (RFC 3464, RFC 3462/6522
 * multipart/report) from this instance to a message's envelope sender:
 * "failed" when recipients bounced or expired, "delayed" for a delay
 * warning. A DSN is a new queue message with the null sender, so it is
 * never answered by another DSN; a message whose sender is null gets
 * none (the caller logs and drops the failure). Everything taken from the
 * original message or the remote server is hostile text: it is made
 * printable, bounded and folded before it goes into the DSN. */
#ifndef VHOSTMTA_BOUNCE_H
#define VHOSTMTA_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"

struct cf;

enum bounce_kind { BOUNCE_FAILED, BOUNCE_DELAYED };

struct bounce_rcpt {
	const char *addr;       /* the recipient as queued */
	const char *dsn;        /* "5.1.1", "4.4.1" */
	const char *remote_mta; /* host name of the server that answered, or NULL */
	const char *diag;       /* the server's reply ("550 5.1.1 ...") for
				 * Diagnostic-Code: smtp; ..., or NULL */
	const char *text;       /* the explanation as logged (human part) */
};

struct bounce_msg {
	const struct qmsg *m;  /* the original message (envelope, arrival) */
	int data_fd;           /* its queue file (content via qdata_read), or
				* -1: no content part */
	enum bounce_kind kind;
	const struct bounce_rcpt *rcpts;
	size_t nrcpts;
};

/* bounce_write: the DSN for b as a new queue message addressed to
 * b->m->sender, from MAILER-DAEMON@myorigin, created in q and submitted
 * (done/ctx as for queue_submit); its id in id. Content: a text/plain
 * explanation, the message/delivery-status part (Reporting-MTA: dns;
 * myhostname, Arrival-Date, per recipient Final-Recipient, Action,
 * Status, Remote-MTA, Diagnostic-Code), then the original's headers as
 * text/rfc822-headers, at most bounce_size_limit bytes of them. false
 * (logged) when the sender is null or the queue refused the message. */
bool bounce_write(struct queue *q, const struct cf *cf, const struct bounce_msg *b,
		  qdone_fn *done, void *ctx, char id[QID_LEN + 1]);

#endif
