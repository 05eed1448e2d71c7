/* queue.h: the instance's durable queue (DESIGN §5).
 *
 * A queue file holds one or more messages back to back. A message is a
 * sequence of records: one type byte, a 4-byte big-endian payload length,
 * the payload. Each message is VERSION, ID, ..., END: QREC_VERSION first,
 * then QREC_ID (the message's queue id), the envelope and content, and
 * QREC_END last; after an END comes either the end of the file or the
 * next message's VERSION. A file without a valid END record on every
 * message is never delivered, and a file with any invalid message is
 * refused whole. The ID record may be missing only from the first
 * message of a file (that message's id is then the file name: files
 * written by hand or by older versions); every later message needs one.
 * Readers take ids from the ID records, never from the file name.
 *
 * Messages that stay below QF_SPILL bytes of records are kept in memory
 * until queue_flush(), which writes all of them into ONE file, named
 * after the first of them (tmp/ID, O_EXCL; a fresh id if taken): a group
 * commit of N small messages allocates one inode, not N. A message that
 * grows past QF_SPILL spills into its own file tmp/ID at once and
 * streams from there. Files are made durable, then renamed into
 * QDIR/incoming/ and the directory made durable: only then does each
 * submitter's callback run, and only then may the SMTP server say "250
 * queued as ID".
 *
 * Group commit: queue_submit() only queues a finished message;
 * queue_flush() (called by the event loop after its ready I/O, once 8
 * messages wait, every session waits, or 1 ms has passed) writes the
 * batch file, makes it and every spilled file
 * durable, renames them all, flushes the directory once, then runs every
 * callback. Many messages, one new inode, two flushes. No threads. */
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
/* Records of one message kept in memory until the flush; past this, the
 * message gets a file of its own. */
#define QF_SPILL (256u << 10)

enum qrec_type {
	QREC_VERSION = 'V',   /* decimal QFILE_VERSION */
	QREC_ID = 'I',        /* the message's queue id, QID_LEN hex digits; right
			       * after VERSION; written by the queue itself */
	QREC_TIME = 'T',      /* arrival, decimal microseconds since the epoch */
	QREC_CLIENT = 'C',    /* "addr helo-name" as received (printable) */
	QREC_SENDER = 'S',    /* envelope sender, "" for <> */
	QREC_RCPT = 'R',      /* one envelope recipient */
	QREC_ATTR = 'A',      /* "name=value": SIZE, BODY, ... */
	QREC_DATA = 'D',      /* a chunk of message content, CRLF lines, unstuffed */
	QREC_RETRY = 'Y',     /* delivery state, written by the queue manager when it
			       * defers: "TRIES NEXT_US WARNED" (decimal; NEXT_US the
			       * next attempt, microseconds since the epoch; WARNED 0
			       * or 1: a delay warning was sent) */
	QREC_REASON = 'W',    /* why the last attempt was deferred (printable) */
	QREC_END = 'E',       /* empty payload: the message is complete */
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

/* queue_create: a new message with a fresh, unique, time-sortable id
 * (written into id, NUL-terminated). Nothing is created on disk until the
 * message spills or is flushed. NULL on error. */
struct qfile *queue_create(struct queue *q, char id[QID_LEN + 1]);
/* qfile_add: append one record (buffered). QREC_VERSION must come first;
 * the queue adds the ID record after it (callers never add QREC_ID or
 * QREC_END). false on I/O error or a record the reader would refuse. */
bool qfile_add(struct qfile *f, enum qrec_type type, const void *data, size_t len);
/* queue_submit: finish f with END and hand it to the group commit; done
 * runs from queue_flush with err 0 once durable, or an errno value. f is
 * owned by the queue from here on. */
void queue_submit(struct qfile *f, qdone_fn *done, void *ctx);
/* queue_abort: discard f (unlinked, never visible). */
void queue_abort(struct qfile *f);
/* queue_flush: commit every submitted message; returns how many were
 * handled (failures included). A failure of the shared file fails every
 * message in it. */
size_t queue_flush(struct queue *q);
size_t queue_pending(const struct queue *q); /* submitted, not yet flushed */
size_t queue_size(const struct queue *q);    /* messages in incoming/ */

/* ---- the delivery side's view ---------------------------------------- */

/* Where a queue file is: incoming/ holds new mail (and mail whose
 * delivery a crash cut short), deferred/ mail that waits for a retry. */
enum qdir { QDIR_INCOMING, QDIR_DEFERRED };

/* queue_set_notify: fn runs for every file that lands in incoming/, from
 * queue_flush, after the submitters' callbacks. */
typedef void qnew_fn(void *ctx, const char *name);
void queue_set_notify(struct queue *q, qnew_fn *fn, void *ctx);
const char *queue_dirname(const struct queue *q); /* the queue directory */
/* queue_list: the file names in dir, sorted (oldest first); NULL (and
 * logged) on failure. Free with queue_list_free. */
char **queue_list(struct queue *q, enum qdir dir, size_t *n);
void queue_list_free(char **v, size_t n);

struct qmsg;
/* queue_load: open dir/name and read every message of it (as
 * qmsg_read_all); the file stays open in *fd (for qdata_read). A file
 * that does not validate is moved to corrupt/ (logged); false then, and
 * also on I/O errors (logged, the file stays). */
bool queue_load(struct queue *q, enum qdir dir, const char *name, int *fd, struct qmsg **msgs,
		size_t *n);
/* queue_remove: dir/name is done with (it held nmsgs messages). Not
 * synced: a crash may bring it back, and its mail is delivered again
 * (at least once, never lost). */
bool queue_remove(struct queue *q, enum qdir dir, const char *name, size_t nmsgs);

/* One message of a deferred file: the kept recipients (keep[i] for each
 * of m->rcpts; NULL keeps all), with the retry state. */
struct qdefer {
	const struct qmsg *m;
	const bool *keep;
	unsigned tries;
	uint64_t next_us;
	bool warned;
	const char *reason;
};
/* queue_defer: write v[0..n) (content copied from src_fd) into
 * deferred/NAME, NAME the first message's id, durable (file and
 * directory synced, replacing a file of that name), then remove
 * olddir/oldname (which held old_nmsgs messages) unless it is the file
 * just written. n == 0 only removes. The name written in newname. false
 * (logged) on failure: the old file is then left as it was. */
bool queue_defer(struct queue *q, int src_fd, const struct qdefer *v, size_t n, enum qdir olddir,
		 const char *oldname, size_t old_nmsgs, char newname[QID_LEN + 1]);

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
	long data_offset;  /* file offset of the message's first DATA record, -1 if none */
	/* From QREC_RETRY/QREC_REASON, zero/NULL for a message never deferred. */
	unsigned tries;
	uint64_t next_us;
	bool warned;
	char *reason;
};

/* Reading a message's content back (delivery, bounces): the DATA records
 * of one message, from its data_offset on, with pread() (the file offset
 * is not used, so several readers may share fd). */
struct qdata {
	int fd;
	uint64_t off;  /* next record header, or inside a record's payload */
	uint32_t left; /* payload bytes left in the current DATA record */
	bool end;      /* a record other than DATA was reached */
};
void qdata_init(struct qdata *d, int fd, long data_offset);
/* qdata_read: up to n bytes of content; 0 at the end of the message's
 * content; -1 with errno set (EIO: a malformed or truncated record). */
long qdata_read(struct qdata *d, void *buf, size_t n);

/* qmsg_read: read and validate path (every message in it); the FIRST
 * message in m. false with a phrase in err for a truncated, corrupt or
 * oversized file (missing END, bad type, length past the end, records
 * out of order; "message N: ..." for a fault in a later message). Never
 * trusts a length. */
bool qmsg_read(const char *path, struct qmsg *m, char *err, size_t errlen);
void qmsg_free(struct qmsg *m);
/* qmsg_read_all: every message of path, in file order (*msgs allocated,
 * *n of them; NULL and 0 on failure, with err as for qmsg_read). */
bool qmsg_read_all(const char *path, struct qmsg **msgs, size_t *n, char *err, size_t errlen);
void qmsg_free_all(struct qmsg *msgs, size_t n);

#endif
