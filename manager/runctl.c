/* runctl.c: the control socket of `vhostmta run` and the `vhostmta
 * status` client (see runctl.h). The server side is non-blocking on the
 * supervisor's event loop: each client gets the whole report the moment
 * it connects, then the connection is closed; a client that does not
 * read is dropped after RUNCTL_TIMEOUT. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "runctl.h"
#include "util.h"

#define USEC_PER_SEC 1000000ULL
#define RUNCTL_CLIENTS_MAX 16
#define RUNCTL_TIMEOUT (10 * USEC_PER_SEC)
#define RUNCTL_CLIENT_TIMEOUT_MS 10000
#define RUNCTL_FIELDS 9

struct runctl_client {
	struct runctl *c;
	struct runctl_client *prev, *next;
	int fd;
	sd_event_source *io, *timer;
	struct buf out;
	size_t off;
};

struct runctl {
	sd_event *event;
	sd_event_source *src;
	int fd;
	char *path;
	runctl_report_fn *fn;
	void *ctx;
	struct runctl_client *clients;
	size_t nclients;
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

void runctl_field(struct buf *out, const char *s)
{
	if (s == NULL || *s == 0) {
		buf_putc(out, '-');
		return;
	}
	buf_put_printable(out, s, strlen(s)); /* a tab becomes \x09 */
}

/* ---- the server ---------------------------------------------------------------- */

static void client_close(struct runctl_client *k)
{
	struct runctl *c = k->c;

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
	buf_free(&k->out);
	free(k);
}

/* client_send: as much as the socket takes; closed when all is out. */
static void client_send(struct runctl_client *k)
{
	while (k->off < k->out.len) {
		ssize_t n = send(k->fd, k->out.data + k->off, k->out.len - k->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0)
			break;
		k->off += (size_t)n;
	}
	client_close(k);
}

static int on_client(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	(void)s; (void)fd; (void)revents;
	client_send(userdata);
	return 0;
}

static int on_client_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	(void)s; (void)usec;
	msg_debug("control: client did not read its report in time");
	client_close(userdata);
	return 0;
}

/* trusted: only root and the supervisor's own user get a report (the
 * socket's mode says so too). */
static bool trusted(int fd)
{
	struct ucred uc;
	socklen_t len = sizeof uc;

	return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0 &&
	       (uc.uid == 0 || uc.uid == geteuid());
}

static void client_add(struct runctl *c, int fd)
{
	struct runctl_client *k = xcalloc(1, sizeof *k);

	k->c = c;
	k->fd = fd;
	c->fn(c->ctx, &k->out);
	if (sd_event_add_io(c->event, &k->io, fd, EPOLLOUT, on_client, k) < 0 ||
	    sd_event_add_time_relative(c->event, &k->timer, CLOCK_MONOTONIC, RUNCTL_TIMEOUT,
				       USEC_PER_SEC / 10, on_client_timeout, k) < 0) {
		sd_event_source_unref(k->io);
		close(fd);
		buf_free(&k->out);
		free(k);
		return;
	}
	k->next = c->clients;
	if (c->clients)
		c->clients->prev = k;
	c->clients = k;
	c->nclients++;
	client_send(k);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct runctl *c = userdata;
	(void)s; (void)revents;

	for (int i = 0; i < RUNCTL_CLIENTS_MAX; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				msg_warn("control: accept: %s", strerror(errno));
			return 0;
		}
		if (c->nclients >= RUNCTL_CLIENTS_MAX || !trusted(cfd)) {
			close(cfd);
			continue;
		}
		client_add(c, cfd);
	}
	return 0;
}

static bool fill_sun(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun->sun_path)
		return false;
	memcpy(sun->sun_path, path, strlen(path) + 1);
	return true;
}

struct runctl *runctl_open(sd_event *e, const char *path, runctl_report_fn *fn, void *ctx,
			   char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct runctl *c;

	if (!fill_sun(&sun, path)) {
		fail(err, errlen, "control socket %s: path too long (at most %zu bytes)", path,
		     sizeof sun.sun_path - 1);
		return NULL;
	}
	c = xcalloc(1, sizeof *c);
	c->event = e;
	c->fn = fn;
	c->ctx = ctx;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		fail(err, errlen, "control socket: %s", strerror(errno));
		free(c);
		return NULL;
	}
	unlink(path);
	mode_t old = umask(077); /* never a moment with a wider mode */
	int r = bind(c->fd, (struct sockaddr *)&sun, sizeof sun);
	umask(old);
	if (r < 0 || chmod(path, 0600) < 0 || listen(c->fd, RUNCTL_CLIENTS_MAX) < 0) {
		fail(err, errlen, "control socket %s: %s", path, strerror(errno));
	} else if ((r = sd_event_add_io(e, &c->src, c->fd, EPOLLIN, on_accept, c)) < 0) {
		fail(err, errlen, "sd_event_add_io: %s", strerror(-r));
	} else {
		c->path = xstrdup(path);
		return c;
	}
	close(c->fd);
	free(c);
	return NULL;
}

void runctl_close(struct runctl *c)
{
	if (c == NULL)
		return;
	while (c->clients)
		client_close(c->clients);
	sd_event_source_unref(c->src);
	close(c->fd);
	unlink(c->path);
	free(c->path);
	free(c);
}

/* ---- the client ---------------------------------------------------------------- */

/* dir_owner: the owner of the directory holding path (root if unknown). */
static uid_t dir_owner(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	struct stat st;

	if (slash == NULL)
		snprintf(dir, sizeof dir, ".");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash == path ? 1 : slash - path), path);
	return stat(dir, &st) == 0 ? st.st_uid : 0;
}

/* fetch: the whole report of the supervisor on path. */
static bool fetch(const char *path, struct buf *out)
{
	struct sockaddr_un sun;
	struct ucred uc;
	socklen_t len = sizeof uc;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (!fill_sun(&sun, path)) {
		fprintf(stderr, "vhostmta status: %s: path too long\n", path);
		if (fd >= 0)
			close(fd);
		return false;
	}
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		int e = errno;
		if (e == ENOENT || e == ECONNREFUSED)
			fprintf(stderr, "vhostmta status: vhostmta run is not running "
				"(nothing listens on %s)\n", path);
		else
			fprintf(stderr, "vhostmta status: %s: %s\n", path, strerror(e));
		if (fd >= 0)
			close(fd);
		return false;
	}
	/* Whoever answers must be root, ourselves or the owner of the
	 * directory: anyone else could only have planted the socket there. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0 ||
	    (uc.uid != 0 && uc.uid != geteuid() && uc.uid != dir_owner(path))) {
		fprintf(stderr, "vhostmta status: %s: answered by uid %lu, not the directory's "
			"owner: not trusted\n", path, (unsigned long)uc.uid);
		close(fd);
		return false;
	}
	struct pollfd p = { fd, POLLIN, 0 };
	char chunk[8192];
	for (;;) {
		if (poll(&p, 1, RUNCTL_CLIENT_TIMEOUT_MS) == 0) {
			fprintf(stderr, "vhostmta status: %s: no answer in %d s\n", path,
				RUNCTL_CLIENT_TIMEOUT_MS / 1000);
			close(fd);
			return false;
		}
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (out->len + (size_t)n > RUNCTL_REPORT_MAX) {
			fprintf(stderr, "vhostmta status: %s: report too long\n", path);
			close(fd);
			return false;
		}
		buf_append(out, chunk, (size_t)n);
	}
	close(fd);
	return true;
}

/* split: line[0..len) into at most max tab-separated fields, each made
 * printable in place ('?' for anything else); returns how many. */
static size_t split(char *line, char **f, size_t max)
{
	size_t n = 0;

	for (char *p = line; n < max;) {
		f[n++] = p;
		char *tab = strchr(p, '\t');
		if (tab == NULL)
			break;
		*tab = 0;
		p = tab + 1;
	}
	for (size_t i = 0; i < n; i++)
		for (char *p = f[i]; *p; p++)
			if (*p < 0x20 || *p > 0x7e)
				*p = '?';
	return n;
}

static const char *absent(const char *s)
{
	return strcmp(s, "-") == 0 ? NULL : s;
}

/* uptime_text: seconds as 42s, 5m02s, 3h04m or 2d03h. */
static const char *uptime_text(const char *secs, char buf[32])
{
	unsigned long long s;

	if (!absent(secs) || !str_parse_ull(secs, 1ULL << 40, &s))
		return "-";
	if (s < 60)
		snprintf(buf, 32, "%llus", s);
	else if (s < 3600)
		snprintf(buf, 32, "%llum%02llus", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, 32, "%lluh%02llum", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, 32, "%llud%02lluh", s / 86400, s % 86400 / 3600);
	return buf;
}

struct report {
	char *head[5];
	char *(*rows)[RUNCTL_FIELDS];
	size_t n;
};

static bool parse(struct buf *b, const char *path, struct report *r)
{
	char *line = b->data, *eol;
	size_t nf;

	memset(r, 0, sizeof *r);
	if (line == NULL || (eol = strchr(line, '\n')) == NULL)
		goto bad;
	*eol = 0;
	if (!str_has_prefix(line, RUNCTL_MAGIC "\t") || split(line, r->head, 5) != 5)
		goto bad;
	for (line = eol + 1; (eol = strchr(line, '\n')) != NULL; line = eol + 1) {
		*eol = 0;
		r->rows = xreallocarray(r->rows, r->n + 1, sizeof *r->rows);
		nf = split(line, r->rows[r->n], RUNCTL_FIELDS);
		if (nf == RUNCTL_FIELDS)
			r->n++;
	}
	return true;
bad:
	fprintf(stderr, "vhostmta status: %s: not a report of vhostmta run\n", path);
	return false;
}

static void print_table(const struct report *r)
{
	static const char *const title[] = { "NAME", "STATE", "PID", "UPTIME", "SESSIONS",
					     "QUEUE", "RESTARTS", "LAST ERROR" };
	int w[8] = { 0 };
	char up[32];

	for (size_t c = 0; c < 8; c++)
		w[c] = (int)strlen(title[c]);
	for (size_t i = 0; i < r->n; i++)
		for (size_t c = 0; c < 7; c++) {
			const char *s = c == 3 ? uptime_text(r->rows[i][c], up) : r->rows[i][c];
			if ((int)strlen(s) > w[c])
				w[c] = (int)strlen(s);
		}
	printf("vhostmta run: pid %s, up %s, map %s, instances run as %s\n", r->head[1],
	       uptime_text(r->head[2], up), r->head[3], r->head[4]);
	for (size_t c = 0; c < 8; c++)
		printf(c < 7 ? "%-*s  " : "%-*s\n", w[c], title[c]);
	for (size_t i = 0; i < r->n; i++) {
		for (size_t c = 0; c < 7; c++)
			printf("%-*s  ", w[c], c == 3 ? uptime_text(r->rows[i][c], up) : r->rows[i][c]);
		printf("%s\n", r->rows[i][7]);
	}
}

/* json_num: "key": N, or null; the first key of an object has no comma. */
static void json_num(struct buf *b, const char *key, const char *v)
{
	unsigned long long n;

	buf_printf(b, "%s\"%s\": ", b->len && b->data[b->len - 1] == '{' ? "" : ", ", key);
	if (absent(v) && str_parse_ull(v, 1ULL << 53, &n))
		buf_printf(b, "%llu", n);
	else
		buf_puts(b, "null");
}

static void json_str(struct buf *b, const char *key, const char *v)
{
	buf_printf(b, ", \"%s\": ", key);
	if (absent(v))
		buf_put_json(b, v);
	else
		buf_puts(b, "null");
}

static void print_json(const struct report *r)
{
	struct buf b = BUF_INIT;

	buf_puts(&b, "{\"supervisor\": {");
	json_num(&b, "pid", r->head[1]);
	json_num(&b, "uptime", r->head[2]);
	json_str(&b, "map", r->head[3]);
	json_str(&b, "user", r->head[4]);
	buf_puts(&b, "},\n \"instances\": [");
	for (size_t i = 0; i < r->n; i++) {
		char *const *f = r->rows[i];
		buf_puts(&b, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
		buf_put_json(&b, f[0]);
		json_str(&b, "state", f[1]);
		json_num(&b, "pid", f[2]);
		json_num(&b, "uptime", f[3]);
		json_num(&b, "sessions", f[4]);
		json_num(&b, "queue", f[5]);
		json_num(&b, "restarts", f[6]);
		json_str(&b, "last_error", f[7]);
		json_str(&b, "status", f[8]);
		buf_puts(&b, "}");
	}
	buf_puts(&b, r->n ? "\n ]}\n" : "]}\n");
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
}

int runctl_status(const char *path, bool json)
{
	struct buf b = BUF_INIT;
	struct report r;
	int rc = 1;

	if (fetch(path, &b) && parse(&b, path, &r)) {
		if (json)
			print_json(&r);
		else
			print_table(&r);
		free(r.rows);
		rc = 0;
	}
	buf_free(&b);
	return rc;
}
