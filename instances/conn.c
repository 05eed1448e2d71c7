/* conn.c: accepting, the session limits, and one conn per client between
 * the socket (through its I/O layer) and the smtpd session engine. Owns
 * the conns, the per-client-address session counts and the listeners'
 * event sources. A conn never frees its session while the session waits
 * for the queue: the queue still holds the session's callback. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "conn.h"
#include "log.h"
#include "tls.h"
#include "util.h"

#define CONN_INBUF (16 * 1024)     /* one read */
#define CONN_OUT_HIGH (256 * 1024) /* stop reading while more output waits */
#define CONN_CLOSE_GRACE (10 * 1000000ULL) /* writing the last reply after a timeout */
#define TIMER_ACCURACY (1000000ULL) /* timeouts need no precision: let them coalesce */
#define ACCEPT_BURST 64             /* accepts per wakeup, for fairness */
#define ACCEPT_PAUSE (1000000ULL)   /* out of descriptors: retry after */
#define PEER_TEXT_MAX (IPADDR_STRLEN + 10)

static const char too_many_sessions[] = "421 4.3.2 Too many sessions, try again later\r\n";

struct server_listener {
	struct server *sv;
	struct listener *l;
	sd_event_source *src;
};

struct conn {
	struct server *sv;
	struct conn *prev, *next;
	struct conn_layer io;
	sd_event_source *io_src, *timer, *defer;
	sd_event_source *slow;  /* smtpd_error_sleep_time before a reply (made when first needed) */
	struct sconf *conf;    /* the generation the session started with */
	struct smtpd *s;
	struct smtpd_client client;
	uint64_t timeout;      /* usec */
	bool eof;              /* the peer closed its side */
	bool dead;             /* the connection failed: end as soon as possible */
	bool timed_out;
	bool handshaking;      /* TLS handshake after STARTTLS */
	bool slowing;          /* replies held back until the slow timer fires */
	bool slowed;           /* the output waiting now has had its delay */
	bool per_request;      /* smtpd_per_request_deadline */
	uint64_t progress;     /* smtpd_progress() when the deadline last restarted */
	char peer[PEER_TEXT_MAX];
	size_t in_off, in_len; /* unconsumed input is in[in_off..in_len) */
	char in[CONN_INBUF];
};

/* ---- configuration generations ------------------------------------------ */

struct sconf *sconf_new(void)
{
	struct sconf *c = xcalloc(1, sizeof *c);

	c->refs = 1;
	cf_init(&c->cf);
	c->smtpd.cf = &c->cf;
	c->smtpd.policy = &c->policy;
	return c;
}

struct sconf *sconf_ref(struct sconf *c)
{
	c->refs++;
	return c;
}

void sconf_unref(struct sconf *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	if (c->policy_loaded)
		policy_free(&c->policy);
	tls_ctx_free(c->tls);
	cf_free(&c->cf);
	free(c);
}

/* ---- sessions per client address ----------------------------------------- */

/* A chained hash of address -> number of sessions. Keyed with a random
 * seed: clients choose their addresses (a whole IPv6 /64), not where
 * they land. */
struct ipent {
	struct ipent *next;
	struct ipaddr addr;
	size_t count;
};

struct ipcount {
	struct ipent **b;
	size_t nb, n;
	uint64_t seed;
};

static struct ipcount *ipcount_new(void)
{
	struct ipcount *t = xcalloc(1, sizeof *t);

	t->nb = 64;
	t->b = xcalloc(t->nb, sizeof *t->b);
	if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != sizeof t->seed)
		t->seed = (uint64_t)(uintptr_t)t ^ (uint64_t)getpid() << 32;
	return t;
}

static size_t ip_hash(const struct ipcount *t, const struct ipaddr *a)
{
	const unsigned char *p = a->family == AF_INET ? (const void *)&a->u.v4 : (const void *)&a->u.v6;
	size_t n = a->family == AF_INET ? 4 : 16;
	uint64_t h = t->seed ^ 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	h ^= h >> 29;
	return (size_t)(h & (t->nb - 1));
}

static struct ipent **ip_slot(struct ipcount *t, const struct ipaddr *a)
{
	struct ipent **e = &t->b[ip_hash(t, a)];

	while (*e && !ipaddr_equal(&(*e)->addr, a))
		e = &(*e)->next;
	return e;
}

static void ipcount_grow(struct ipcount *t)
{
	struct ipent **old = t->b;
	size_t oldn = t->nb;

	t->nb *= 2;
	t->b = xcalloc(t->nb, sizeof *t->b);
	for (size_t i = 0; i < oldn; i++) {
		for (struct ipent *e = old[i], *next; e; e = next) {
			next = e->next;
			size_t h = ip_hash(t, &e->addr);
			e->next = t->b[h];
			t->b[h] = e;
		}
	}
	free(old);
}

static size_t ipcount_get(struct ipcount *t, const struct ipaddr *a)
{
	struct ipent *e = *ip_slot(t, a);

	return e ? e->count : 0;
}

static void ipcount_inc(struct ipcount *t, const struct ipaddr *a)
{
	struct ipent **slot = ip_slot(t, a);

	if (*slot == NULL) {
		struct ipent *e = xcalloc(1, sizeof *e);
		e->addr = *a;
		*slot = e;
		if (++t->n > t->nb)
			ipcount_grow(t);
		slot = ip_slot(t, a);
	}
	(*slot)->count++;
}

static void ipcount_dec(struct ipcount *t, const struct ipaddr *a)
{
	struct ipent **slot = ip_slot(t, a), *e = *slot;

	if (e == NULL)
		msg_panic("ipcount_dec: address not counted");
	if (--e->count > 0)
		return;
	*slot = e->next;
	free(e);
	t->n--;
}

static void ipcount_free(struct ipcount *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nb; i++) {
		for (struct ipent *e = t->b[i], *next; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(t->b);
	free(t);
}

/* ---- the plain TCP I/O layer ------------------------------------------- */

static bool errno_again(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static enum conn_io plain_read(struct conn *c, void *p, size_t n, size_t *done)
{
	ssize_t r = recv(c->io.fd, p, n, 0);

	if (r > 0) {
		*done = (size_t)r;
		return CONN_IO_OK;
	}
	if (r == 0)
		return CONN_IO_EOF;
	if (errno_again())
		return CONN_IO_AGAIN;
	c->io.error = errno;
	return CONN_IO_ERROR;
}

static enum conn_io plain_write(struct conn *c, const void *p, size_t n, size_t *done)
{
	ssize_t r = send(c->io.fd, p, n, MSG_NOSIGNAL);

	if (r > 0) {
		*done = (size_t)r;
		return CONN_IO_OK;
	}
	if (r == 0 || errno_again())
		return CONN_IO_AGAIN;
	c->io.error = errno;
	return CONN_IO_ERROR;
}

static void plain_close(struct conn *c)
{
	/* A reset frees the kernel's copy of output nobody will read. */
	if (c->io.abort)
		setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &(struct linger){ 1, 0 },
			   sizeof(struct linger));
	close(c->io.fd);
	c->io.fd = -1;
}

static const struct conn_ops plain_ops = { plain_read, plain_write, plain_close };

/* ---- the TLS I/O layer (after STARTTLS) ----------------------------------- */

static enum conn_io tls_rc_io(struct conn *c, enum tls_rc r, uint32_t ev)
{
	switch (r) {
	case TLS_OK:
		return CONN_IO_OK;
	case TLS_WANT:
		c->io.extra = ev;
		return CONN_IO_AGAIN;
	case TLS_EOF:
		return CONN_IO_EOF;
	case TLS_ERROR:
		break;
	}
	c->io.error = EPROTO;
	msg_debug("TLS with %s: %s", c->peer, tls_error(c->io.ctx));
	return CONN_IO_ERROR;
}

static enum conn_io tls_io_read(struct conn *c, void *p, size_t n, size_t *done)
{
	uint32_t ev = 0;

	c->io.extra = 0;
	enum conn_io r = tls_rc_io(c, tls_read(c->io.ctx, p, n, done, &ev), ev);
	/* Only after input: a record half received counts as pending too,
	 * and reading it again would only wait for the socket. */
	c->io.more = r == CONN_IO_OK && tls_pending(c->io.ctx);
	return r;
}

static enum conn_io tls_io_write(struct conn *c, const void *p, size_t n, size_t *done)
{
	uint32_t ev = 0;

	c->io.extra = 0;
	return tls_rc_io(c, tls_write(c->io.ctx, p, n, done, &ev), ev);
}

static void tls_io_close(struct conn *c)
{
	tls_free(c->io.ctx);
	c->io.ctx = NULL;
	plain_close(c);
}

static const struct conn_ops tls_ops = { tls_io_read, tls_io_write, tls_io_close };

struct conn_layer *conn_layer(struct conn *c) { return &c->io; }

/* ---- one connection ---------------------------------------------------- */

static size_t out_pending(struct conn *c) { return smtpd_output(c->s)->len; }

/* can_read: the session wants input, has used all it got, and its
 * replies are being read: a client that never reads cannot make us
 * buffer without bound. */
static bool can_read(struct conn *c)
{
	return !c->eof && !c->dead && !c->slowing && c->in_off == c->in_len &&
	       smtpd_status(c->s) == SMTPD_OPEN && out_pending(c) < CONN_OUT_HIGH;
}

static void timer_reset(struct conn *c)
{
	sd_event_source_set_time_relative(c->timer, c->timeout);
	sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

/* buf_drop: remove the first n bytes (written) from b. */
static void buf_drop(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = 0;
}

static void feed_pending(struct conn *c)
{
	while (!c->dead && c->in_off < c->in_len && smtpd_status(c->s) == SMTPD_OPEN) {
		size_t n = smtpd_feed(c->s, c->in + c->in_off, c->in_len - c->in_off);
		if (n == 0 && smtpd_status(c->s) == SMTPD_OPEN) {
			/* The session broke its contract; end this one conn
			 * rather than spin. */
			msg_error("session for %s consumed no input: closing", c->peer);
			c->dead = true;
		}
		c->in_off += n;
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
}

static void read_input(struct conn *c)
{
	size_t n = 0;

	if (!can_read(c))
		return;
	switch (c->io.ops->read(c, c->in, sizeof c->in, &n)) {
	case CONN_IO_OK:
		c->in_off = 0;
		c->in_len = n;
		if (!c->per_request)
			timer_reset(c);
		break;
	case CONN_IO_AGAIN:
		break;
	case CONN_IO_ERROR:
		msg_debug("read from %s: %s", c->peer, strerror(c->io.error));
		c->eof = true;
		break;
	case CONN_IO_EOF:
		c->eof = true;
		break;
	}
}

static void write_output(struct conn *c)
{
	struct buf *out = smtpd_output(c->s);

	while (!c->dead && out->len > 0) {
		size_t n = 0;
		enum conn_io r = c->io.ops->write(c, out->data, out->len, &n);
		if (r == CONN_IO_AGAIN)
			return;
		if (r != CONN_IO_OK) {
			msg_debug("write to %s: %s", c->peer, strerror(c->io.error));
			c->dead = true;
			return;
		}
		buf_drop(out, n);
		if (!c->per_request || out->len == 0)
			timer_reset(c); /* per request: when the whole reply is out */
		if (out->len > 0)
			return; /* a short write: the socket buffer is full */
	}
}

/* finished: nothing more can happen on this conn. A session waiting for
 * the queue is never finished: its answer is still to come. */
static bool finished(struct conn *c)
{
	enum smtpd_status st = smtpd_status(c->s);

	if (st == SMTPD_WAITING)
		return false;
	if (c->dead)
		return true;
	if (st == SMTPD_CLOSING)
		return out_pending(c) == 0;
	if (st == SMTPD_STARTTLS)
		return false; /* the handshake ends it, or its timeout */
	return c->eof && c->in_off == c->in_len;
}

static uint32_t wanted_events(struct conn *c)
{
	uint32_t ev = c->io.extra;

	if (can_read(c))
		ev |= EPOLLIN;
	if (!c->dead && !c->slowing && out_pending(c) > 0)
		ev |= EPOLLOUT;
	return ev;
}

static bool update_events(struct conn *c)
{
	uint32_t ev = wanted_events(c);

	if (ev == 0)
		return sd_event_source_set_enabled(c->io_src, SD_EVENT_OFF) >= 0;
	return sd_event_source_set_io_events(c->io_src, ev) >= 0 &&
	       sd_event_source_set_enabled(c->io_src, SD_EVENT_ON) >= 0;
}

static void conn_close(struct conn *c);
static void conn_wake(void *ctx);
static void conn_step(struct conn *c);

static int on_slow(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct conn *c = userdata;
	(void)src; (void)usec;

	c->slowing = false;
	c->slowed = true;
	conn_step(c);
	return 0;
}

/* hold_reply: a client past smtpd_soft_error_limit waits before each
 * reply, as in Postfix (tarpitting costs us a timer, not a process).
 * True while the output is held. */
static bool hold_reply(struct conn *c)
{
	uint64_t us;

	if (c->slowing)
		return true;
	if (out_pending(c) == 0 || c->slowed || c->dead || (us = smtpd_slow(c->s)) == 0 ||
	    smtpd_status(c->s) == SMTPD_CLOSING)
		return false;
	if (c->slow == NULL) {
		if (sd_event_add_time_relative(c->sv->event, &c->slow, CLOCK_MONOTONIC, us,
					       TIMER_ACCURACY / 10, on_slow, c) < 0)
			return false; /* not slowed, rather than stuck */
	} else {
		sd_event_source_set_time_relative(c->slow, us);
		sd_event_source_set_enabled(c->slow, SD_EVENT_ONESHOT);
	}
	c->slowing = true;
	return true;
}

/* handshake_step: drive the TLS handshake; on success the session
 * starts over inside TLS, on failure the connection ends. */
static void handshake_step(struct conn *c)
{
	uint32_t ev = 0;
	char desc[128];

	c->io.extra = 0;
	switch (tls_handshake(c->io.ctx, &ev)) {
	case TLS_OK:
		c->handshaking = false;
		tls_describe(c->io.ctx, desc, sizeof desc);
		msg_info("Anonymous TLS connection established from %s: %s", c->peer, desc);
		c->timeout = (uint64_t)cf_num(&c->conf->cf, P_smtpd_timeout) * 1000000ULL;
		timer_reset(c);
		c->io.more = tls_pending(c->io.ctx); /* the client may not wait for us */
		smtpd_tls_started(c->s, desc);
		break;
	case TLS_WANT:
		c->io.extra = ev;
		break;
	case TLS_EOF:
	case TLS_ERROR:
		msg_info("SSL_accept error from %s: %s", c->peer, tls_error(c->io.ctx));
		c->dead = true;
		break;
	}
}

/* start_tls: the 220 to STARTTLS is written: drop whatever input was
 * read with or after the command (plaintext must never count as TLS
 * input, CVE-2011-0411) and start the handshake. */
static void start_tls(struct conn *c)
{
	struct tls *t = c->conf->tls ? tls_server(c->conf->tls, c->io.fd) : NULL;

	if (c->in_off < c->in_len)
		msg_info("discarding %zu bytes of plaintext after STARTTLS from %s",
			 c->in_len - c->in_off, c->peer);
	c->in_off = c->in_len = 0;
	if (t == NULL) {
		msg_error("cannot start TLS with %s: out of memory or no certificate", c->peer);
		c->dead = true;
		return;
	}
	c->io.ops = &tls_ops;
	c->io.ctx = t;
	c->handshaking = true;
	c->timeout = (uint64_t)cf_num(&c->conf->cf, P_smtpd_starttls_timeout) * 1000000ULL;
	timer_reset(c);
	handshake_step(c);
}

/* conn_step: feed what was read, write what the session said, then
 * close or wait for the next event. c may be freed on return. */
static void conn_step(struct conn *c)
{
	feed_pending(c);
	if (c->per_request && smtpd_progress(c->s) != c->progress) {
		c->progress = smtpd_progress(c->s);
		timer_reset(c); /* a whole line came in */
	}
	if (!hold_reply(c)) {
		write_output(c);
		if (out_pending(c) == 0)
			c->slowed = false; /* the next reply waits again */
	}
	if (!c->dead && !c->handshaking && smtpd_status(c->s) == SMTPD_STARTTLS &&
	    out_pending(c) == 0 && c->io.ops == &plain_ops)
		start_tls(c);
	if (!c->dead && !c->handshaking && can_read(c) && c->io.more)
		conn_wake(c); /* decrypted input waits: no socket event will say so */
	if (finished(c)) {
		conn_close(c);
		return;
	}
	if (!update_events(c)) {
		msg_error("event loop refuses %s: closing", c->peer);
		c->dead = true;
		conn_close(c);
	}
}

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct conn *c = userdata;
	(void)src; (void)fd;

	if (c->handshaking) {
		handshake_step(c);
	} else if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR | c->io.extra)) {
		read_input(c);
	}
	conn_step(c);
	return 0;
}

/* on_timer: smtpd_timeout without a byte read or written. The session
 * says 421; if even that cannot be written in a short grace, drop it. */
static int on_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct conn *c = userdata;
	enum smtpd_status st = smtpd_status(c->s);
	(void)src; (void)usec;

	if (st == SMTPD_WAITING) {
		timer_reset(c);
		return 0;
	}
	if (c->handshaking) {
		msg_info("timeout during the TLS handshake with %s: dropping the connection", c->peer);
		c->dead = true;
		c->io.abort = true;
	} else if (c->timed_out || st == SMTPD_CLOSING) {
		msg_info("timeout writing to %s: dropping the connection", c->peer);
		c->dead = true;
		c->io.abort = true;
	} else {
		c->timed_out = true;
		c->timeout = c->timeout < CONN_CLOSE_GRACE ? c->timeout : CONN_CLOSE_GRACE;
		smtpd_timeout(c->s);
		timer_reset(c);
	}
	conn_step(c);
	return 0;
}

/* on_defer: the session was woken (queue answer, shutdown): feed the rest
 * of its input and write its replies, outside the session's own call. */
static int on_defer(sd_event_source *src, void *userdata)
{
	struct conn *c = userdata;
	(void)src;

	if (!c->handshaking && c->io.more)
		read_input(c);
	conn_step(c);
	return 0;
}

static void conn_wake(void *ctx)
{
	struct conn *c = ctx;

	if (sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT) < 0)
		msg_error("cannot schedule %s", c->peer); /* its timer still ends it */
}

static void conn_unlink(struct conn *c)
{
	struct server *sv = c->sv;

	if (c->prev)
		c->prev->next = c->next;
	else
		sv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	sv->nconns--;
	ipcount_dec(sv->perip, &c->client.addr);
}

static void conn_free(struct conn *c)
{
	sd_event_source_disable_unref(c->io_src);
	sd_event_source_disable_unref(c->timer);
	sd_event_source_disable_unref(c->defer);
	sd_event_source_disable_unref(c->slow);
	if (c->io.fd >= 0)
		c->io.ops->close(c);
	sconf_unref(c->conf);
	free(c);
}

/* conn_close: end the session and the connection; when the session
 * waits for the queue, only stop its I/O: the answer's wake closes it. */
static void conn_close(struct conn *c)
{
	struct server *sv = c->sv;

	if (c->s && smtpd_status(c->s) == SMTPD_WAITING) {
		c->dead = true;
		sd_event_source_set_enabled(c->io_src, SD_EVENT_OFF);
		return;
	}
	if (c->s && smtpd_status(c->s) != SMTPD_CLOSING)
		smtpd_eof(c->s);
	smtpd_free(c->s);
	c->s = NULL;
	conn_unlink(c);
	msg_info("disconnect from %s", c->peer);
	conn_free(c);
	if (sv->changed)
		sv->changed(sv->ctx);
}

static bool conn_sources(struct conn *c, sd_event *e)
{
	return sd_event_add_io(e, &c->io_src, c->io.fd, EPOLLIN, on_io, c) >= 0 &&
	       sd_event_add_defer(e, &c->defer, on_defer, c) >= 0 &&
	       sd_event_source_set_enabled(c->defer, SD_EVENT_OFF) >= 0 &&
	       sd_event_add_time_relative(e, &c->timer, CLOCK_MONOTONIC, c->timeout,
					  TIMER_ACCURACY, on_timer, c) >= 0;
}

static void conn_link(struct conn *c)
{
	struct server *sv = c->sv;

	c->next = sv->conns;
	if (sv->conns)
		sv->conns->prev = c;
	sv->conns = c;
	sv->nconns++;
	ipcount_inc(sv->perip, &c->client.addr);
}

static void conn_new(struct server *sv, int fd, const struct smtpd_client *client,
		     const char *peer)
{
	struct conn *c = xcalloc(1, sizeof *c);

	c->sv = sv;
	c->io.fd = fd;
	c->io.ops = &plain_ops;
	c->client = *client;
	c->conf = sconf_ref(sv->conf);
	c->timeout = (uint64_t)cf_num(&c->conf->cf, P_smtpd_timeout) * 1000000ULL;
	c->per_request = cf_num(&c->conf->cf, P_smtpd_per_request_deadline) != 0;
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	if (!conn_sources(c, sv->event)) {
		msg_error("event loop refuses a connection from %s", peer);
		conn_free(c);
		return;
	}
	conn_link(c);
	msg_info("connect from %s", c->peer);
	c->s = smtpd_new(&c->conf->smtpd, &c->client, (struct smtpd_io){ conn_wake, c });
	if (c->s == NULL)
		msg_panic("smtpd_new failed"); /* it allocates with x*: cannot */
	if (sv->changed)
		sv->changed(sv->ctx);
	conn_step(c);
}

/* ---- accepting ----------------------------------------------------------- */

static const char *peer_text(const struct ipaddr *a, uint16_t port, char buf[PEER_TEXT_MAX])
{
	char ip[IPADDR_STRLEN];

	snprintf(buf, PEER_TEXT_MAX, "[%s]:%u", ipaddr_format(a, ip), (unsigned)port);
	return buf;
}

/* client_addresses: both ends of an accepted connection; addresses in
 * their plain form (a dual-stack socket's ::ffff:a.b.c.d is a.b.c.d). */
static bool client_addresses(int fd, const struct sockaddr_storage *peer, socklen_t plen,
			     const struct listener *l, struct smtpd_client *cl)
{
	struct sockaddr_storage local;
	socklen_t llen = sizeof local;

	memset(cl, 0, sizeof *cl);
	if (!ipaddr_from_sockaddr((const struct sockaddr *)peer, plen, &cl->addr, &cl->port))
		return false;
	ipaddr_unmap(&cl->addr, &cl->addr);
	if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0 ||
	    !ipaddr_from_sockaddr((struct sockaddr *)&local, llen, &cl->local, &cl->local_port)) {
		cl->local = l->addr;
		cl->local_port = l->port;
	}
	ipaddr_unmap(&cl->local, &cl->local);
	return true;
}

/* refuse: a best-effort reply to a client we will not serve. */
static void refuse(int fd, const char *reply)
{
	ssize_t r = send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);

	(void)r;
	close(fd);
}

/* over_limits: refuse (and log) a client beyond the session limits. */
static bool over_limits(struct server *sv, int fd, const struct smtpd_client *cl,
			const char *peer)
{
	const struct cf *cf = &sv->conf->cf;
	long long total = cf_num(cf, P_smtpd_session_limit);
	long long perip = cf_num(cf, P_smtpd_client_connection_count_limit);
	char ip[IPADDR_STRLEN], reply[128];

	if ((long long)sv->nconns >= total) {
		msg_warn("session limit %lld reached: refusing %s", total, peer);
		refuse(fd, too_many_sessions);
		return true;
	}
	if (perip > 0 && (long long)ipcount_get(sv->perip, &cl->addr) >= perip) {
		msg_warn("connection count limit %lld exceeded by %s", perip, peer);
		snprintf(reply, sizeof reply, "421 4.7.0 Too many connections from %s\r\n",
			 ipaddr_format(&cl->addr, ip));
		refuse(fd, reply);
		return true;
	}
	return false;
}

static void admit(struct server *sv, struct listener *l, int fd,
		  const struct sockaddr_storage *peer, socklen_t plen)
{
	struct smtpd_client cl;
	char text[PEER_TEXT_MAX];

	if (!client_addresses(fd, peer, plen, l, &cl)) {
		close(fd); /* not TCP/IP: cannot happen on our listeners */
		return;
	}
	peer_text(&cl.addr, cl.port, text);
	if (over_limits(sv, fd, &cl, text))
		return;
	conn_new(sv, fd, &cl, text);
}

static void listeners_enable(struct server *sv, int how)
{
	for (size_t i = 0; sv->listeners && i < sv->listeners->n; i++)
		if (sv->acc[i].src)
			sd_event_source_set_enabled(sv->acc[i].src, how);
}

static int on_accept_resume(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct server *sv = userdata;
	(void)src; (void)usec;

	if (!sv->stopping)
		listeners_enable(sv, SD_EVENT_ON);
	return 0;
}

/* pause_accepting: out of descriptors or memory. The pending connection
 * would make a level-triggered listener fire forever: wait a moment. */
static void pause_accepting(struct server *sv, int err)
{
	msg_warn("accept: %s: pausing for a second", strerror(err));
	listeners_enable(sv, SD_EVENT_OFF);
	if (sv->accept_pause == NULL) {
		if (sd_event_add_time_relative(sv->event, &sv->accept_pause, CLOCK_MONOTONIC,
					       ACCEPT_PAUSE, 0, on_accept_resume, sv) < 0)
			listeners_enable(sv, SD_EVENT_ON);
		return;
	}
	sd_event_source_set_time_relative(sv->accept_pause, ACCEPT_PAUSE);
	sd_event_source_set_enabled(sv->accept_pause, SD_EVENT_ONESHOT);
}

/* accept_goes_on: after accept4 failed with err, try the next one? */
static bool accept_goes_on(struct server *sv, int err)
{
	switch (err) {
	case EAGAIN:
#if EWOULDBLOCK != EAGAIN
	case EWOULDBLOCK:
#endif
		return false;
	case EMFILE:
	case ENFILE:
	case ENOBUFS:
	case ENOMEM:
		pause_accepting(sv, err);
		return false;
	case EINTR:
	case ECONNABORTED:
	case EPROTO:
	case EPERM:
	case ENETDOWN:
	case ENOPROTOOPT:
	case EHOSTDOWN:
	case ENONET:
	case EHOSTUNREACH:
	case EOPNOTSUPP:
	case ENETUNREACH:
		return true; /* that one connection failed */
	default:
		pause_accepting(sv, err); /* never spin on a broken listener */
		return false;
	}
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct server_listener *sl = userdata;
	(void)src; (void)revents;

	for (int i = 0; i < ACCEPT_BURST && !sl->sv->stopping; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		int cfd = accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0)
			admit(sl->sv, sl->l, cfd, &peer, plen);
		else if (!accept_goes_on(sl->sv, errno))
			break;
	}
	return 0;
}

/* ---- the server ---------------------------------------------------------- */

void server_init(struct server *sv, sd_event *e, struct sconf *conf)
{
	memset(sv, 0, sizeof *sv);
	sv->event = e;
	sv->conf = sconf_ref(conf);
	sv->perip = ipcount_new();
}

bool server_listen(struct server *sv, struct listeners *ls, char *err, size_t errlen)
{
	sv->listeners = ls;
	sv->acc = xcalloc(ls->n ? ls->n : 1, sizeof *sv->acc);
	for (size_t i = 0; i < ls->n; i++) {
		struct server_listener *sl = &sv->acc[i];
		sl->sv = sv;
		sl->l = &ls->v[i];
		int r = sd_event_add_io(sv->event, &sl->src, ls->v[i].fd, EPOLLIN, on_accept, sl);
		if (r < 0) {
			snprintf(err, errlen, "event source for %s: %s", ls->v[i].name, strerror(-r));
			return false;
		}
	}
	return true;
}

void server_set_conf(struct server *sv, struct sconf *conf)
{
	struct sconf *old = sv->conf;

	sv->conf = sconf_ref(conf);
	sconf_unref(old);
}

void server_stop_listening(struct server *sv)
{
	for (size_t i = 0; sv->listeners && i < sv->listeners->n; i++)
		sv->acc[i].src = sd_event_source_disable_unref(sv->acc[i].src);
	sv->accept_pause = sd_event_source_disable_unref(sv->accept_pause);
	if (sv->listeners)
		listen_close(sv->listeners);
	free(sv->acc);
	sv->acc = NULL;
	sv->listeners = NULL;
}

void server_shutdown(struct server *sv)
{
	sv->stopping = true;
	server_stop_listening(sv);
	for (struct conn *c = sv->conns; c; c = c->next) {
		smtpd_shutdown(c->s);
		conn_wake(c);
	}
}

void server_close_all(struct server *sv)
{
	struct conn *next;

	for (struct conn *c = sv->conns; c; c = next) {
		next = c->next;
		c->dead = true;
		c->io.abort = true;
		conn_close(c);
	}
}

size_t server_sessions(const struct server *sv) { return sv->nconns; }

void server_free(struct server *sv)
{
	sv->changed = NULL;
	server_stop_listening(sv);
	server_close_all(sv);
	/* Sessions still waiting for the queue cannot be freed safely: the
	 * process is ending, let them go with it. */
	if (sv->nconns == 0) {
		ipcount_free(sv->perip);
		sv->perip = NULL;
	}
	sconf_unref(sv->conf);
	sv->conf = NULL;
}
