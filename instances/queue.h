/* queue.h: the instance's durable queue (DESIGN §5).
 *
 * A queue file is a sequence of records: one type byte, a 4-byte
 * big-endian payload length, the payload. The first record is
 * QREC_VERSION, the last QREC_END; a file without a valid END record is
 * never delivered. Files are written in QDIR/tmp/ (O_EXCL), made durable,
 * then renamed into QDIR/incoming/ and the directory made durable: only
 * then does the submitter's callback run, and only then may the SMTP
 * server say "250 queued as ID".
 *
 * Group commit: queue_submit() only queues a finished file; queue_flush()
 * (called by the event loop once per iteration, after all ready I/O)
 * makes every submitted file durable with one flush, renames them all,
 * flushes the directory once, then runs every callback. Many messages,
 * two flushes. No threads. */
#ifndef VHOSTMTA_QUEUE_H
#define VHOSTMTA_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QID_LEN 16 /* hex: 13 digits of microseconds (to 2112), 3 of sequence */
#define QFILE_VERSION 1
/* Bounds the reader enforces (hostile or damaged files). */
#define QREC_MAX (64u << 20)     /* one record's payload */
#define QFILE_MAX_RCPTS 1000000

enum qrec_type {
	QREC_VERSION = 'V',   /* decimal QFILE_VERSION */
	QREC_TIME = 'T',      /* arrival, decimal microseconds since the epoch */
	QREC_CLIENT = 'C',    /* "addr helo-name" as received (printable) */
	QREC_SENDER = 'S',    /* envelope sender, "" for <> */
	QREC_RCPT = 'R',      /* one envelope recipient */
	QREC_ATTR = 'A',      /* "name=value": SIZE, BODY, ... */
	QREC_DATA = 'D',      /* a chunk of message content, CRLF lines, unstuffed */
	QREC_END = 'E',       /* empty payload: the file is complete */
};

struct queue;
struct qfile;

typedef void qdone_fn(void *ctx, int err, const char *id);

/* queue_open: use (creating if needed) dir with tmp/, incoming/ and
 * corrupt/. Leftovers of a crash are handled here, each with a log line:
 * files in tmp/ are removed (never acknowledged), files in incoming/
 * without a valid END are moved to corrupt/. Returns NULL (logged) on
 * failure. */
struct queue *queue_open(const char *dir);
/* queue_close: pending files get ECANCELED; every file created must have
 * been submitted or aborted before. */
void queue_close(struct queue *q);

/* queue_create: a new queue file in tmp/ with a fresh, unique,
 * time-sortable id (written into id, NUL-terminated). NULL on error. */
struct qfile *queue_create(struct queue *q, char id[QID_LEN + 1]);
/* qfile_add: append one record (buffered). QREC_VERSION must come first.
 * false on I/O error or a record the reader would refuse. */
bool qfile_add(struct qfile *f, enum qrec_type type, const void *data, size_t len);
/* queue_submit: finish f with END and hand it to the group commit; done
 * runs from queue_flush with err 0 once durable, or an errno value. f is
 * owned by the queue from here on. */
void queue_submit(struct qfile *f, qdone_fn *done, void *ctx);
/* queue_abort: discard f (unlinked, never visible). */
void queue_abort(struct qfile *f);
/* queue_flush: commit every submitted file; returns how many were
 * handled (failures included). */
size_t queue_flush(struct queue *q);
size_t queue_pending(const struct queue *q); /* submitted, not yet flushed */
size_t queue_size(const struct queue *q);    /* files in incoming/ */

/* A message read back (delivery side, tests, `vhostmta queue`). */
struct qmsg {
	char id[QID_LEN + 1];
	uint64_t time_us;
	char *client, *sender;
	char **rcpts;
	size_t nrcpts;
	char **attrs;
	size_t nattrs;
	uint64_t data_len; /* total bytes of QREC_DATA records */
	long data_offset;  /* file offset of the first DATA record, -1 if none */
};

/* qmsg_read: read and validate path; false with a phrase in err for a
 * truncated, corrupt or oversized file (missing END, bad type, length
 * past the end, records out of order). Never trusts a length. */
bool qmsg_read(const char *path, struct qmsg *m, char *err, size_t errlen);
void qmsg_free(struct qmsg *m);

#endif
