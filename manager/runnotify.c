/* runnotify.c: the notify socket of `vhostmta run` (see runnotify.h).
 * Any local process can send to it, as to systemd's: a datagram without
 * credentials, with descriptors, or longer than NOTIFY_MSG_MAX is dropped
 * (descriptors closed), and only the sender's kernel-checked pid says
 * which instance, if any, it is from. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "runnotify.h"
#include "util.h"

#define NOTIFY_BURST 256 /* datagrams per wake-up, then other sources get a turn */
#define NOTIFY_RCVBUF (1 << 20)

struct notify {
	int fd;
	sd_event_source *src;
	notify_fn *fn;
	void *ctx;
	char address[sizeof(((struct sockaddr_un *)0)->sun_path) + 2];
};

static bool fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* close_rights: descriptors nobody should send us. */
static void close_rights(struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)(void *)CMSG_DATA(c);
		for (size_t i = 0; i < n; i++)
			close(fds[i]);
	}
}

static pid_t sender(struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
		    c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
			struct ucred uc;
			memcpy(&uc, CMSG_DATA(c), sizeof uc);
			return uc.pid;
		}
	return 0;
}

/* receive_one: false when nothing more is queued. */
static bool receive_one(struct notify *n)
{
	char msg[NOTIFY_MSG_MAX + 1];
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
	} ctl;
	struct iovec iov = { msg, sizeof msg };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof ctl.buf };
	ssize_t len = recvmsg(n->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);

	if (len < 0)
		return errno == EINTR;
	close_rights(&mh);
	pid_t pid = sender(&mh);
	if (pid <= 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || len > NOTIFY_MSG_MAX ||
	    memchr(msg, 0, (size_t)len)) {
		msg_debug("notify: datagram dropped (pid %ld, %zd bytes)", (long)pid, len);
		return true;
	}
	msg[len] = 0;
	n->fn(n->ctx, pid, msg, (size_t)len);
	return true;
}

static int on_readable(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct notify *n = userdata;
	(void)s; (void)fd; (void)revents;

	for (int i = 0; i < NOTIFY_BURST && receive_one(n); i++)
		;
	return 0;
}

void notify_drain(struct notify *n)
{
	while (receive_one(n))
		;
}

/* bind_abstract: let the kernel choose a free abstract name (autobind). */
static bool bind_abstract(struct notify *n, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len = sizeof sun;

	if (bind(n->fd, (struct sockaddr *)&sun, sizeof(sa_family_t)) < 0 ||
	    getsockname(n->fd, (struct sockaddr *)&sun, &len) < 0)
		return fail(err, errlen, "notify socket: %s", strerror(errno));
	size_t namelen = len - offsetof(struct sockaddr_un, sun_path);
	if (namelen < 2 || sun.sun_path[0] != 0)
		return fail(err, errlen, "notify socket: no abstract name");
	/* Autobind names are five hexadecimal digits: printable. */
	n->address[0] = '@';
	memcpy(n->address + 1, sun.sun_path + 1, namelen - 1);
	n->address[namelen] = 0;
	return true;
}

struct notify *notify_open(sd_event *e, notify_fn *fn, void *ctx, char *err, size_t errlen)
{
	struct notify *n = xcalloc(1, sizeof *n);
	int one = 1, size = NOTIFY_RCVBUF, r;

	n->fn = fn;
	n->ctx = ctx;
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (n->fd < 0) {
		fail(err, errlen, "notify socket: %s", strerror(errno));
		free(n);
		return NULL;
	}
	/* A burst of READY=1 from a thousand instances must not be dropped. */
	if (setsockopt(n->fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
		setsockopt(n->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	if (setsockopt(n->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
		fail(err, errlen, "notify socket: SO_PASSCRED: %s", strerror(errno));
	} else if (bind_abstract(n, err, errlen)) {
		r = sd_event_add_io(e, &n->src, n->fd, EPOLLIN, on_readable, n);
		if (r >= 0) {
			/* Before the children's exits: a last STATUS= counts. */
			sd_event_source_set_priority(n->src, SD_EVENT_PRIORITY_IMPORTANT);
			return n;
		}
		fail(err, errlen, "sd_event_add_io: %s", strerror(-r));
	}
	close(n->fd);
	free(n);
	return NULL;
}

const char *notify_address(const struct notify *n)
{
	return n->address;
}

void notify_close(struct notify *n)
{
	if (n == NULL)
		return;
	sd_event_source_unref(n->src);
	close(n->fd);
	free(n);
}

const char *notify_field(const char *msg, size_t len, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name);

	for (const char *p = msg, *end = msg + len; p < end;) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t llen = eol ? (size_t)(eol - p) : (size_t)(end - p);
		if (llen > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
			*vlen = llen - nlen - 1;
			return p + nlen + 1;
		}
		p += llen + 1;
	}
	return NULL;
}
