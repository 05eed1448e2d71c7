/* smtpd.h: the ESMTP server session (RFC 5321, 2920, 1870, 6152, 2034, 3207), as
 * a protocol engine without I/O: the connection layer feeds it the bytes
 * it reads and writes out what the session puts in its output buffer. So
 * the session can be tested with dialogues, fuzzed, and put behind TLS
 * (a layer between the socket and this engine) unchanged: STARTTLS only
 * tells the connection layer when to start the handshake.
 *
 * Flow: smtpd_new() queues the greeting; smtpd_feed() consumes input and
 * appends replies. After the final dot of a message the session submits
 * it to the queue and stops consuming input until the queue's group
 * commit calls back: then "250 2.0.0 Ok: queued as ID" is added and
 * io.wake() tells the connection layer to write and to feed the rest. */
#ifndef VHOSTMTA_SMTPD_H
#define VHOSTMTA_SMTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "buf.h"

struct cf;
struct policy;
struct queue;

/* What the session needs from the instance (not owned). */
struct smtpd_config {
	const struct cf *cf;         /* expanded parameters */
	const struct policy *policy;
	struct queue *queue;
	bool tls;                    /* STARTTLS can be offered (a certificate is loaded) */
};

struct smtpd_client {
	struct ipaddr addr;
	uint16_t port;
	struct ipaddr local; /* the address the client connected to */
	uint16_t local_port;
};

struct smtpd_io {
	void (*wake)(void *ctx); /* new output, and input may be fed again */
	void *ctx;
};

enum smtpd_status {
	SMTPD_OPEN,    /* go on reading */
	SMTPD_WAITING, /* waiting for the queue: do not feed until wake() */
	SMTPD_CLOSING, /* write out the output, then close */
	SMTPD_STARTTLS,/* write out the output (the 220), drop any input
			* already read, then the TLS handshake: do not feed
			* until smtpd_tls_started() */
};

struct smtpd;

struct smtpd *smtpd_new(const struct smtpd_config *cfg, const struct smtpd_client *client,
			struct smtpd_io io);
/* smtpd_feed: consume up to n bytes; returns how many were consumed
 * (fewer than n only when the status becomes WAITING or CLOSING). */
size_t smtpd_feed(struct smtpd *s, const char *p, size_t n);
enum smtpd_status smtpd_status(const struct smtpd *s);
/* smtpd_progress: how many whole lines (commands and content) the
 * session has consumed: a request deadline restarts when it grows. */
uint64_t smtpd_progress(const struct smtpd *s);
/* smtpd_slow: the client has made more than smtpd_soft_error_limit
 * errors: every reply is to be written smtpd_error_sleep_time late (0:
 * not slowed). */
uint64_t smtpd_slow(const struct smtpd *s);
/* The replies to write; the connection layer removes what it wrote. */
struct buf *smtpd_output(struct smtpd *s);
/* The peer closed or the connection failed: abort any transaction. */
void smtpd_eof(struct smtpd *s);
/* smtpd_timeout: smtpd_timeout expired: 421, then CLOSING. */
void smtpd_timeout(struct smtpd *s);
/* smtpd_shutdown: the instance is stopping: between transactions 421
 * now; inside one, 421 once the current message is answered. */
void smtpd_shutdown(struct smtpd *s);
void smtpd_free(struct smtpd *s);
/* smtpd_tls_started: the handshake after STARTTLS succeeded: the session
 * starts over inside TLS (RFC 3207: everything learnt before is
 * forgotten). desc: "TLSv1.3 with cipher ... (256/256 bits)", for the
 * Received header. */
void smtpd_tls_started(struct smtpd *s, const char *desc);

/* Counters for STATUS= and the log. */
struct smtpd_stats {
	uint64_t sessions, messages, rejected;
};
extern struct smtpd_stats smtpd_stats;

#endif
