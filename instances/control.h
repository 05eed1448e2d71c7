/* control.h: the queue control socket, QUEUE_DIRECTORY/control (a Unix
 * stream socket, mode 0600: only the instance's own user). One request
 * line per connection, one reply, then close:
 *   "flush\n"     -> "ok N\n"   (N messages made due now)
 *   "delete ID\n" -> "ok\n" | "error TEXT\n"
 * The instance's `--flush` and `--delete ID` (and so `vhostmta queue`)
 * are the clients. Requests are bounded (CONTROL_LINE_MAX) and checked;
 * the socket never blocks the event loop. */
#ifndef VHOSTMTA_CONTROL_H
#define VHOSTMTA_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-event.h>

#include "buf.h"

#define CONTROL_NAME "control"
#define CONTROL_LINE_MAX 256

struct control_ops {
	/* flush: make every deferred message due now; returns how many. */
	size_t (*flush)(void *ctx);
	/* delete: remove message id (no bounce); false with a phrase in err. */
	bool (*delete)(void *ctx, const char *id, char *err, size_t errlen);
};

struct control;

/* control_open: bind QDIR/control (a stale socket is replaced). NULL
 * (logged) on failure: the instance then runs without it. */
struct control *control_open(sd_event *event, const char *qdir, const struct control_ops *ops,
			     void *ctx);
void control_close(struct control *c); /* unlinks the socket */

/* control_request: the client side: send request (no newline) to the
 * instance whose queue is qdir; the reply line (without newline) in
 * reply. -1 with errno when no instance listens (ENOENT, ECONNREFUSED)
 * or on I/O errors; 0 otherwise. Times out after a few seconds. */
int control_request(const char *qdir, const char *request, struct buf *reply);

/* The instance's `--flush` and `--delete ID` for the queue qdir: the
 * outcome on stdout ("flush: N ...", "ID: deleted") or, as an error line,
 * on stderr; returns the exit status (0 done, 1 failed, 2 a malformed
 * ID). A flush with no instance running is done (exit 0) when the queue
 * is empty; a delete needs the running instance. */
int control_cli_flush(const char *qdir);
int control_cli_delete(const char *qdir, const char *id);

#endif
