/* qmgr.c: the queue manager (qmgr.h). Owns the active files (queue files
 * being delivered, each held open for its content), the destinations
 * with their job queues, DNS answers and connection pools, the backlog of
 * files waiting to become active, and the list of deferred files with
 * their retry times.
 *
 * A file is the unit of bookkeeping: it leaves incoming/ or deferred/
 * only when every recipient of every message in it is finished for this
 * pass: delivered, bounced (the bounce committed first), or deferred
 * (then the rest is rewritten into deferred/ with its retry time before
 * the old file goes). A crash in between brings the whole file back: a
 * recipient may get a message twice, never zero times.
 *
 * Recipient states within one pass: TODO (queued in a job), BUSY (in a
 * transaction), DONE (delivered, bounced or removed), DEFER (failed for
 * now), KEEP (not attempted: put back unchanged when stopping). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "bounce.h"
#include "buf.h"
#include "conn.h"
#include "dns.h"
#include "log.h"
#include "qmgr.h"
#include "queue.h"
#include "smtpc.h"
#include "tls.h"
#include "util.h"

#define USEC 1000000ULL
#define DNS_CACHE_US (60 * USEC)   /* how long an answer is reused */
#define DEAD_MAX_US (60 * USEC)    /* a failed destination defers new mail for at most this */
#define SWEEP_US (60 * USEC)       /* how often unused destinations are forgotten */

enum rstate { R_TODO, R_BUSY, R_DONE, R_DEFER, R_KEEP };

struct afile;

struct fail {          /* one bounced recipient of a message */
	size_t rcpt;
	char dsn[12];
	char *remote, *diag, *text;
};

struct amsg {
	struct qmsg q;
	struct afile *f;
	unsigned char *st;   /* enum rstate per recipient */
	char **why;          /* R_DEFER: the reason */
	size_t nleft;        /* recipients TODO or BUSY */
	struct fail *fails;
	size_t nfails;
	uint64_t active_us;  /* CLOCK_REALTIME, when it became active */
	bool finished;
};

struct afile {
	struct afile *prev, *next;
	struct qmgr *q;
	char name[QID_LEN + 1];
	enum qdir dir;
	int fd;
	struct amsg *msgs;
	size_t nmsgs, nopen; /* messages, and those not finished */
};

struct job {
	struct job *next;
	struct amsg *m;
	size_t n;
	size_t *idx;
};

struct oconn;

/* A delivery address: where a connection may go. */
struct target {
	char host[256];
	struct ipaddr ip;
};

struct dest {
	char *key;
	struct nexthop nh;
	char domain[256];     /* for MX lookups and loop messages */
	bool check_loop;      /* MX hosts: none of ours or our siblings' */
	bool check_self;      /* [host] next hops: not this very instance */
	struct job *head, *tail;
	size_t njobs;
	size_t nconns, nconnecting;
	struct oconn *idle;   /* idle pool, most recent first */
	struct dns_query *query;
	struct target *targets;
	size_t ntargets;
	uint64_t resolved_until; /* CLOCK_MONOTONIC */
	uint64_t dead_until;
	char *dead_why;
	char dead_dsn[12];    /* its status, as a deferral (4.x.y) */
	struct qmgr *mgr;
};

enum ostate { O_CONNECTING, O_BUSY, O_IDLE, O_QUITTING };

struct oconn {
	struct oconn *next_idle;
	struct oconn *all_prev, *all_next; /* every connection of the qmgr */
	struct dest *d;
	struct smtpc *c;
	struct dconf *dc;
	enum ostate state;
	struct target *targets;
	size_t ntargets, ti;
	struct smtpc_result last;
	struct job *job;
	struct smtpc_txn txn;
	struct smtpc_rcpt *rcpts;
	size_t *ridx;
	uint64_t start_us, ready_us, send_us; /* CLOCK_REALTIME */
	bool fresh;                           /* no transaction yet */
	sd_event_source *timer;               /* idle limit, or the step after done() */
};

/* One configuration generation, as delivery needs it. */
struct dconf {
	unsigned refs;
	struct sconf *sc;
	struct smtpc_cfg smtp, lmtp;
	int families;
	bool bind4, bind6;
	struct sockaddr_storage b4, b6;
	socklen_t b4len, b6len;
	struct nexthop relay;
	bool has_relay;
	struct ipaddr *own;
	size_t nown;
	size_t nself;            /* own[0..nself): this instance's; the rest: siblings' */
	struct tls_ctx *tls;   /* the delivery side's TLS context, made when first needed */
	bool tls_failed;       /* ... and it could not be made */
};

struct deferred {
	char name[QID_LEN + 1];
	uint64_t next_us;
	size_t nmsgs;
};

struct qmgr {
	sd_event *event;
	struct queue *queue;
	struct dns *dns;
	struct dconf *dc;
	struct afile *files;
	size_t nactive;          /* messages in active files */
	char **backlog;          /* incoming/ names waiting, FIFO */
	size_t nbacklog, backlog_head, backlog_cap;
	struct deferred *def;    /* deferred/ files not active */
	size_t ndef;
	struct htab dests;
	sd_event_source *kick, *retry;
	size_t busy, conns;
	struct oconn *all;
	uint64_t next_sweep;     /* CLOCK_MONOTONIC: dest_sweep's next run */
	bool stopping;
	void (*hook_fn)(void *ctx);
	void *hook_ctx;
};

static void dest_kick(struct dest *d);
static void msg_check(struct amsg *m);
static void load_some(struct qmgr *q);

/* ---- time and small helpers ------------------------------------------ */

static uint64_t now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * USEC + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_mono(struct qmgr *q)
{
	uint64_t t = 0;

	sd_event_now(q->event, CLOCK_MONOTONIC, &t);
	return t;
}

static const struct cf *CF(const struct dconf *dc) { return &dc->sc->cf; }

/* secs: a delay for log lines, Postfix style: 0.12, 1.2, 12. */
static void secs(char *out, size_t n, uint64_t us)
{
	double s = (double)us / 1e6;

	if (us == 0)
		snprintf(out, n, "0");
	else if (s < 10)
		snprintf(out, n, "%.2g", s < 0.01 ? 0.01 : s);
	else
		snprintf(out, n, "%.0f", s);
}

static uint64_t since(uint64_t from, uint64_t to) { return to > from ? to - from : 0; }

/* ---- configuration ---------------------------------------------------- */

static void dconf_unref(struct dconf *dc)
{
	if (dc == NULL || --dc->refs > 0)
		return;
	sconf_unref(dc->sc);
	tls_ctx_free(dc->tls);
	free(dc->own);
	free(dc);
}

static void own_add(struct dconf *dc, const struct ipaddr *a)
{
	dc->own = xreallocarray(dc->own, dc->nown + 1, sizeof *dc->own);
	dc->own[dc->nown++] = *a;
}

/* load_siblings: "address name" lines of the manager's host address
 * table; a line that does not parse is skipped with a warning. */
static void load_siblings(struct dconf *dc, const char *path)
{
	FILE *fp;
	char line[512];
	unsigned long n = 0;

	if (*path == 0)
		return;
	if ((fp = fopen(path, "re")) == NULL) {
		msg_warn("sibling_table %s: %s", path, strerror(errno));
		return;
	}
	while (fgets(line, sizeof line, fp)) {
		struct ipaddr a;
		size_t len = strcspn(line, " \t\r\n");
		n++;
		if (line[0] == '#' || len == 0)
			continue;
		if (ipaddr_parse(line, len, &a))
			own_add(dc, &a);
		else
			msg_warn("%s:%lu: not an address: skipped", path, n);
	}
	fclose(fp);
}

/* bind_param: smtp_bind_address(6) as postconf(5) has it: set explicitly
 * (the unspecified address turns binding off), else derived from
 * inet_interfaces. */
static bool bind_param(const char *value, const struct iflist *ifs, int family,
		       struct sockaddr_storage *ss, socklen_t *len, bool *explicit_on)
{
	struct ipaddr a;

	*explicit_on = false;
	if (*value) {
		if (!ipaddr_parse(value, strlen(value), &a) || ipaddr_is_unspecified(&a))
			return false;
		*explicit_on = true;
	} else if (!iflist_bind_address(ifs, family, &a)) {
		return false;
	}
	ipaddr_to_sockaddr(&a, 0, ss, len);
	return true;
}

static void smtpc_cfg_from(struct smtpc_cfg *s, const struct cf *cf, bool lmtp)
{
	s->helo_name = cf_str(cf, P_smtp_helo_name);
	s->lmtp = lmtp;
	s->connect_us = (uint64_t)cf_num(cf, P_smtp_connect_timeout) * USEC;
	s->helo_us = (uint64_t)cf_num(cf, P_smtp_helo_timeout) * USEC;
	s->mail_us = (uint64_t)cf_num(cf, P_smtp_mail_timeout) * USEC;
	s->rcpt_us = (uint64_t)cf_num(cf, P_smtp_rcpt_timeout) * USEC;
	s->data_init_us = (uint64_t)cf_num(cf, P_smtp_data_init_timeout) * USEC;
	s->data_xfer_us = (uint64_t)cf_num(cf, P_smtp_data_xfer_timeout) * USEC;
	s->data_done_us = (uint64_t)cf_num(cf, P_smtp_data_done_timeout) * USEC;
	s->quit_us = (uint64_t)cf_num(cf, P_smtp_quit_timeout) * USEC;
	s->line_length_limit = (size_t)cf_num(cf, P_smtp_line_length_limit);
	/* LMTP goes to a local or trusted next hop: never TLS. */
	s->tls_level = lmtp ? TLS_LEVEL_NONE
			    : tls_level_parse(cf_str(cf, P_smtp_tls_security_level));
	s->starttls_us = (uint64_t)cf_num(cf, P_smtp_starttls_timeout) * USEC;
}

/* dconf_tls: the TLS client context of a configuration generation, made
 * on first use (loading the CA store costs, and many generations never
 * see a server offer STARTTLS); a failure is logged once, and smtpc then
 * defers the connections whose server offers TLS. */
static struct tls_ctx *dconf_tls(void *arg)
{
	struct dconf *dc = arg;
	char err[256];

	if (dc->tls == NULL && !dc->tls_failed) {
		dc->tls = tls_client_ctx(cf_str(CF(dc), P_smtp_tls_CAfile), err, sizeof err);
		if (dc->tls == NULL) {
			dc->tls_failed = true;
			msg_error("TLS for delivery is unavailable: %s", err);
		}
	}
	return dc->tls;
}

/* dconf_new: what delivery derives from one configuration generation:
 * source addresses, usable families, our own addresses, relayhost. */
static struct dconf *dconf_new(struct sconf *sc)
{
	struct dconf *dc = xcalloc(1, sizeof *dc);
	const struct cf *cf = &sc->cf;
	struct iflist ifs;
	char err[256];
	bool ex4, ex6;

	dc->refs = 1;
	dc->sc = sconf_ref(sc);
	smtpc_cfg_from(&dc->smtp, cf, false);
	smtpc_cfg_from(&dc->lmtp, cf, true);
	dc->smtp.tls_ctx = dconf_tls;
	dc->smtp.tls_arg = dc;
	if (!iflist_parse(cf_str(cf, P_inet_interfaces), &ifs, err, sizeof err))
		ifs = (struct iflist){ IFLIST_ALL, 0, NULL };
	dc->bind4 = bind_param(cf_str(cf, P_smtp_bind_address), &ifs, AF_INET, &dc->b4, &dc->b4len, &ex4);
	dc->bind6 = bind_param(cf_str(cf, P_smtp_bind_address6), &ifs, AF_INET6, &dc->b6, &dc->b6len, &ex6);
	/* The families: inet_protocols, and with an explicit address list
	 * only those the instance has an address (or a source address) of:
	 * an IPv4-only instance never sends from the host's IPv6 address. */
	const char *proto = cf_str(cf, P_inet_protocols);
	dc->families = strcmp(proto, "ipv4") == 0 ? DNS_V4 : strcmp(proto, "ipv6") == 0 ? DNS_V6
		: DNS_V4 | DNS_V6;
	if (ifs.kind == IFLIST_ADDRS) {
		int have = (ex4 ? DNS_V4 : 0) | (ex6 ? DNS_V6 : 0);
		for (size_t i = 0; i < ifs.n; i++)
			have |= ifs.addrs[i].family == AF_INET ? DNS_V4 : DNS_V6;
		dc->families &= have;
	}
	iflist_free(&ifs);
	for (size_t i = 0; i < sc->policy.own.n; i++)
		own_add(dc, &sc->policy.own.addrs[i]);
	dc->nself = dc->nown;
	load_siblings(dc, cf_str(cf, P_sibling_table));
	const char *rh = cf_str(cf, P_relayhost);
	if (*rh)
		dc->has_relay = nexthop_parse(rh, NH_SMTP, &dc->relay, err, sizeof err);
	return dc;
}

/* own_in: a among own[0..n). */
static bool own_in(const struct dconf *dc, size_t n, const struct ipaddr *a)
{
	struct ipaddr u;

	ipaddr_unmap(a, &u);
	for (size_t i = 0; i < n; i++) {
		struct ipaddr o;
		ipaddr_unmap(&dc->own[i], &o);
		if (ipaddr_equal(&o, &u))
			return true;
	}
	return false;
}

/* is_own: one of our addresses or a sibling's (loop detection). */
static bool is_own(const struct dconf *dc, const struct ipaddr *a) { return own_in(dc, dc->nown, a); }
static bool is_self(const struct dconf *dc, const struct ipaddr *a) { return own_in(dc, dc->nself, a); }

/* ---- recipients: results and log lines -------------------------------- */

static const char *rcpt_domain(const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');

	return at ? at + 1 : "";
}

/* log_rcpt: the delivery line of one recipient; tls: the connection's
 * smtpc_tls_summary, or NULL when the result came from no connection. */
static void log_rcpt(const struct amsg *m, size_t i, const char *relay, const char *tls,
		     uint64_t b_us, uint64_t c_us, uint64_t d_us, const char *dsn,
		     const char *status, const char *text)
{
	uint64_t now = now_real();
	char total[24], a[24], b[24], c[24], d[24];
	struct buf safe = BUF_INIT, rcpt = BUF_INIT;

	buf_put_printable(&safe, text, strnlen(text, SMTPC_TEXT_MAX));
	buf_put_printable(&rcpt, m->q.rcpts[i], strlen(m->q.rcpts[i]));
	secs(total, sizeof total, since(m->q.time_us, now));
	secs(a, sizeof a, since(m->q.time_us, m->active_us));
	secs(b, sizeof b, b_us);
	secs(c, sizeof c, c_us);
	secs(d, sizeof d, d_us);
	msg_info("%s: to=<%s>, relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s, status=%s (%s)%s%s",
		 m->q.id, buf_cstr(&rcpt), relay, total, a, b, c, d, dsn, status, buf_cstr(&safe),
		 tls ? ", tls=" : "", tls ? tls : "");
	buf_free(&safe);
	buf_free(&rcpt);
}

static void rcpt_close(struct amsg *m, size_t i, enum rstate st)
{
	if (m->st[i] == R_TODO || m->st[i] == R_BUSY)
		m->nleft--;
	m->st[i] = (unsigned char)st;
}

static void rcpt_defer(struct amsg *m, size_t i, const char *why)
{
	free(m->why[i]);
	m->why[i] = xstrdup(why);
	rcpt_close(m, i, R_DEFER);
}

static void rcpt_fail(struct amsg *m, size_t i, const char *dsn, const char *remote,
		      const char *diag, const char *text)
{
	struct fail *f;

	m->fails = xreallocarray(m->fails, m->nfails + 1, sizeof *m->fails);
	f = &m->fails[m->nfails++];
	f->rcpt = i;
	snprintf(f->dsn, sizeof f->dsn, "%s", dsn);
	f->remote = remote ? xstrdup(remote) : NULL;
	f->diag = diag && *diag ? xstrdup(diag) : NULL;
	f->text = xstrdup(text);
	rcpt_close(m, i, R_DONE);
}

/* rcpt_result: one recipient's outcome, logged. perm: a bounce unless
 * soft_bounce says to defer. relay: "host[ip]:port" or "none"; tls: as
 * in log_rcpt. */
static void rcpt_result(struct amsg *m, size_t i, int code, const char *dsn, const char *relay,
			const char *tls, const char *remote, const char *diag, const char *text,
			uint64_t b_us, uint64_t c_us, uint64_t d_us)
{
	const struct cf *cf = CF(m->f->q->dc);
	char sdsn[12];

	if (code >= 200 && code < 300) {
		log_rcpt(m, i, relay, tls, b_us, c_us, d_us, dsn, "sent", text);
		rcpt_close(m, i, R_DONE);
		return;
	}
	if (code >= 500 && cf_num(cf, P_soft_bounce)) {
		snprintf(sdsn, sizeof sdsn, "4%s", dsn + 1);
		dsn = sdsn;
		code = 400;
	}
	if (code >= 500) {
		log_rcpt(m, i, relay, tls, b_us, c_us, d_us, dsn, "bounced", text);
		rcpt_fail(m, i, dsn, remote, diag, text);
	} else {
		log_rcpt(m, i, relay, tls, b_us, c_us, d_us, dsn, "deferred", text);
		rcpt_defer(m, i, text);
	}
}

/* ---- finishing messages and files ------------------------------------ */

static void afile_free(struct afile *f)
{
	for (size_t i = 0; i < f->nmsgs; i++) {
		struct amsg *m = &f->msgs[i];
		for (size_t k = 0; k < m->q.nrcpts; k++)
			free(m->why[k]);
		for (size_t k = 0; k < m->nfails; k++) {
			free(m->fails[k].remote);
			free(m->fails[k].diag);
			free(m->fails[k].text);
		}
		free(m->fails);
		free(m->why);
		free(m->st);
		qmsg_free(&m->q);
	}
	free(f->msgs);
	if (f->fd >= 0)
		close(f->fd);
	free(f);
}

static uint64_t lifetime_us(const struct amsg *m)
{
	const struct cf *cf = CF(m->f->q->dc);

	return (uint64_t)cf_num(cf, m->q.sender[0] ? P_maximal_queue_lifetime
				: P_bounce_queue_lifetime) * USEC;
}

/* expire: deferred recipients of a message past its lifetime bounce. */
static void expire(struct amsg *m, uint64_t now)
{
	char text[SMTPC_TEXT_MAX + 64];

	if (since(m->q.time_us, now) < lifetime_us(m))
		return;
	for (size_t i = 0; i < m->q.nrcpts; i++) {
		if (m->st[i] != R_DEFER)
			continue;
		snprintf(text, sizeof text, "message expired: %s", m->why[i] ? m->why[i] : "");
		struct buf r = BUF_INIT;
		buf_put_printable(&r, m->q.rcpts[i], strlen(m->q.rcpts[i]));
		msg_info("%s: to=<%s>, relay=none, delay=%llu, dsn=4.4.7, status=expired, "
			 "returned to sender (%s)", m->q.id, buf_cstr(&r),
			 (unsigned long long)(since(m->q.time_us, now) / USEC),
			 m->why[i] ? m->why[i] : "");
		buf_free(&r);
		m->st[i] = R_TODO; /* rcpt_fail closes it */
		m->nleft++;
		rcpt_fail(m, i, "4.4.7", NULL, NULL, text);
	}
}

/* notify: the sender's DSN for the failed (or, for a delay warning, the
 * deferred) recipients; false when it could not be queued. */
static bool notify(struct amsg *m, enum bounce_kind kind)
{
	struct qmgr *q = m->f->q;
	struct bounce_rcpt *r;
	size_t n = 0;
	char id[QID_LEN + 1];
	bool ok;

	if (m->q.sender[0] == 0) {
		if (kind == BOUNCE_FAILED)
			msg_info("%s: undeliverable notification from <>: discarded", m->q.id);
		return true;
	}
	r = xcalloc(m->q.nrcpts + m->nfails + 1, sizeof *r);
	if (kind == BOUNCE_FAILED) {
		for (size_t i = 0; i < m->nfails; i++)
			r[n++] = (struct bounce_rcpt){ m->q.rcpts[m->fails[i].rcpt], m->fails[i].dsn,
						       m->fails[i].remote, m->fails[i].diag,
						       m->fails[i].text };
	} else {
		for (size_t i = 0; i < m->q.nrcpts; i++)
			if (m->st[i] == R_DEFER)
				r[n++] = (struct bounce_rcpt){ m->q.rcpts[i], "4.0.0", NULL, NULL,
							       m->why[i] ? m->why[i] : "" };
	}
	struct bounce_msg b = { &m->q, m->f->fd, kind, r, n };
	ok = n == 0 || bounce_write(q->queue, CF(q->dc), &b, NULL, NULL, id);
	free(r);
	return ok;
}

/* backoff: the wait before attempt tries + 1: minimal_backoff_time,
 * doubling, at most maximal_backoff_time. */
static uint64_t backoff_us(const struct cf *cf, unsigned tries)
{
	uint64_t lo = (uint64_t)cf_num(cf, P_minimal_backoff_time) * USEC;
	uint64_t hi = (uint64_t)cf_num(cf, P_maximal_backoff_time) * USEC;
	uint64_t d = lo;

	for (unsigned i = 1; i < tries && d < hi; i++)
		d *= 2;
	return d < hi ? d : hi < lo ? lo : hi;
}

static void retry_arm(struct qmgr *q);

static void def_add(struct qmgr *q, const char *name, uint64_t next, size_t nmsgs)
{
	for (size_t i = 0; i < q->ndef; i++)
		if (strcmp(q->def[i].name, name) == 0) {
			q->def[i].next_us = next;
			q->def[i].nmsgs = nmsgs;
			return;
		}
	q->def = xreallocarray(q->def, q->ndef + 1, sizeof *q->def);
	snprintf(q->def[q->ndef].name, sizeof q->def[q->ndef].name, "%s", name);
	q->def[q->ndef].next_us = next;
	q->def[q->ndef].nmsgs = nmsgs;
	q->ndef++;
}

static void file_unlink(struct afile *f)
{
	struct qmgr *q = f->q;

	if (f->prev)
		f->prev->next = f->next;
	else
		q->files = f->next;
	if (f->next)
		f->next->prev = f->prev;
	q->nactive -= f->nmsgs;
}

/* dest_at: slot i of the destination table (for i < q->dests.cap), or
 * NULL for an empty slot. */
static struct dest *dest_at(const struct qmgr *q, size_t i)
{
	return q->dests.keys[i] ? q->dests.vals[i] : NULL;
}

static void dest_free(struct dest *d)
{
	free(d->targets);
	free(d->dead_why);
	free(d->key);
	free(d);
}

/* dest_sweep (from on_kick only): forget destinations with nothing
 * queued, no connection, no lookup, and no DNS answer or dead mark still
 * in force, so memory follows the mail under way, not every domain ever
 * seen. */
static void dest_sweep(struct qmgr *q)
{
	uint64_t now = now_mono(q);
	struct htab keep;

	if (now < q->next_sweep)
		return;
	q->next_sweep = now + SWEEP_US;
	htab_init(&keep, true);
	for (size_t i = 0; i < q->dests.cap; i++) {
		struct dest *d = dest_at(q, i);
		if (d == NULL)
			continue;
		if (d->njobs == 0 && d->nconns == 0 && d->query == NULL &&
		    d->resolved_until <= now && d->dead_until <= now)
			dest_free(d);
		else
			htab_insert(&keep, d->key, d);
	}
	htab_free(&q->dests);
	q->dests = keep;
}

/* file_finish: every message of f is finished for this pass: remove the
 * file, or rewrite what is left into deferred/. Bounces queued for its
 * messages are committed first. */
static void file_finish(struct afile *f)
{
	struct qmgr *q = f->q;
	const struct cf *cf = CF(q->dc);
	struct qdefer *v = xcalloc(f->nmsgs, sizeof *v);
	bool **keep = xcalloc(f->nmsgs, sizeof *keep);
	size_t n = 0, touched = 0;
	uint64_t now = now_real(), next = 0;
	char newname[QID_LEN + 1];

	if (queue_pending(q->queue) > 0)
		queue_flush(q->queue); /* the bounces, before their cause goes */
	for (size_t i = 0; i < f->nmsgs; i++) {
		struct amsg *m = &f->msgs[i];
		bool any = false, tried = false;
		keep[i] = xcalloc(m->q.nrcpts, sizeof **keep);
		for (size_t k = 0; k < m->q.nrcpts; k++) {
			keep[i][k] = m->st[k] == R_DEFER || m->st[k] == R_KEEP;
			any |= keep[i][k];
			tried |= m->st[k] != R_KEEP;
		}
		touched += tried;
		if (!any) {
			msg_info("%s: removed", m->q.id);
			continue;
		}
		unsigned tries = m->q.tries + (tried ? 1 : 0);
		const char *why = m->q.reason;
		for (size_t k = 0; k < m->q.nrcpts; k++)
			if (m->st[k] == R_DEFER && m->why[k])
				why = m->why[k];
		uint64_t at = tried ? now + backoff_us(cf, tries) : 0;
		if (n == 0 || at < next)
			next = at;
		v[n++] = (struct qdefer){ &m->q, keep[i], tries, at, m->q.warned, why };
	}
	file_unlink(f);
	if (touched == 0) {
		/* Nothing was attempted (stopping): the file stays as it is. */
		if (f->dir == QDIR_DEFERRED)
			def_add(q, f->name, f->msgs[0].q.next_us, f->nmsgs);
	} else if (queue_defer(q->queue, f->fd, v, n, f->dir, f->name, f->nmsgs, newname)) {
		if (n > 0)
			def_add(q, newname, next, n);
	} else if (f->dir == QDIR_DEFERRED) {
		def_add(q, f->name, now + backoff_us(cf, 1), f->nmsgs);
	} else {
		/* The old file stays in incoming/: tried again after a restart. */
		msg_warn("%s: left in incoming/ until the next start", f->name);
	}
	for (size_t i = 0; i < f->nmsgs; i++)
		free(keep[i]);
	free(keep);
	free(v);
	afile_free(f);
	retry_arm(q);
	sd_event_source_set_enabled(q->kick, SD_EVENT_ONESHOT); /* not recursively */
	if (q->hook_fn)
		q->hook_fn(q->hook_ctx);
}

/* msg_finish: every recipient of m is finished for this pass. */
static void msg_finish(struct amsg *m)
{
	struct qmgr *q = m->f->q;
	const struct cf *cf = CF(q->dc);
	uint64_t now = now_real();
	bool deferred = false;

	m->finished = true;
	expire(m, now);
	if (m->nfails > 0 && !notify(m, BOUNCE_FAILED)) {
		/* No bounce could be queued: keep the failed recipients. */
		for (size_t i = 0; i < m->nfails; i++) {
			size_t k = m->fails[i].rcpt;
			free(m->why[k]);
			m->why[k] = xstrdup(m->fails[i].text);
			m->st[k] = R_DEFER;
		}
	}
	for (size_t i = 0; i < m->q.nrcpts; i++)
		deferred |= m->st[i] == R_DEFER;
	uint64_t warn = (uint64_t)cf_num(cf, P_delay_warning_time) * USEC;
	if (deferred && warn > 0 && !m->q.warned && since(m->q.time_us, now) >= warn &&
	    notify(m, BOUNCE_DELAYED))
		m->q.warned = true;
	if (--m->f->nopen == 0)
		file_finish(m->f);
}

static void msg_check(struct amsg *m)
{
	if (m->nleft == 0 && !m->finished)
		msg_finish(m);
}

/* ---- destinations ----------------------------------------------------- */

static void job_free(struct job *j)
{
	free(j->idx);
	free(j);
}

static struct job *dest_pop(struct dest *d)
{
	struct job *j = d->head;

	if (j) {
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		d->njobs--;
		j->next = NULL;
	}
	return j;
}

/* fail_jobs: every queued job of d gets this outcome. */
static void fail_jobs(struct dest *d, int code, const char *dsn, const char *text)
{
	struct job *j;

	while ((j = dest_pop(d)) != NULL) {
		struct amsg *m = j->m;
		uint64_t now = now_real();
		for (size_t k = 0; k < j->n; k++)
			if (m->st[j->idx[k]] == R_TODO)
				rcpt_result(m, j->idx[k], code, dsn, "none", NULL, NULL, NULL, text,
					    since(m->active_us, now), 0, 0);
		job_free(j);
		msg_check(m);
	}
}

static struct dest *dest_get(struct qmgr *q, const char *key, const struct nexthop *nh,
			     const char *domain, bool check_loop, bool check_self)
{
	struct dest *d = htab_get(&q->dests, key);

	if (d)
		return d;
	d = xcalloc(1, sizeof *d);
	d->key = xstrdup(key);
	d->nh = *nh;
	snprintf(d->domain, sizeof d->domain, "%s", domain);
	d->check_loop = check_loop;
	d->check_self = check_self;
	d->mgr = q;
	htab_insert(&q->dests, d->key, d);
	return d;
}

static void dest_enqueue(struct dest *d, struct job *j)
{
	if (d->tail)
		d->tail->next = j;
	else
		d->head = j;
	d->tail = j;
	d->njobs++;
}

/* ---- connections ------------------------------------------------------ */

static void conn_free(struct oconn *oc)
{
	struct dest *d = oc->d;

	d->nconns--;
	d->mgr->conns--;
	if (oc->all_prev)
		oc->all_prev->all_next = oc->all_next;
	else
		d->mgr->all = oc->all_next;
	if (oc->all_next)
		oc->all_next->all_prev = oc->all_prev;
	if (oc->state == O_CONNECTING)
		d->nconnecting--;
	oc->timer = sd_event_source_disable_unref(oc->timer);
	dconf_unref(oc->dc);
	free(oc->targets);
	free(oc->rcpts);
	free(oc->ridx);
	free(oc);
}

static void idle_remove(struct oconn *oc)
{
	for (struct oconn **p = &oc->d->idle; *p; p = &(*p)->next_idle)
		if (*p == oc) {
			*p = oc->next_idle;
			break;
		}
	oc->next_idle = NULL;
}

static void busy_dec(struct qmgr *q)
{
	if (--q->busy == 0 && q->hook_fn)
		q->hook_fn(q->hook_ctx);
}

static const struct smtpc_ops conn_ops;

static bool conn_try(struct oconn *oc);

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct oconn *oc = userdata;
	(void)s; (void)usec;

	idle_remove(oc);
	smtpc_quit(oc->c);
	conn_free(oc);
	return 0;
}

/* conn_send: the next job of the destination, or idle. */
static void conn_next(struct oconn *oc);

static bool conn_send(struct oconn *oc, struct job *j)
{
	struct amsg *m = j->m;
	size_t n = 0;

	oc->rcpts = xreallocarray(oc->rcpts, j->n, sizeof *oc->rcpts);
	oc->ridx = xreallocarray(oc->ridx, j->n, sizeof *oc->ridx);
	for (size_t k = 0; k < j->n; k++) {
		size_t i = j->idx[k];
		if (m->st[i] != R_TODO)
			continue; /* removed meanwhile */
		m->st[i] = R_BUSY;
		memset(&oc->rcpts[n], 0, sizeof oc->rcpts[n]);
		oc->rcpts[n].addr = m->q.rcpts[i];
		oc->ridx[n++] = i;
	}
	if (n == 0) {
		job_free(j);
		msg_check(m);
		return false;
	}
	oc->job = j;
	oc->txn = (struct smtpc_txn){ m->q.id, m->q.sender, false, m->q.data_len, m->f->fd,
				      m->q.data_offset, n, oc->rcpts };
	for (size_t i = 0; i < m->q.nattrs; i++)
		if (ascii_strcasecmp(m->q.attrs[i], "BODY=8BITMIME") == 0)
			oc->txn.body_8bit = true;
	oc->state = O_BUSY;
	oc->send_us = now_real();
	oc->d->mgr->busy++;
	smtpc_send(oc->c, &oc->txn);
	return true;
}

static void conn_next(struct oconn *oc)
{
	struct dest *d = oc->d;
	struct qmgr *q = d->mgr;
	struct job *j;

	while (!q->stopping && (j = dest_pop(d)) != NULL)
		if (conn_send(oc, j))
			return;
	uint64_t limit = (uint64_t)cf_num(CF(q->dc), P_smtp_connection_cache_time_limit) * USEC;
	if (q->stopping || limit == 0) {
		smtpc_quit(oc->c);
		conn_free(oc);
		return;
	}
	oc->state = O_IDLE;
	oc->next_idle = d->idle;
	d->idle = oc;
	oc->timer = sd_event_source_disable_unref(oc->timer);
	if (sd_event_add_time_relative(q->event, &oc->timer, CLOCK_MONOTONIC, limit, USEC / 10,
				       on_idle_timer, oc) < 0) {
		idle_remove(oc);
		smtpc_quit(oc->c);
		conn_free(oc);
	}
}

static void on_ready(void *ctx, struct smtpc *c)
{
	struct oconn *oc = ctx;

	oc->state = O_IDLE; /* counted as connecting no more */
	oc->d->nconnecting--;
	oc->ready_us = now_real();
	conn_next(oc);
}

static int on_after_done(sd_event_source *s, void *userdata)
{
	struct oconn *oc = userdata;
	(void)s;

	oc->timer = sd_event_source_disable_unref(oc->timer);
	conn_next(oc);
	return 0;
}

static void on_done(void *ctx, struct smtpc *c, struct smtpc_txn *t)
{
	struct oconn *oc = ctx;
	struct job *j = oc->job;
	struct amsg *m = j->m;
	uint64_t now = now_real();
	uint64_t b = since(m->active_us, oc->fresh ? oc->start_us : oc->send_us);
	uint64_t cc = oc->fresh ? since(oc->start_us, oc->ready_us) : 0;
	uint64_t dd = since(oc->send_us, now);
	const char *relay = smtpc_peer(c);
	struct qmgr *q = oc->d->mgr;

	for (size_t k = 0; k < t->nrcpts; k++) {
		const struct smtpc_result *r = &t->rcpts[k].res;
		rcpt_result(m, oc->ridx[k], r->code, r->dsn[0] ? r->dsn : "4.0.0", relay,
			    smtpc_tls_summary(c), oc->targets[oc->ti].host, r->reply, r->text, b, cc, dd);
	}
	oc->job = NULL;
	oc->fresh = false;
	oc->state = O_QUITTING; /* until on_after_done, unless closed() first */
	job_free(j);
	busy_dec(q);
	msg_check(m);
	/* The connection may be gone right after this returns (closed());
	 * the next transaction starts from the loop. */
	if (sd_event_add_defer(q->event, &oc->timer, on_after_done, oc) < 0) {
		smtpc_abort(c);
		conn_free(oc);
	}
}

/* conn_failed: every address of the connection failed. */
static void conn_failed(struct oconn *oc)
{
	struct dest *d = oc->d;
	struct qmgr *q = d->mgr;
	struct smtpc_result last = oc->last, *r = &last;
	bool alive = d->nconns > 1; /* another connection may take the jobs */
	char text[SMTPC_TEXT_MAX];

	snprintf(text, sizeof text, "%s", r->text[0] ? r->text : "connection failed");
	conn_free(oc);
	if (alive || d->njobs == 0)
		return;
	/* Mark the destination dead for a while: new mail for it is
	 * deferred at once instead of waiting for connections to fail. */
	uint64_t dead = (uint64_t)cf_num(CF(q->dc), P_minimal_backoff_time) * USEC;
	d->dead_until = now_mono(q) + (dead < DEAD_MAX_US ? dead : DEAD_MAX_US);
	free(d->dead_why);
	d->dead_why = xstrdup(text);
	bool perm = r->code >= 500;
	const char *dsn = r->dsn[0] ? r->dsn : perm ? "5.0.0" : "4.4.1";
	snprintf(d->dead_dsn, sizeof d->dead_dsn, "%.11s", dsn);
	d->dead_dsn[0] = '4';
	fail_jobs(d, perm ? r->code : 0, dsn, text);
}

static void on_closed(void *ctx, struct smtpc *c, const struct smtpc_result *why)
{
	struct oconn *oc = ctx;
	(void)c;

	switch (oc->state) {
	case O_CONNECTING:
		oc->last = *why;
		oc->ti++;
		if (oc->ti < oc->ntargets && !oc->d->mgr->stopping && conn_try(oc))
			return;
		conn_failed(oc);
		return;
	case O_IDLE:
		idle_remove(oc);
		conn_free(oc);
		return;
	case O_QUITTING: /* right after done(): the next step is cancelled */
	case O_BUSY:
		conn_free(oc);
		return;
	}
}

static const struct smtpc_ops conn_ops = { on_ready, on_done, on_closed };

/* conn_try: connect to the current target, from the source address of
 * its family. */
static bool conn_try(struct oconn *oc)
{
	struct dest *d = oc->d;
	struct dconf *dc = oc->dc;
	struct sockaddr_storage ss;
	socklen_t len;
	const struct sockaddr *bind = NULL;
	socklen_t blen = 0;
	const struct target *t = &oc->targets[oc->ti];

	if (d->nh.kind == NH_UNIX) {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;
		memset(un, 0, sizeof *un);
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof un->sun_path, "%s", d->nh.path);
		len = sizeof *un;
	} else {
		ipaddr_to_sockaddr(&t->ip, d->nh.port, &ss, &len);
		if (t->ip.family == AF_INET && dc->bind4) {
			bind = (const struct sockaddr *)&dc->b4;
			blen = dc->b4len;
		} else if (t->ip.family == AF_INET6 && dc->bind6) {
			bind = (const struct sockaddr *)&dc->b6;
			blen = dc->b6len;
		}
	}
	oc->c = smtpc_connect(d->mgr->event, d->nh.proto == NH_LMTP ? &dc->lmtp : &dc->smtp,
			      &conn_ops, oc, t->host, (struct sockaddr *)&ss, len, bind, blen);
	return oc->c != NULL;
}

static void conn_open(struct dest *d)
{
	struct qmgr *q = d->mgr;
	struct oconn *oc = xcalloc(1, sizeof *oc);

	oc->d = d;
	oc->dc = q->dc;
	q->dc->refs++;
	oc->state = O_CONNECTING;
	oc->fresh = true;
	oc->start_us = now_real();
	oc->targets = xreallocarray(NULL, d->ntargets, sizeof *oc->targets);
	memcpy(oc->targets, d->targets, d->ntargets * sizeof *oc->targets);
	oc->ntargets = d->ntargets;
	d->nconns++;
	d->nconnecting++;
	q->conns++;
	oc->all_next = q->all;
	if (q->all)
		q->all->all_prev = oc;
	q->all = oc;
	if (!conn_try(oc)) {
		snprintf(oc->last.text, sizeof oc->last.text, "cannot start a connection");
		conn_failed(oc);
	}
}

/* ---- DNS -------------------------------------------------------------- */

/* order_targets: the addresses to try, in MX preference order, the
 * preferred family first within a host, at most smtp_mx_address_limit. */
static void set_targets(struct dest *d, const struct dns_result *r)
{
	const struct cf *cf = CF(d->mgr->dc);
	const char *pref = cf_str(cf, P_smtp_address_preference);
	long long limit = cf_num(cf, P_smtp_mx_address_limit);
	int first = strcmp(pref, "ipv6") == 0 ? AF_INET6 : AF_INET;

	free(d->targets);
	d->targets = NULL;
	d->ntargets = 0;
	for (size_t h = 0; h < r->nhosts; h++) {
		const struct dns_host *dh = &r->hosts[h];
		for (int pass = 0; pass < 2; pass++)
			for (size_t a = 0; a < dh->naddrs; a++) {
				bool mine = (dh->addrs[a].family == first) == (pass == 0);
				if (!mine || (limit > 0 && d->ntargets >= (size_t)limit))
					continue;
				d->targets = xreallocarray(d->targets, d->ntargets + 1,
							   sizeof *d->targets);
				struct target *t = &d->targets[d->ntargets++];
				snprintf(t->host, sizeof t->host, "%s", dh->name);
				t->ip = dh->addrs[a];
			}
	}
}

/* loop_cut: the hosts to use, cut at the first one that is us (RFC 5321
 * 5.1: only MX hosts more preferred than ourselves). Returns how many
 * hosts remain. */
static size_t loop_cut(const struct dconf *dc, const struct dns_result *r)
{
	for (size_t h = 0; h < r->nhosts; h++)
		for (size_t a = 0; a < r->hosts[h].naddrs; a++)
			if (is_own(dc, &r->hosts[h].addrs[a])) {
				size_t k = h;
				while (k > 0 && r->hosts[k - 1].pref == r->hosts[h].pref)
					k--;
				return k;
			}
	return r->nhosts;
}

/* self_hop: a next hop that is this instance's own listener: mail sent
 * there would come straight back. */
static bool self_hop(const struct dconf *dc, const struct dest *d, const struct dns_result *r)
{
	if (d->nh.port != (uint16_t)cf_num(&dc->sc->cf, P_smtpd_listen_port))
		return false;
	for (size_t h = 0; h < r->nhosts; h++)
		for (size_t a = 0; a < r->hosts[h].naddrs; a++)
			if (is_self(dc, &r->hosts[h].addrs[a]))
				return true;
	return false;
}

static void on_dns(void *ctx, const struct dns_result *r)
{
	struct dest *d = ctx;
	struct qmgr *q = d->mgr;
	char text[SMTPC_TEXT_MAX];

	d->query = NULL;
	switch (r->status) {
	case DNS_OK:
		break;
	case DNS_NULLMX:
		fail_jobs(d, 550, "5.1.10", r->reason);
		return;
	case DNS_NOTFOUND:
		fail_jobs(d, 550, "5.4.4", r->reason);
		return;
	case DNS_TEMP:
		if (d->ntargets > 0) {
			/* Keep the addresses we had a while longer. */
			d->resolved_until = now_mono(q) + DNS_CACHE_US / 4;
			dest_kick(d);
			return;
		}
		fail_jobs(d, 0, "4.4.3", r->reason);
		return;
	}
	struct dns_result cut = *r;
	if (d->check_loop)
		cut.nhosts = loop_cut(q->dc, r);
	else if (d->check_self && self_hop(q->dc, d, r))
		cut.nhosts = 0;
	if (cut.nhosts == 0) {
		snprintf(text, sizeof text, "mail for %s loops back to myself", d->domain);
		fail_jobs(d, 554, "5.4.6", text);
		return;
	}
	set_targets(d, &cut);
	if (d->ntargets == 0) {
		snprintf(text, sizeof text, "no usable address for %s (address families)", d->domain);
		fail_jobs(d, 0, "4.4.4", text);
		return;
	}
	d->resolved_until = now_mono(q) + DNS_CACHE_US;
	dest_kick(d);
}

/* dest_resolve: the destination's addresses, from the next hop itself
 * (an IP address, a Unix socket) or from DNS. */
static void dest_resolve(struct dest *d)
{
	struct qmgr *q = d->mgr;
	int fam = q->dc->families;

	if (d->query)
		return;
	if (d->nh.kind == NH_UNIX || d->nh.is_ip) {
		struct dns_host h = { .pref = 0, .naddrs = 0 };
		struct dns_result r = { .status = DNS_OK, .nhosts = 1, .hosts = &h };
		snprintf(h.name, sizeof h.name, "%s", d->nh.kind == NH_UNIX ? "localhost"
			 : d->nh.host);
		if (d->nh.kind == NH_UNIX) {
			h.naddrs = 1; /* a placeholder: conn_try uses the path */
			h.addrs[0].family = AF_INET;
		} else if ((d->nh.ip.family == AF_INET && (fam & DNS_V4)) ||
			   (d->nh.ip.family == AF_INET6 && (fam & DNS_V6))) {
			h.naddrs = 1;
			h.addrs[0] = d->nh.ip;
		}
		on_dns(d, &r);
		return;
	}
	if (d->nh.mx)
		d->query = dns_mx(q->dns, d->nh.host, fam, on_dns, d);
	else
		d->query = dns_host(q->dns, d->nh.host, fam, on_dns, d);
	if (d->query == NULL)
		fail_jobs(d, 0, "4.3.0", "cannot start a DNS lookup");
}

/* dest_kick: hand queued jobs to idle connections, open more up to the
 * concurrency limit, or fail them when the destination is known dead. */
static void dest_kick(struct dest *d)
{
	struct qmgr *q = d->mgr;
	const struct cf *cf = CF(q->dc);

	if (q->stopping)
		return;
	while (d->head && d->idle) {
		struct oconn *oc = d->idle;
		idle_remove(oc);
		oc->timer = sd_event_source_disable_unref(oc->timer);
		struct job *j = dest_pop(d);
		if (!conn_send(oc, j))
			conn_next(oc);
	}
	if (d->head == NULL)
		return;
	uint64_t now = now_mono(q);
	if (d->dead_until > now && d->nconns == 0) {
		fail_jobs(d, 0, d->dead_dsn[0] ? d->dead_dsn : "4.4.1",
			  d->dead_why ? d->dead_why : "destination unreachable");
		return;
	}
	if (d->resolved_until <= now) {
		dest_resolve(d); /* the old addresses serve meanwhile, if any */
		if (d->ntargets == 0 || d->nh.kind == NH_UNIX || d->nh.is_ip)
			return;
	}
	size_t limit = (size_t)cf_num(cf, P_smtp_destination_concurrency_limit);
	while (d->nconns < limit && d->njobs > d->nconnecting)
		conn_open(d);
}

/* ---- routing ---------------------------------------------------------- */

/* route: the destination of one recipient. */
static struct dest *route(struct qmgr *q, const char *rcpt, char *err, size_t errlen)
{
	const struct dconf *dc = q->dc;
	char domain[256];
	struct nexthop nh;
	struct buf key = BUF_INIT;
	const char *hop;
	struct dest *d;
	size_t n = strlen(rcpt_domain(rcpt));

	if (n == 0 || n >= sizeof domain) {
		/* postmaster without a domain (RFC 5321 4.5.1): the instance
		 * has no mailboxes of its own. */
		snprintf(err, errlen, "no local delivery on this instance (the recipient has no domain)");
		return NULL;
	}
	for (size_t i = 0; i <= n; i++)
		domain[i] = ascii_tolower(rcpt_domain(rcpt)[i]);
	bool check_loop = true;
	if ((hop = policy_nexthop(&dc->sc->policy, domain)) != NULL) {
		if (!nexthop_parse(hop, NH_SMTP, &nh, err, errlen))
			return NULL;
		check_loop = false;
		buf_puts(&key, "T ");
	} else if (dc->has_relay) {
		nh = dc->relay;
		buf_puts(&key, "R ");
	} else if (domain[0] == '[') {
		struct ipaddr a;
		if (!ipaddr_parse(domain, n, &a)) {
			snprintf(err, errlen, "bad address literal");
			return NULL;
		}
		memset(&nh, 0, sizeof nh);
		nh.proto = NH_SMTP;
		nh.kind = NH_INET;
		nh.is_ip = true;
		nh.ip = a;
		nh.port = 25;
		ipaddr_format(&a, nh.host);
		buf_puts(&key, "L ");
	} else {
		char spec[300];
		snprintf(spec, sizeof spec, "smtp:%s", domain);
		if (!nexthop_parse(spec, NH_SMTP, &nh, err, errlen))
			return NULL;
		buf_puts(&key, "M ");
	}
	nexthop_format(&nh, &key);
	/* As in Postfix, only MX hosts are checked against ourselves: a
	 * "[host]" next hop is what the admin wrote, and may well be a
	 * sibling instance (a smarthost on the same machine). */
	bool mx = nh.kind == NH_INET && nh.mx;
	d = dest_get(q, buf_cstr(&key), &nh, mx ? nh.host : domain, check_loop && mx,
		     check_loop && !mx && nh.kind == NH_INET);
	buf_free(&key);
	return d;
}

/* ---- activating files ------------------------------------------------- */

/* msg_route: one job per destination of m (recipient_limit recipients
 * at most each); the destinations touched are collected in touched. */
static void msg_route(struct qmgr *q, struct amsg *m, struct dest ***touched, size_t *ntouched)
{
	size_t rlimit = (size_t)cf_num(CF(q->dc), P_smtp_destination_recipient_limit);
	struct dest **dd = xcalloc(m->q.nrcpts, sizeof *dd);
	char err[256];

	for (size_t i = 0; i < m->q.nrcpts; i++) {
		if (m->st[i] != R_TODO)
			continue;
		dd[i] = route(q, m->q.rcpts[i], err, sizeof err);
		if (dd[i] == NULL)
			rcpt_result(m, i, 550, "5.1.2", "none", NULL, NULL, NULL, err, 0, 0, 0);
	}
	for (size_t i = 0; i < m->q.nrcpts; i++) {
		if (dd[i] == NULL)
			continue;
		struct dest *d = dd[i];
		struct job *j = NULL;
		for (size_t k = i; k < m->q.nrcpts; k++) {
			if (dd[k] != d)
				continue;
			if (j == NULL || j->n == rlimit) {
				j = xcalloc(1, sizeof *j);
				j->m = m;
				j->idx = xreallocarray(NULL, rlimit < m->q.nrcpts ? rlimit : m->q.nrcpts,
						       sizeof *j->idx);
				dest_enqueue(d, j);
			}
			j->idx[j->n++] = k;
			dd[k] = NULL;
		}
		*touched = xreallocarray(*touched, *ntouched + 1, sizeof **touched);
		(*touched)[(*ntouched)++] = d;
	}
	free(dd);
}

static void file_activate(struct qmgr *q, enum qdir dir, const char *name)
{
	struct qmsg *msgs;
	size_t n;
	int fd;
	struct dest **touched = NULL;
	size_t ntouched = 0;
	uint64_t now = now_real();

	if (!queue_load(q->queue, dir, name, &fd, &msgs, &n))
		return;
	struct afile *f = xcalloc(1, sizeof *f);
	f->q = q;
	snprintf(f->name, sizeof f->name, "%s", name);
	f->dir = dir;
	f->fd = fd;
	f->msgs = xcalloc(n, sizeof *f->msgs);
	f->nmsgs = f->nopen = n;
	f->next = q->files;
	if (q->files)
		q->files->prev = f;
	q->files = f;
	q->nactive += n;
	for (size_t i = 0; i < n; i++) {
		struct amsg *m = &f->msgs[i];
		m->q = msgs[i];
		m->f = f;
		m->st = xcalloc(m->q.nrcpts, 1);
		m->why = xcalloc(m->q.nrcpts, sizeof *m->why);
		m->nleft = m->q.nrcpts;
		m->active_us = now;
		struct buf s = BUF_INIT;
		buf_put_printable(&s, m->q.sender, strlen(m->q.sender));
		msg_info("%s: from=<%s>, size=%" PRIu64 ", nrcpt=%zu (queue active)", m->q.id,
			 buf_cstr(&s), m->q.data_len, m->q.nrcpts);
		buf_free(&s);
	}
	free(msgs); /* the contents moved into f */
	for (size_t i = 0; i < n; i++)
		msg_route(q, &f->msgs[i], &touched, &ntouched);
	/* Messages all of whose recipients failed routing finish here; the
	 * last one may free f. */
	size_t nmsgs = f->nmsgs;
	struct amsg *last = &f->msgs[nmsgs - 1];
	for (size_t i = 0; i + 1 < nmsgs; i++)
		msg_check(&f->msgs[i]);
	msg_check(last);
	for (size_t i = 0; i < ntouched; i++)
		dest_kick(touched[i]);
	free(touched);
}

/* LOAD_BATCH: files activated per turn of the event loop. Activating a
 * file reads it, and for a dead destination rewrites it into deferred/
 * at once: thousands of them in one go would keep the loop from the
 * sessions for seconds. The rest waits for the next turn. */
#define LOAD_BATCH 64

/* load_some: activate waiting files while under the active limit: new
 * mail first, then deferred mail that is due; at most LOAD_BATCH now. */
static void load_some(struct qmgr *q)
{
	size_t limit = (size_t)cf_num(CF(q->dc), P_qmgr_message_active_limit);
	uint64_t now = now_real();
	size_t done = 0;

	while (!q->stopping && q->nactive < limit && q->backlog_head < q->nbacklog &&
	       done < LOAD_BATCH) {
		char *name = q->backlog[q->backlog_head];
		q->backlog[q->backlog_head++] = NULL;
		if (*name) /* "" for a file rewritten by a deletion */
			file_activate(q, QDIR_INCOMING, name);
		free(name);
		done++;
	}
	if (q->backlog_head == q->nbacklog)
		q->backlog_head = q->nbacklog = 0;
	for (size_t i = 0; !q->stopping && q->nactive < limit && i < q->ndef && done < LOAD_BATCH;) {
		if (q->def[i].next_us > now) {
			i++;
			continue;
		}
		char name[QID_LEN + 1];
		memcpy(name, q->def[i].name, sizeof name);
		q->def[i] = q->def[--q->ndef];
		file_activate(q, QDIR_DEFERRED, name);
		done++;
		i = 0; /* activation may have changed the list */
	}
	if (done == LOAD_BATCH && !q->stopping)
		sd_event_source_set_enabled(q->kick, SD_EVENT_ONESHOT); /* the rest next turn */
}

/* on_kick: from the event loop, with nothing of ours on the stack: the
 * only safe place to free destinations. */
static int on_kick(sd_event_source *s, void *userdata)
{
	(void)s;
	dest_sweep(userdata);
	load_some(userdata);
	return 0;
}

static void backlog_push(struct qmgr *q, const char *name)
{
	if (q->nbacklog == q->backlog_cap) {
		q->backlog_cap = q->backlog_cap ? q->backlog_cap * 2 : 64;
		q->backlog = xreallocarray(q->backlog, q->backlog_cap, sizeof *q->backlog);
	}
	q->backlog[q->nbacklog++] = xstrdup(name);
	sd_event_source_set_enabled(q->kick, SD_EVENT_ONESHOT);
}

static void on_new_file(void *ctx, const char *name)
{
	backlog_push(ctx, name);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct qmgr *q = userdata;
	(void)s; (void)usec;

	load_some(q);
	retry_arm(q);
	return 0;
}

/* retry_arm: the timer for the earliest deferred file. */
static void retry_arm(struct qmgr *q)
{
	uint64_t first = UINT64_MAX;

	for (size_t i = 0; i < q->ndef; i++)
		if (q->def[i].next_us < first)
			first = q->def[i].next_us;
	if (first == UINT64_MAX || q->stopping) {
		sd_event_source_set_enabled(q->retry, SD_EVENT_OFF);
		return;
	}
	sd_event_source_set_time(q->retry, first);
	sd_event_source_set_enabled(q->retry, SD_EVENT_ONESHOT);
}

/* scan: what is on disk at start-up: incoming/ (new mail, and mail a
 * crash cut short) into the backlog, deferred/ with each file's retry
 * time. */
static void scan(struct qmgr *q)
{
	size_t n;
	char **v = queue_list(q->queue, QDIR_INCOMING, &n);

	for (size_t i = 0; v && i < n; i++)
		backlog_push(q, v[i]);
	queue_list_free(v, n);
	v = queue_list(q->queue, QDIR_DEFERRED, &n);
	for (size_t i = 0; v && i < n; i++) {
		struct qmsg *msgs;
		size_t nm;
		int fd;
		if (!queue_load(q->queue, QDIR_DEFERRED, v[i], &fd, &msgs, &nm))
			continue;
		close(fd);
		def_add(q, v[i], msgs[0].next_us, nm);
		qmsg_free_all(msgs, nm);
	}
	queue_list_free(v, n);
	retry_arm(q);
}

/* ---- the interface ---------------------------------------------------- */

struct qmgr *qmgr_new(sd_event *event, struct queue *queue, struct sconf *conf)
{
	struct qmgr *q = xcalloc(1, sizeof *q);
	char err[256];

	q->event = sd_event_ref(event);
	q->queue = queue;
	q->dc = dconf_new(conf);
	q->dns = dns_new(event, cf_str(&conf->cf, P_dns_resolver), err, sizeof err);
	if (q->dns == NULL) {
		msg_error("dns_resolver: %s", err);
		qmgr_free(q);
		return NULL;
	}
	htab_init(&q->dests, true);
	if (sd_event_add_defer(event, &q->kick, on_kick, q) < 0 ||
	    sd_event_add_time(event, &q->retry, CLOCK_REALTIME, UINT64_MAX, USEC / 10, on_retry,
			      q) < 0)
		msg_fatal("sd_event: cannot add the queue manager's sources");
	sd_event_source_set_enabled(q->kick, SD_EVENT_OFF);
	sd_event_source_set_enabled(q->retry, SD_EVENT_OFF);
	queue_set_notify(queue, on_new_file, q);
	scan(q);
	return q;
}

bool qmgr_set_conf(struct qmgr *q, struct sconf *conf)
{
	struct dconf *dc = dconf_new(conf);

	dconf_unref(q->dc);
	q->dc = dc;
	/* Answers and dead marks may depend on the old settings. */
	for (size_t i = 0; i < q->dests.cap; i++) {
		struct dest *d = dest_at(q, i);
		if (d) {
			d->resolved_until = 0;
			d->dead_until = 0;
		}
	}
	return true;
}

size_t qmgr_busy(const struct qmgr *q) { return q->busy; }

void qmgr_hook(struct qmgr *q, void (*fn)(void *ctx), void *ctx)
{
	q->hook_fn = fn;
	q->hook_ctx = ctx;
}

/* requeue_jobs: queued jobs go back untouched (R_KEEP). */
static void requeue_jobs(struct dest *d)
{
	struct job *j;

	while ((j = dest_pop(d)) != NULL) {
		struct amsg *m = j->m;
		for (size_t k = 0; k < j->n; k++)
			if (m->st[j->idx[k]] == R_TODO)
				rcpt_close(m, j->idx[k], R_KEEP);
		job_free(j);
		msg_check(m);
	}
}

void qmgr_stop(struct qmgr *q)
{
	if (q->stopping)
		return;
	q->stopping = true;
	sd_event_source_set_enabled(q->kick, SD_EVENT_OFF);
	sd_event_source_set_enabled(q->retry, SD_EVENT_OFF);
	for (size_t i = 0; i < q->dests.cap; i++) {
		struct dest *d = dest_at(q, i);
		if (d == NULL)
			continue;
		if (d->query) {
			dns_cancel(d->query);
			d->query = NULL;
		}
		requeue_jobs(d);
		while (d->idle) {
			struct oconn *oc = d->idle;
			idle_remove(oc);
			smtpc_quit(oc->c);
			conn_free(oc);
		}
	}
}

/* qmgr_abort: connections still connecting or in a transaction are
 * dropped; their recipients stay queued (possibly delivered: at least
 * once). */
static void abort_conns(struct qmgr *q)
{
	while (q->all) {
		struct oconn *oc = q->all;
		if (oc->state == O_IDLE)
			idle_remove(oc);
		if (oc->c)
			smtpc_abort(oc->c);
		if (oc->state == O_BUSY)
			q->busy--;
		if (oc->job)
			job_free(oc->job);
		conn_free(oc);
	}
}

void qmgr_abort(struct qmgr *q)
{
	qmgr_stop(q);
	abort_conns(q);
	for (struct afile *f = q->files, *next; f; f = next) {
		next = f->next;
		file_unlink(f);
		if (f->dir == QDIR_DEFERRED)
			def_add(q, f->name, f->msgs[0].q.next_us, f->nmsgs);
		afile_free(f); /* the file stays on disk as it is */
	}
}

void qmgr_free(struct qmgr *q)
{
	if (q == NULL)
		return;
	if (q->queue)
		queue_set_notify(q->queue, NULL, NULL);
	abort_conns(q);
	for (size_t i = 0; i < q->dests.cap; i++) {
		struct dest *d = dest_at(q, i);
		if (d == NULL)
			continue;
		if (d->query)
			dns_cancel(d->query);
		requeue_jobs(d);
		dest_free(d);
	}
	htab_free(&q->dests);
	for (struct afile *f = q->files, *next; f; f = next) {
		next = f->next;
		afile_free(f);
	}
	for (size_t i = q->backlog_head; i < q->nbacklog; i++)
		free(q->backlog[i]);
	free(q->backlog);
	free(q->def);
	sd_event_source_disable_unref(q->kick);
	sd_event_source_disable_unref(q->retry);
	dns_free(q->dns);
	dconf_unref(q->dc);
	sd_event_unref(q->event);
	free(q);
}

size_t qmgr_flush(struct qmgr *q)
{
	size_t n = 0;

	for (size_t i = 0; i < q->ndef; i++) {
		q->def[i].next_us = 0;
		n += q->def[i].nmsgs;
	}
	for (size_t i = 0; i < q->dests.cap; i++) {
		struct dest *d = dest_at(q, i);
		if (d)
			d->dead_until = 0;
	}
	load_some(q);
	retry_arm(q);
	return n;
}

/* delete_active: id in an active file: every recipient not under way is
 * done; those in a transaction finish first. */
static bool delete_active(struct qmgr *q, const char *id)
{
	for (struct afile *f = q->files; f; f = f->next)
		for (size_t i = 0; i < f->nmsgs; i++) {
			struct amsg *m = &f->msgs[i];
			if (strcmp(m->q.id, id) != 0)
				continue;
			for (size_t k = 0; k < m->q.nrcpts; k++)
				if (m->st[k] == R_TODO || m->st[k] == R_DEFER || m->st[k] == R_KEEP)
					rcpt_close(m, k, R_DONE);
			msg_check(m);
			return true;
		}
	return false;
}

/* delete_file: id in a file that is not active: rewrite the file
 * without it. */
static bool delete_file(struct qmgr *q, enum qdir dir, const char *name, const char *id,
			bool *found)
{
	struct qmsg *msgs;
	size_t n, k = 0;
	int fd;
	char newname[QID_LEN + 1];

	*found = false;
	if (!queue_load(q->queue, dir, name, &fd, &msgs, &n))
		return false;
	struct qdefer *v = xcalloc(n, sizeof *v);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(msgs[i].id, id) == 0) {
			*found = true;
			continue;
		}
		v[k++] = (struct qdefer){ &msgs[i], NULL, msgs[i].tries, msgs[i].next_us,
					  msgs[i].warned, msgs[i].reason };
	}
	bool ok = !*found || queue_defer(q->queue, fd, v, k, dir, name, n, newname);
	if (*found && ok) {
		for (size_t i = 0; i < q->ndef; i++)
			if (dir == QDIR_DEFERRED && strcmp(q->def[i].name, name) == 0)
				q->def[i] = q->def[--q->ndef];
		if (k > 0)
			def_add(q, newname, v[0].next_us, k);
	}
	close(fd);
	free(v);
	qmsg_free_all(msgs, n);
	return ok;
}

bool qmgr_delete(struct qmgr *q, const char *id, char *err, size_t errlen)
{
	bool found = false;

	if (delete_active(q, id))
		return true;
	for (size_t i = 0; i < q->ndef && !found; i++) {
		char name[QID_LEN + 1];
		memcpy(name, q->def[i].name, sizeof name);
		if (!delete_file(q, QDIR_DEFERRED, name, id, &found)) {
			snprintf(err, errlen, "cannot rewrite queue file %s", name);
			return false;
		}
	}
	for (size_t i = q->backlog_head; i < q->nbacklog && !found; i++) {
		if (*q->backlog[i] == 0)
			continue;
		if (!delete_file(q, QDIR_INCOMING, q->backlog[i], id, &found)) {
			snprintf(err, errlen, "cannot rewrite queue file %s", q->backlog[i]);
			return false;
		}
		if (found)
			q->backlog[i][0] = 0; /* its rest is in deferred/ now, due at once */
	}
	if (!found)
		snprintf(err, errlen, "no message %s in the queue", id);
	retry_arm(q);
	return found;
}
