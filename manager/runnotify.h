/* runnotify.h: the supervisor's side of sd_notify(3). One datagram
 * socket, named by NOTIFY_SOCKET in every instance's environment, that
 * receives READY=1, STATUS=..., STOPPING=1 as systemd's would; each
 * datagram is attributed to the process that sent it through its
 * SCM_CREDENTIALS, never through anything in its text. */
#ifndef VHOSTMTA_RUNNOTIFY_H
#define VHOSTMTA_RUNNOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#define NOTIFY_MSG_MAX 4096 /* a longer datagram is dropped */

/* One datagram of process pid: NUL-free, at most NOTIFY_MSG_MAX bytes. */
typedef void notify_fn(void *ctx, pid_t pid, const char *msg, size_t len);

struct notify;

/* notify_open: an abstract AF_UNIX datagram socket (no file to leave
 * behind or to get permissions wrong), read on e. */
struct notify *notify_open(sd_event *e, notify_fn *fn, void *ctx, char *err, size_t errlen);
/* notify_address: the NOTIFY_SOCKET value, "@" and the abstract name. */
const char *notify_address(const struct notify *n);
/* notify_drain: hand every datagram already queued to fn now (before a
 * child's exit is handled, so its last messages count). */
void notify_drain(struct notify *n);
void notify_close(struct notify *n);

/* notify_field: the value of NAME= in one message (assignments separated
 * by newlines), or NULL; *len its length. */
const char *notify_field(const char *msg, size_t len, const char *name, size_t *vlen);

#endif
