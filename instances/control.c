/* control.c: the queue control socket (see control.h). The server side
 * owns QDIR/control (created 0600, removed on close while it is still
 * ours) and its short-lived clients: one bounded request line, one reply,
 * close, all non-blocking on the instance's sd-event loop. The client side
 * is control_request() and the `--flush` / `--delete ID` commands built
 * on it. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "control.h"
#include "log.h"
#include "queue.h"
#include "util.h"

#define USEC_PER_SEC 1000000ULL
#define CONTROL_CLIENTS_MAX 16               /* open control connections at once */
#define CONTROL_TIMEOUT (5 * USEC_PER_SEC)    /* request in and reply out, per client */
#define CONTROL_BACKLOG 16
#define ACCEPT_BURST 16
#define ACCEPT_PAUSE USEC_PER_SEC             /* out of descriptors: retry after */
#define REQUEST_TIMEOUT_MS 10000              /* control_request: the whole exchange */
#define CONNECT_RETRY_MS 20                   /* the instance's backlog is full */

struct control_client {
	struct control *c;
	struct control_client *prev, *next;
	int fd;
	sd_event_source *io, *timer;
	size_t inlen;
	size_t outlen, outoff;
	char in[CONTROL_LINE_MAX + 1];  /* one line and its newline */
	char out[CONTROL_LINE_MAX + 1]; /* one reply and its newline */
};

struct control {
	sd_event *event;
	sd_event_source *src, *pause;
	int fd;
	char *path;
	dev_t dev;    /* the socket file we bound, to recognise it at close */
	ino_t ino;
	uid_t uid;    /* who may use it besides root */
	const struct control_ops *ops;
	void *ctx;
	struct control_client *clients;
	size_t nclients;
};

/* ---- requests ------------------------------------------------------------- */

/* qid_valid: exactly QID_LEN upper-case hex digits. */
static bool qid_valid(const char *s, size_t n)
{
	if (n != QID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

/* reply: the reply line, cut to fit and made printable. */
static void reply(struct control_client *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct control_client *k, const char *fmt, ...)
{
	struct buf raw = BUF_INIT, safe = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&raw, fmt, ap);
	va_end(ap);
	buf_put_printable(&safe, buf_cstr(&raw), raw.len);
	size_t n = safe.len < CONTROL_LINE_MAX ? safe.len : CONTROL_LINE_MAX;
	memcpy(k->out, buf_cstr(&safe), n);
	k->out[n] = '\n';
	k->outlen = n + 1;
	k->outoff = 0;
	buf_free(&raw);
	buf_free(&safe);
}

static void do_flush(struct control_client *k)
{
	size_t n = k->c->ops->flush(k->c->ctx);

	msg_info("control: flush: %zu message%s made due now", n, n == 1 ? "" : "s");
	reply(k, "ok %zu", n);
}

static void do_delete(struct control_client *k, const char *id, size_t idlen)
{
	char err[CONTROL_LINE_MAX], sid[QID_LEN + 1];

	if (!qid_valid(id, idlen)) {
		reply(k, "error invalid queue id");
		return;
	}
	memcpy(sid, id, QID_LEN);
	sid[QID_LEN] = 0;
	err[0] = 0;
	if (k->c->ops->delete(k->c->ctx, sid, err, sizeof err)) {
		msg_info("%s: removed (control: delete)", sid);
		reply(k, "ok");
		return;
	}
	err[sizeof err - 1] = 0;
	if (err[0] == 0)
		snprintf(err, sizeof err, "cannot delete");
	struct buf shown = BUF_INIT;
	buf_put_printable(&shown, err, strlen(err));
	msg_warn("control: delete %s: %s", sid, buf_cstr(&shown));
	buf_free(&shown);
	reply(k, "error %s", err);
}

/* handle: one request line (without its newline). */
static void handle(struct control_client *k, const char *line, size_t len)
{
	static const char delete_verb[] = "delete ";
	char shown[STR_SHOW_BUF];

	if (len == 5 && memcmp(line, "flush", 5) == 0) {
		do_flush(k);
	} else if (len >= sizeof delete_verb - 1 && memcmp(line, delete_verb, sizeof delete_verb - 1) == 0) {
		do_delete(k, line + sizeof delete_verb - 1, len - (sizeof delete_verb - 1));
	} else {
		msg_warn("control: unknown request \"%s\"", str_show(line, len, shown));
		reply(k, "error unknown request");
	}
}

/* ---- one client ------------------------------------------------------------- */

static void client_close(struct control_client *k)
{
	struct control *c = k->c;

	if (k->prev)
		k->prev->next = k->next;
	else
		c->clients = k->next;
	if (k->next)
		k->next->prev = k->prev;
	c->nclients--;
	sd_event_source_unref(k->io);
	sd_event_source_unref(k->timer);
	close(k->fd);
	free(k);
}

/* send_reply: as much of the reply as the socket takes now; the client is
 * closed once all of it is out (or on an error). */
static void send_reply(struct control_client *k)
{
	while (k->outoff < k->outlen) {
		ssize_t n = send(k->fd, k->out + k->outoff, k->outlen - k->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			sd_event_source_set_io_events(k->io, EPOLLOUT);
			return;
		}
		if (n <= 0) {
			msg_debug("control: write: %s", n < 0 ? strerror(errno) : "nothing written");
			break;
		}
		k->outoff += (size_t)n;
	}
	client_close(k);
}

/* read_request: more input; a complete line is handled, a line past
 * CONTROL_LINE_MAX refused. Returns false when k was closed. */
static bool read_request(struct control_client *k)
{
	ssize_t n = recv(k->fd, k->in + k->inlen, sizeof k->in - k->inlen, MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return true;
	if (n <= 0) {
		msg_debug("control: client closed before a complete request");
		client_close(k);
		return false;
	}
	size_t old = k->inlen;
	k->inlen += (size_t)n;
	char *nl = memchr(k->in + old, '\n', (size_t)n);
	if (nl) {
		handle(k, k->in, (size_t)(nl - k->in));
		send_reply(k);
		return false;
	}
	if (k->inlen == sizeof k->in) {
		msg_warn("control: request longer than %d bytes: refused", CONTROL_LINE_MAX);
		reply(k, "error request too long");
		send_reply(k);
		return false;
	}
	return true;
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct control_client *k = userdata;
	(void)s;
	(void)fd;

	if (k->outlen > 0) {
		send_reply(k);
		return 0;
	}
	if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
		read_request(k);
	return 0;
}

static int on_client_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct control_client *k = userdata;
	(void)s;
	(void)usec;

	msg_warn("control: client %s within %llus: dropped",
		 k->outlen ? "did not read its reply" : "sent no complete request",
		 (unsigned long long)(CONTROL_TIMEOUT / USEC_PER_SEC));
	client_close(k);
	return 0;
}

/* peer_allowed: the instance's own user, or root. */
static bool peer_allowed(const struct control *c, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof cred) {
		msg_warn("control: cannot get the peer's credentials: %s", strerror(errno));
		return false;
	}
	if (cred.uid == c->uid || cred.uid == 0)
		return true;
	msg_warn("control: connection from uid %lu (pid %ld) refused", (unsigned long)cred.uid,
		 (long)cred.pid);
	return false;
}

static void client_new(struct control *c, int fd)
{
	struct control_client *k = xcalloc(1, sizeof *k);

	k->c = c;
	k->fd = fd;
	if (sd_event_add_io(c->event, &k->io, fd, EPOLLIN, on_client_io, k) < 0 ||
	    sd_event_add_time_relative(c->event, &k->timer, CLOCK_MONOTONIC, CONTROL_TIMEOUT,
				       USEC_PER_SEC / 10, on_client_timeout, k) < 0) {
		msg_warn("control: cannot watch a client");
		sd_event_source_unref(k->io);
		sd_event_source_unref(k->timer);
		close(fd);
		free(k);
		return;
	}
	k->next = c->clients;
	if (c->clients)
		c->clients->prev = k;
	c->clients = k;
	c->nclients++;
	if (!peer_allowed(c, fd)) {
		reply(k, "error permission denied");
		send_reply(k);
	}
}

/* ---- the listener ------------------------------------------------------------ */

static void accept_pause(struct control *c)
{
	sd_event_source_set_enabled(c->src, SD_EVENT_OFF);
	sd_event_source_set_time_relative(c->pause, ACCEPT_PAUSE);
	sd_event_source_set_enabled(c->pause, SD_EVENT_ONESHOT);
}

static int on_pause_end(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct control *c = userdata;
	(void)s;
	(void)usec;

	sd_event_source_set_enabled(c->src, SD_EVENT_ON);
	return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct control *c = userdata;
	(void)s;
	(void)revents;

	for (int i = 0; i < ACCEPT_BURST; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			msg_warn("control: accept: %s", strerror(errno));
			/* Out of descriptors: the listener would fire at once again. */
			accept_pause(c);
			return 0;
		}
		if (c->nclients >= CONTROL_CLIENTS_MAX) {
			msg_warn("control: %d clients already: connection closed", CONTROL_CLIENTS_MAX);
			close(cfd);
			continue;
		}
		client_new(c, cfd);
	}
	return 0;
}

static bool control_path(const char *qdir, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s/" CONTROL_NAME, qdir);

	return n > 0 && (size_t)n < outlen;
}

/* remove_stale: a socket left at path by an instance that is gone goes;
 * anything else there stays, and control_open fails. The queue lock
 * (taken before) means no live instance owns a socket here. */
static bool remove_stale(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return true;
		msg_error("control: %s: %s", path, strerror(errno));
		return false;
	}
	if (!S_ISSOCK(st.st_mode)) {
		msg_error("control: %s exists and is not a socket: not replacing it", path);
		return false;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		msg_error("control: cannot remove the stale socket %s: %s", path, strerror(errno));
		return false;
	}
	return true;
}

/* bind_socket: a listening socket at path, mode 0600 from the start (the
 * umask covers the window between bind and chmod). */
static int bind_socket(const char *path, struct stat *st)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		msg_error("control: socket: %s", strerror(errno));
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (r < 0) {
		msg_error("control: bind %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (chmod(path, 0600) < 0 || lstat(path, st) < 0 || listen(fd, CONTROL_BACKLOG) < 0) {
		msg_error("control: %s: %s", path, strerror(errno));
		unlink(path);
		close(fd);
		return -1;
	}
	return fd;
}

struct control *control_open(sd_event *event, const char *qdir, const struct control_ops *ops,
			     void *ctx)
{
	char path[sizeof ((struct sockaddr_un *)0)->sun_path];
	struct stat st;
	struct control *c;
	int fd;

	if (!control_path(qdir, path, sizeof path)) {
		msg_error("control: %s/" CONTROL_NAME ": path too long for a socket", qdir);
		return NULL;
	}
	if (!remove_stale(path) || (fd = bind_socket(path, &st)) < 0)
		return NULL;
	c = xcalloc(1, sizeof *c);
	c->event = sd_event_ref(event);
	c->fd = fd;
	c->path = xstrdup(path);
	c->dev = st.st_dev;
	c->ino = st.st_ino;
	c->uid = geteuid();
	c->ops = ops;
	c->ctx = ctx;
	if (sd_event_add_io(event, &c->src, fd, EPOLLIN, on_accept, c) < 0 ||
	    sd_event_add_time(event, &c->pause, CLOCK_MONOTONIC, UINT64_MAX, USEC_PER_SEC / 10,
			      on_pause_end, c) < 0) {
		msg_error("control: cannot watch %s", path);
		control_close(c);
		return NULL;
	}
	sd_event_source_set_enabled(c->pause, SD_EVENT_OFF);
	return c;
}

void control_close(struct control *c)
{
	struct stat st;

	if (c == NULL)
		return;
	while (c->clients)
		client_close(c->clients);
	sd_event_source_unref(c->src);
	sd_event_source_unref(c->pause);
	/* Only our own socket: never a file someone put there since. */
	if (lstat(c->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == c->dev &&
	    st.st_ino == c->ino)
		unlink(c->path);
	close(c->fd);
	sd_event_unref(c->event);
	free(c->path);
	free(c);
}

/* ---- the client side ------------------------------------------------------------ */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* wait_fd: poll fd for events until the deadline; false with errno
 * (ETIMEDOUT) when it passes. */
static bool wait_fd(int fd, short events, long long deadline)
{
	for (;;) {
		long long left = deadline - now_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return false;
		}
		struct pollfd p = { .fd = fd, .events = events };
		int r = poll(&p, 1, (int)left);
		if (r > 0)
			return true;
		if (r < 0 && errno != EINTR)
			return false;
	}
}

/* connect_until: a full backlog (EAGAIN) is retried until the deadline. */
static int connect_until(const char *path, long long deadline)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		if (errno != EAGAIN && errno != EINTR)
			goto fail;
		if (now_ms() >= deadline) {
			errno = ETIMEDOUT;
			goto fail;
		}
		poll(NULL, 0, CONNECT_RETRY_MS);
	}
	return fd;
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

static bool send_all(int fd, const char *p, size_t n, long long deadline)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!wait_fd(fd, POLLOUT, deadline))
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* recv_line: one line of at most CONTROL_LINE_MAX bytes; EPROTO for a
 * longer one or a close before the newline. */
static bool recv_line(int fd, struct buf *line, long long deadline)
{
	char in[CONTROL_LINE_MAX + 1];
	size_t len = 0;

	for (;;) {
		ssize_t r = recv(fd, in + len, sizeof in - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!wait_fd(fd, POLLIN, deadline))
				return false;
			continue;
		}
		if (r < 0)
			return false;
		if (r == 0) {
			errno = EPROTO;
			return false;
		}
		char *nl = memchr(in + len, '\n', (size_t)r);
		len += (size_t)r;
		if (nl) {
			buf_append(line, in, (size_t)(nl - in));
			return true;
		}
		if (len == sizeof in) {
			errno = EPROTO;
			return false;
		}
	}
}

int control_request(const char *qdir, const char *request, struct buf *reply_line)
{
	char path[sizeof ((struct sockaddr_un *)0)->sun_path];
	size_t len = strlen(request);
	long long deadline = now_ms() + REQUEST_TIMEOUT_MS;

	buf_reset(reply_line);
	if (len > CONTROL_LINE_MAX || memchr(request, '\n', len)) {
		errno = EINVAL;
		return -1;
	}
	if (!control_path(qdir, path, sizeof path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = connect_until(path, deadline);
	if (fd < 0)
		return -1;
	char line[CONTROL_LINE_MAX + 1];
	memcpy(line, request, len);
	line[len] = '\n';
	/* A refusal may come before the request is read, so a failed send
	 * (EPIPE) still leaves a reply to read. */
	bool sent = send_all(fd, line, len + 1, deadline);
	int send_err = errno;
	bool ok = (sent || send_err == EPIPE || send_err == ECONNRESET) &&
		  recv_line(fd, reply_line, deadline);
	if (!ok && !sent)
		errno = send_err;
	int e = errno;
	close(fd);
	errno = e;
	return ok ? 0 : -1;
}

/* ---- the instance's --flush and --delete ---------------------------------------- */

/* queue_files: how many entries incoming/ and deferred/ hold, without a
 * running instance (read-only, no lock needed). */
static size_t queue_files(const char *qdir)
{
	static const char *const subs[] = { "incoming", "deferred" };
	char path[4096];
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
		snprintf(path, sizeof path, "%s/%s", qdir, subs[i]);
		DIR *d = opendir(path);
		if (d == NULL)
			continue;
		for (struct dirent *e; (e = readdir(d)) != NULL;)
			n += e->d_name[0] != '.';
		closedir(d);
	}
	return n;
}

static bool not_running(int err)
{
	return err == ENOENT || err == ECONNREFUSED;
}

/* cli_request: request's reply, or NULL after saying why there is none. */
static const char *cli_request(const char *qdir, const char *request, struct buf *r)
{
	if (control_request(qdir, request, r) == 0)
		return buf_cstr(r);
	if (not_running(errno))
		return NULL;
	if (errno == EPROTO)
		msg_error("%s/" CONTROL_NAME ": the instance closed the connection without a reply", qdir);
	else if (errno == ETIMEDOUT)
		msg_error("%s/" CONTROL_NAME ": no reply within %ds", qdir, REQUEST_TIMEOUT_MS / 1000);
	else
		msg_error("%s/" CONTROL_NAME ": %s", qdir, strerror(errno));
	return NULL;
}

/* show_reply_error: an "error TEXT" reply (or anything unexpected),
 * after what it is about. */
static int show_reply_error(const char *qdir, const char *about, const char *r)
{
	struct buf shown = BUF_INIT;

	buf_put_printable(&shown, r, strlen(r));
	if (str_has_prefix(r, "error "))
		msg_error("%s: %s", about, buf_cstr(&shown) + 6);
	else
		msg_error("%s/" CONTROL_NAME ": unexpected reply \"%s\"", qdir, buf_cstr(&shown));
	buf_free(&shown);
	return 1;
}

int control_cli_flush(const char *qdir)
{
	struct buf r = BUF_INIT;
	unsigned long long n;
	int rc = 1;

	errno = 0;
	const char *line = cli_request(qdir, "flush", &r);
	if (line == NULL && not_running(errno)) {
		size_t files = queue_files(qdir);
		if (files == 0) {
			printf("no running instance for %s, and its queue is empty: nothing to flush\n",
			       qdir);
			rc = 0;
		} else {
			msg_error("no running instance for %s (%zu queue file%s): start it to deliver "
				  "its mail", qdir, files, files == 1 ? "" : "s");
		}
	} else if (line && str_has_prefix(line, "ok ") && str_parse_ull(line + 3, SIZE_MAX, &n)) {
		printf("flush: %llu deferred message%s made due now\n", n, n == 1 ? "" : "s");
		rc = 0;
	} else if (line) {
		rc = show_reply_error(qdir, "flush", line);
	}
	buf_free(&r);
	return rc;
}

int control_cli_delete(const char *qdir, const char *id)
{
	struct buf r = BUF_INIT, req = BUF_INIT;
	char shown[STR_SHOW_BUF];
	int rc = 1;

	if (!qid_valid(id, strlen(id))) {
		msg_error("invalid queue id \"%s\": %d upper-case hex digits expected",
			  str_show(id, strlen(id), shown), QID_LEN);
		return 2;
	}
	buf_printf(&req, "delete %s", id);
	errno = 0;
	const char *line = cli_request(qdir, buf_cstr(&req), &r);
	if (line == NULL && not_running(errno)) {
		msg_error("no running instance for %s: start it, then delete %s again (a message "
			  "is deleted by its running instance only)", qdir, id);
	} else if (line && strcmp(line, "ok") == 0) {
		printf("%s: deleted\n", id);
		rc = 0;
	} else if (line) {
		rc = show_reply_error(qdir, id, line);
	}
	buf_free(&req);
	buf_free(&r);
	return rc;
}
