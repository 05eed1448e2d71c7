/* qmgr.h: the queue manager inside the instance: picks up new mail the
 * moment it is durable, routes each recipient to its destination (the
 * transport table for hosted domains, else relayhost, else the recipient
 * domain's MX), delivers over pooled SMTP/LMTP connections from the
 * instance's own address, and keeps what is left: deferred files retried
 * with exponential backoff until they expire, bounces for what failed.
 * A crash at any instant loses nothing: files leave the queue only after
 * every recipient in them is delivered, bounced (the bounce durable
 * first) or written to a deferred file. */
#ifndef VHOSTMTA_QMGR_H
#define VHOSTMTA_QMGR_H

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-event.h>

struct queue;
struct sconf;
struct qmgr;

/* qmgr_new: scan the queue (incoming/ now, deferred/ when due) and start
 * delivering. NULL (logged) when the resolver cannot start. */
struct qmgr *qmgr_new(sd_event *event, struct queue *q, struct sconf *conf);
/* qmgr_set_conf: a reload: new deliveries use conf (a reference is
 * taken); those under way finish with the old one. */
bool qmgr_set_conf(struct qmgr *m, struct sconf *conf);
/* qmgr_stop: no new deliveries; queued work is put back on disk; those
 * under way finish (qmgr_busy() tells when). */
void qmgr_stop(struct qmgr *m);
/* qmgr_abort: end every delivery now (their mail stays queued). */
void qmgr_abort(struct qmgr *m);
size_t qmgr_busy(const struct qmgr *m); /* connections in a transaction */
void qmgr_free(struct qmgr *m);
/* For the control socket. */
size_t qmgr_flush(struct qmgr *m);
bool qmgr_delete(struct qmgr *m, const char *id, char *err, size_t errlen);
/* qmgr_hook: fn runs when qmgr_busy() drops to 0, and when a file's
 * messages leave the active queue (queue_size() may have changed). */
void qmgr_hook(struct qmgr *m, void (*fn)(void *ctx), void *ctx);

#endif
