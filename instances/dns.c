/* dns.c: asynchronous MX and address lookups (dns.h) with c-ares on the
 * instance's sd-event loop. Owns the c-ares channel, one io source per
 * c-ares socket (from its socket state callback), the timer that drives
 * c-ares' timeouts, the queries, and the answer parser. The parser is our
 * own, not c-ares': it walks every section of the packet with bounds
 * checks, follows CNAME chains only from the question's name, and sees
 * null MX records, which c-ares' MX parser cannot tell from the rest.
 *
 * A query finishes through its own defer source, so its callback always
 * runs from the event loop, outside c-ares and outside our own calls, and
 * may start, cancel or free anything. A c-ares lookup outlives a
 * cancelled query: its record is detached from the query and freed when
 * c-ares answers, times out, or is destroyed. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <ares_nameser.h>

#include "dns.h"
#include "log.h"
#include "util.h"

#define TIMER_ACCURACY 10000ULL /* usec: c-ares' timeouts need no precision */
#define HDR_LEN 12
#define RR_FIXED 10       /* type, class, ttl, rdlength */
#define NAME_WIRE_MAX 255 /* RFC 1035 2.3.4 */
#define NAME_TEXT 256     /* 253 characters at most, and the NUL */
#define CHAIN_MAX 8       /* names followed through CNAMEs, the first included */
#define SERVER_ITEM_MAX 64

#define DNS_RCODE(f) ((f) & 0xfu)
#define DNS_OPCODE(f) (((f) >> 11) & 0xfu)
#define DNS_QR 0x8000u

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

/* ---- answer parsing ----------------------------------------------------- */

/* answer: a packet being walked. chain[] holds the question's name and the
 * CNAME targets reached from it: only records owned by these count. */
struct answer {
	const unsigned char *p;
	size_t len, off;
	unsigned ancount, left, rest; /* answers; answers not yet read; other records */
	size_t nchain;
	char chain[CHAIN_MAX][NAME_TEXT];
	char *err;
	size_t errlen;
};

struct rr {
	char owner[NAME_TEXT];
	unsigned type, cls;
	size_t rdoff, rdlen;
};

static unsigned get16(const unsigned char *p, size_t off)
{
	return (unsigned)p[off] << 8 | p[off + 1];
}

/* name_get: the name at *off, compression pointers followed, as lower
 * case text with '.' between labels and no trailing dot ("" for the
 * root). A pointer must point below the start of the part of the name
 * read so far, so pointers cannot loop. A label byte that has no place
 * in a name's text ('.', NUL) becomes '?', so such a name never passes
 * hostname_valid() nor equals one that does. *off moves past the name as
 * written there. */
static bool name_get(const unsigned char *p, size_t len, size_t *off, char out[NAME_TEXT],
		     char *err, size_t errlen)
{
	size_t pos = *off, after = 0, wire = 0, o = 0;
	size_t seg = pos; /* where the part being read starts */

	for (;;) {
		unsigned c;

		if (pos >= len)
			return fail(err, errlen, "name at offset %zu runs past the end", *off);
		c = p[pos];
		if ((c & 0xc0) == 0xc0) {
			size_t target;

			if (pos + 1 >= len)
				return fail(err, errlen, "compression pointer cut at the end");
			target = (size_t)(c & 0x3f) << 8 | p[pos + 1];
			if (target >= seg || target < HDR_LEN)
				return fail(err, errlen, "bad compression pointer at offset %zu", pos);
			if (after == 0)
				after = pos + 2;
			pos = seg = target;
			continue;
		}
		if (c & 0xc0)
			return fail(err, errlen, "unknown label type at offset %zu", pos);
		wire += c + 1;
		if (wire > NAME_WIRE_MAX)
			return fail(err, errlen, "name at offset %zu longer than 255 octets", *off);
		if (c == 0)
			break;
		if (c > len - pos - 1)
			return fail(err, errlen, "label at offset %zu runs past the end", pos);
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 1; i <= c; i++) {
			char ch = (char)p[pos + i];
			out[o++] = ch == '.' || ch == 0 ? '?' : ascii_tolower(ch);
		}
		pos += 1 + c;
	}
	out[o] = 0;
	*off = after ? after : pos + 1;
	return true;
}

/* rr_get: the record at a->off; its data lies inside the packet. */
static bool rr_get(struct answer *a, struct rr *rr)
{
	if (!name_get(a->p, a->len, &a->off, rr->owner, a->err, a->errlen))
		return false;
	if (a->len - a->off < RR_FIXED)
		return fail(a->err, a->errlen, "record cut at offset %zu", a->off);
	rr->type = get16(a->p, a->off);
	rr->cls = get16(a->p, a->off + 2);
	rr->rdlen = get16(a->p, a->off + 8);
	rr->rdoff = a->off + RR_FIXED;
	if (rr->rdlen > a->len - rr->rdoff)
		return fail(a->err, a->errlen, "record data at offset %zu runs past the end",
			    rr->rdoff);
	a->off = rr->rdoff + rr->rdlen;
	return true;
}

/* rdata_name: the name that is all of rr's data from off on. */
static bool rdata_name(struct answer *a, const struct rr *rr, size_t off, char out[NAME_TEXT])
{
	if (!name_get(a->p, a->len, &off, out, a->err, a->errlen))
		return false;
	if (off != rr->rdoff + rr->rdlen)
		return fail(a->err, a->errlen, "name does not fill the record data at offset %zu",
			    rr->rdoff);
	return true;
}

static bool in_chain(const struct answer *a, const char *name)
{
	for (size_t i = 0; i < a->nchain; i++)
		if (strcmp(a->chain[i], name) == 0)
			return true;
	return false;
}

/* answer_open: the header and the question, which must ask for type in
 * class IN about a valid name. */
static bool answer_open(struct answer *a, const unsigned char *abuf, int alen, unsigned type,
			char *err, size_t errlen)
{
	unsigned flags;

	memset(a, 0, sizeof *a);
	a->err = err;
	a->errlen = errlen;
	if (abuf == NULL || alen < HDR_LEN)
		return fail(err, errlen, "answer shorter than a header (%d bytes)", alen);
	a->p = abuf;
	a->len = (size_t)alen;
	flags = get16(abuf, 2);
	if (!(flags & DNS_QR) || DNS_OPCODE(flags) != 0)
		return fail(err, errlen, "not an answer to a query");
	if (DNS_RCODE(flags) != 0)
		return fail(err, errlen, "answer with rcode %u", DNS_RCODE(flags));
	if (get16(abuf, 4) != 1)
		return fail(err, errlen, "%u questions in the answer", get16(abuf, 4));
	a->ancount = a->left = get16(abuf, 6);
	a->rest = get16(abuf, 8) + get16(abuf, 10);
	a->off = HDR_LEN;
	if (!name_get(a->p, a->len, &a->off, a->chain[0], err, errlen))
		return false;
	if (!hostname_valid(a->chain[0], strlen(a->chain[0]), false))
		return fail(err, errlen, "question about an invalid name");
	if (a->len - a->off < 4)
		return fail(err, errlen, "question cut at the end");
	if (get16(a->p, a->off) != type || get16(a->p, a->off + 2) != C_IN)
		return fail(err, errlen, "answer to another question");
	a->off += 4;
	a->nchain = 1;
	return true;
}

/* answer_next: 1 with the next record of type (class IN) owned by a name
 * of the chain, 0 after the last answer, -1 for a malformed packet.
 * CNAMEs from the chain extend it. */
static int answer_next(struct answer *a, unsigned type, struct rr *rr)
{
	while (a->left > 0) {
		a->left--;
		if (!rr_get(a, rr))
			return -1;
		if (rr->cls != C_IN || !in_chain(a, rr->owner))
			continue;
		if (rr->type == type)
			return 1;
		if (rr->type == T_CNAME) {
			char target[NAME_TEXT];

			if (!rdata_name(a, rr, rr->rdoff, target))
				return -1;
			if (a->nchain < CHAIN_MAX && !in_chain(a, target) &&
			    hostname_valid(target, strlen(target), false))
				strcpy(a->chain[a->nchain++], target);
		}
	}
	return 0;
}

/* answer_rest: the authority and additional sections are well formed
 * too (their content is not used), so a cut packet is always noticed. */
static bool answer_rest(struct answer *a)
{
	struct rr rr;

	for (unsigned i = 0; i < a->rest; i++)
		if (!rr_get(a, &rr))
			return false;
	return true;
}

/* mx_insert: name/pref into out[0..*n), sorted by preference (stable),
 * at most max entries, one per name (the lowest preference). */
static void mx_insert(struct dns_mx *out, size_t max, size_t *n, const char *name, unsigned pref)
{
	size_t pos;

	for (size_t i = 0; i < *n; i++) {
		if (strcmp(out[i].name, name) != 0)
			continue;
		if (pref >= out[i].pref)
			return;
		memmove(out + i, out + i + 1, (*n - i - 1) * sizeof *out);
		(*n)--;
		break;
	}
	for (pos = 0; pos < *n && out[pos].pref <= pref; pos++)
		;
	if (pos >= max)
		return;
	if (*n == max)
		(*n)--;
	memmove(out + pos + 1, out + pos, (*n - pos) * sizeof *out);
	snprintf(out[pos].name, sizeof out[pos].name, "%s", name);
	out[pos].pref = pref;
	(*n)++;
}

enum dns_parse dns_parse_mx(const unsigned char *abuf, int alen, struct dns_mx *out, size_t max,
			    size_t *n, size_t *skipped, char *err, size_t errlen)
{
	struct answer a;
	struct rr rr;
	char name[NAME_TEXT];
	size_t found = 0;
	bool null = false;
	int r;

	*n = *skipped = 0;
	if (!answer_open(&a, abuf, alen, T_MX, err, errlen))
		return DNS_PARSE_BAD;
	while ((r = answer_next(&a, T_MX, &rr)) > 0) {
		if (rr.rdlen < 3) {
			fail(err, errlen, "MX record of %zu bytes", rr.rdlen);
			r = -1;
			break;
		}
		if (!rdata_name(&a, &rr, rr.rdoff + 2, name)) {
			r = -1;
			break;
		}
		found++;
		if (name[0] == 0)
			null = true;
		else if (!hostname_valid(name, strlen(name), false))
			(*skipped)++;
		else
			mx_insert(out, max, n, name, get16(a.p, rr.rdoff));
	}
	if (r < 0 || !answer_rest(&a)) {
		*n = 0;
		return DNS_PARSE_BAD;
	}
	if (null) {
		*n = 0;
		return DNS_PARSE_NULLMX;
	}
	if (found == 0)
		return DNS_PARSE_NODATA;
	if (*n == 0 && *skipped > 0) {
		fail(err, errlen, "no MX record with a valid host name (%zu skipped)", *skipped);
		return DNS_PARSE_BAD;
	}
	return DNS_PARSE_OK;
}

enum dns_parse dns_parse_addrs(const unsigned char *abuf, int alen, int family,
			       struct ipaddr *out, size_t max, size_t *n, char *err, size_t errlen)
{
	unsigned type = family == AF_INET ? T_A : T_AAAA;
	size_t size = family == AF_INET ? 4 : 16, found = 0;
	struct answer a;
	struct rr rr;
	int r;

	*n = 0;
	if (family != AF_INET && family != AF_INET6) {
		fail(err, errlen, "unknown address family %d", family);
		return DNS_PARSE_BAD;
	}
	if (!answer_open(&a, abuf, alen, type, err, errlen))
		return DNS_PARSE_BAD;
	while ((r = answer_next(&a, type, &rr)) > 0) {
		struct ipaddr ip;
		bool dup = false;

		if (rr.rdlen != size) {
			fail(err, errlen, "%s record of %zu bytes", type == T_A ? "A" : "AAAA",
			     rr.rdlen);
			r = -1;
			break;
		}
		found++;
		memset(&ip, 0, sizeof ip);
		ip.family = (sa_family_t)family;
		memcpy(family == AF_INET ? (void *)&ip.u.v4 : (void *)&ip.u.v6, a.p + rr.rdoff, size);
		for (size_t i = 0; i < *n && !dup; i++)
			dup = ipaddr_equal(&out[i], &ip);
		if (!dup && *n < max)
			out[(*n)++] = ip;
	}
	if (r < 0 || !answer_rest(&a)) {
		*n = 0;
		return DNS_PARSE_BAD;
	}
	return found ? DNS_PARSE_OK : DNS_PARSE_NODATA;
}

/* ---- resolver and queries ------------------------------------------------ */

struct dns_sock {
	struct dns_sock *next;
	struct dns *d;
	int fd;
	sd_event_source *src;
};

struct dns {
	sd_event *event;
	ares_channel ch;
	bool have_ch;
	sd_event_source *timer;
	struct dns_sock *socks;
	struct dns_query *queries; /* not yet delivered */
	uint64_t rnd;
};

/* How one lookup ended. */
enum look_st { LK_PENDING, LK_OK, LK_NXDOMAIN, LK_NODATA, LK_TEMP, LK_BAD };

/* One host's addresses of one family. */
struct fam {
	enum look_st st;
	size_t n;
	struct ipaddr a[DNS_MAX_ADDRS];
};

struct qhost {
	char name[NAME_TEXT];
	unsigned pref;
	struct fam f[2]; /* [0] A, [1] AAAA */
};

/* One ares_query in flight; q is NULL once the query has been cancelled. */
struct lookup {
	struct dns_query *q;
	struct lookup *prev, *next;
	int type;    /* T_MX, T_A, T_AAAA */
	size_t host; /* A/AAAA: index in q->qhosts */
};

struct dns_query {
	struct dns *d;
	struct dns_query *prev, *next;
	dns_fn *fn;
	void *ctx;
	int families;
	char name[NAME_TEXT];
	struct lookup *lookups;
	size_t pending;     /* lookups in flight, plus holds while starting some */
	bool decided;       /* res.status and res.reason are final */
	bool running;       /* the callback is running */
	sd_event_source *done;
	size_t nq;
	struct qhost *qhosts;
	struct dns_result res;
};

static void dns_rearm(struct dns *d);

static uint64_t rnd_next(struct dns *d)
{
	/* xorshift64*: spreads equal MX preferences, nothing secret */
	d->rnd ^= d->rnd >> 12;
	d->rnd ^= d->rnd << 25;
	d->rnd ^= d->rnd >> 27;
	return d->rnd * 0x2545f4914f6cdd1dULL;
}

static size_t rnd_below(struct dns *d, size_t n)
{
	return (size_t)(rnd_next(d) % n);
}

/* ---- c-ares on sd-event ---- */

static int on_sock_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct dns *d = ((struct dns_sock *)userdata)->d; /* the sock may go during processing */
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
	(void)src;

	if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP))
		rfd = fd;
	if (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		wfd = fd;
	ares_process_fd(d->ch, rfd, wfd);
	dns_rearm(d);
	return 0;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct dns *d = userdata;
	(void)src; (void)usec;

	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_rearm(d);
	return 0;
}

/* on_sock_state: c-ares opened, changed or is closing one of its sockets. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_sock **pp = &d->socks, *s;
	uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
	int r;

	while (*pp && (*pp)->fd != fd)
		pp = &(*pp)->next;
	s = *pp;
	if (ev == 0) {
		if (s) {
			*pp = s->next;
			sd_event_source_disable_unref(s->src);
			free(s);
		}
		return;
	}
	if (s) {
		if (sd_event_source_set_io_events(s->src, ev) < 0)
			msg_warn("DNS: cannot change a socket's events (the timeout still ends its lookups)");
		return;
	}
	s = xcalloc(1, sizeof *s);
	s->d = d;
	s->fd = fd;
	r = sd_event_add_io(d->event, &s->src, fd, ev, on_sock_io, s);
	if (r < 0) {
		/* The lookups on it still end, by c-ares' timeout. */
		msg_warn("DNS: cannot watch a socket: %s", strerror(-r));
		free(s);
		return;
	}
	s->next = d->socks;
	d->socks = s;
}

/* dns_rearm: the timer at c-ares' next timeout, off when nothing waits. */
static void dns_rearm(struct dns *d)
{
	struct timeval tv, *tvp = ares_timeout(d->ch, NULL, &tv);
	uint64_t usec;

	if (tvp == NULL) {
		sd_event_source_set_enabled(d->timer, SD_EVENT_OFF);
		return;
	}
	usec = (uint64_t)tvp->tv_sec * 1000000u + (uint64_t)tvp->tv_usec;
	if (sd_event_source_set_time_relative(d->timer, usec) < 0 ||
	    sd_event_source_set_enabled(d->timer, SD_EVENT_ONESHOT) < 0)
		msg_warn("DNS: cannot arm the timeout timer");
}

/* ---- dns_resolver ---- */

/* server_port: none (53) or a decimal port 1-65535. */
static bool server_port(const char *s, int *port)
{
	unsigned long long v;

	if (s == NULL) {
		*port = 53;
		return true;
	}
	if (!str_parse_ull(s, 65535, &v) || v == 0)
		return false;
	*port = (int)v;
	return true;
}

/* server_item: "ip", "ip:port" (IPv4), "[ip]", "[ip]:port", or a bare
 * IPv6 address (then no port). */
static bool server_item(const char *s, size_t n, struct ares_addr_port_node *node,
			char *err, size_t errlen)
{
	char tmp[SERVER_ITEM_MAX + 1], sh[STR_SHOW_BUF];
	const char *port = NULL;
	char *colon, *close;
	struct ipaddr ip;
	size_t hostlen;

	if (n > SERVER_ITEM_MAX)
		return fail(err, errlen, "bad DNS server \"%s\"", str_show(s, n, sh));
	memcpy(tmp, s, n);
	tmp[n] = 0;
	hostlen = n;
	if (tmp[0] == '[') {
		close = strchr(tmp, ']');
		if (close && close[1] == ':')
			port = close + 2;
		else if (close == NULL || close[1] != 0)
			return fail(err, errlen, "bad DNS server \"%s\"", str_show(s, n, sh));
		hostlen = (size_t)(close - tmp) + 1;
	} else if ((colon = strchr(tmp, ':')) != NULL && strchr(colon + 1, ':') == NULL) {
		port = colon + 1;
		hostlen = (size_t)(colon - tmp);
	}
	if (!ipaddr_parse(tmp, hostlen, &ip) || ipaddr_is_unspecified(&ip) ||
	    ipaddr_is_multicast(&ip) || ipaddr_is_broadcast(&ip) ||
	    (tmp[0] != '[' && port && ip.family != AF_INET))
		return fail(err, errlen, "bad DNS server address \"%s\"", str_show(s, n, sh));
	if (!server_port(port, &node->udp_port))
		return fail(err, errlen, "bad port in DNS server \"%s\"", str_show(s, n, sh));
	node->tcp_port = node->udp_port;
	node->family = ip.family;
	if (ip.family == AF_INET)
		memcpy(&node->addr.addr4, &ip.u.v4, sizeof node->addr.addr4);
	else
		memcpy(&node->addr.addr6, &ip.u.v6, sizeof node->addr.addr6);
	return true;
}

/* set_servers: the dns_resolver value; false with err for a bad one.
 * A value without items leaves resolv.conf's servers. */
static bool set_servers(struct dns *d, const char *value, char *err, size_t errlen)
{
	struct ares_addr_port_node nodes[DNS_MAX_SERVERS];
	const char *cursor = value, *item;
	size_t n = 0, len;
	int r;

	memset(nodes, 0, sizeof nodes);
	while ((item = list_next(&cursor, &len)) != NULL) {
		if (n == DNS_MAX_SERVERS)
			return fail(err, errlen, "more than %d DNS servers", DNS_MAX_SERVERS);
		if (!server_item(item, len, &nodes[n], err, errlen))
			return false;
		if (n > 0)
			nodes[n - 1].next = &nodes[n];
		n++;
	}
	if (n == 0)
		return true;
	r = ares_set_servers_ports(d->ch, nodes);
	if (r != ARES_SUCCESS)
		return fail(err, errlen, "cannot set the DNS servers: %s", ares_strerror(r));
	return true;
}

/* ---- the resolver ---- */

struct dns *dns_new(sd_event *event, const char *servers, char *err, size_t errlen)
{
	return dns_new_timeout(event, servers, DNS_TIMEOUT_MS, DNS_TRIES, err, errlen);
}

struct dns *dns_new_timeout(sd_event *event, const char *servers, unsigned timeout_ms,
			    unsigned tries, char *err, size_t errlen)
{
	struct dns *d = xcalloc(1, sizeof *d);
	struct ares_options o;
	int r, mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS |
		      ARES_OPT_SOCK_STATE_CB;

	r = ares_library_init(ARES_LIB_INIT_ALL);
	if (r != ARES_SUCCESS) {
		fail(err, errlen, "c-ares: %s", ares_strerror(r));
		free(d);
		return NULL;
	}
	d->event = sd_event_ref(event);
	memset(&o, 0, sizeof o);
	/* Names are absolute: no search list, no HOSTALIASES. */
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	o.timeout = timeout_ms > 0 && timeout_ms < 600000 ? (int)timeout_ms : DNS_TIMEOUT_MS;
	o.tries = tries > 0 && tries < 10 ? (int)tries : DNS_TRIES;
	o.ndots = 1;
	o.sock_state_cb = on_sock_state;
	o.sock_state_cb_data = d;
	r = ares_init_options(&d->ch, &o, mask);
	if (r != ARES_SUCCESS) {
		fail(err, errlen, "c-ares: %s", ares_strerror(r));
		dns_free(d);
		return NULL;
	}
	d->have_ch = true;
	if (servers != NULL && !set_servers(d, servers, err, errlen)) {
		dns_free(d);
		return NULL;
	}
	r = sd_event_add_time_relative(event, &d->timer, CLOCK_MONOTONIC, 0, TIMER_ACCURACY,
				       on_timer, d);
	if (r < 0 || sd_event_source_set_enabled(d->timer, SD_EVENT_OFF) < 0) {
		fail(err, errlen, "cannot add the DNS timer: %s", strerror(r < 0 ? -r : EINVAL));
		dns_free(d);
		return NULL;
	}
	if (getrandom(&d->rnd, sizeof d->rnd, GRND_NONBLOCK) != sizeof d->rnd)
		d->rnd = (uint64_t)time(NULL) << 20 ^ (uint64_t)getpid();
	d->rnd |= 1; /* xorshift never leaves 0 */
	return d;
}

static void query_unlink(struct dns_query *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		q->d->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

static void query_free(struct dns_query *q)
{
	sd_event_source_disable_unref(q->done);
	free(q->qhosts);
	free(q->res.hosts);
	free(q);
}

void dns_cancel(struct dns_query *q)
{
	if (q == NULL || q->running)
		return;
	query_unlink(q);
	for (struct lookup *l = q->lookups; l; l = l->next)
		l->q = NULL; /* freed when c-ares lets go of it */
	query_free(q);
}

void dns_free(struct dns *d)
{
	if (d == NULL)
		return;
	while (d->queries)
		dns_cancel(d->queries);
	/* c-ares calls back every lookup (freeing it) and closes its
	 * sockets through on_sock_state, which drops their sources. */
	if (d->have_ch)
		ares_destroy(d->ch);
	while (d->socks) {
		struct dns_sock *s = d->socks;
		d->socks = s->next;
		sd_event_source_disable_unref(s->src);
		free(s);
	}
	sd_event_source_disable_unref(d->timer);
	sd_event_unref(d->event);
	ares_library_cleanup();
	free(d);
}

/* ---- one query ---- */

static const char *type_name(int type)
{
	return type == T_MX ? "MX" : type == T_A ? "A" : "AAAA";
}

static void reason(struct dns_result *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* reason: res->reason; a long host name may not leave room for all of
 * it, and then "..." says so. */
static void reason(struct dns_result *res, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(res->reason, sizeof res->reason, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof res->reason)
		memcpy(res->reason + sizeof res->reason - 4, "...", 4);
}

/* set_reason: Postfix's words for a failed lookup of name/type. */
static void set_reason(struct dns_result *res, enum look_st st, const char *name, int type)
{
	const char *what = st == LK_NXDOMAIN ? "Host not found"
		: st == LK_NODATA ? "Host found but no data record of requested type"
		: "Host not found, try again";

	if (st == LK_BAD)
		reason(res, "Name service error for name=%s type=%s: "
		       "Malformed or unexpected name server reply", name, type_name(type));
	else
		reason(res, "Host or domain name not found. "
		       "Name service error for name=%s type=%s: %s", name, type_name(type), what);
}

static void decide(struct dns_query *q, enum dns_status status)
{
	q->res.status = status;
	q->decided = true;
}

/* on_done: deliver the result from the event loop; q is gone afterwards. */
static int on_done(sd_event_source *src, void *userdata)
{
	struct dns_query *q = userdata;
	(void)src;

	query_unlink(q);
	q->running = true;
	q->fn(q->ctx, &q->res);
	query_free(q);
	return 0;
}

/* merge: h's addresses, families interleaved IPv6 first (RFC 8305), each
 * family shuffled (as Postfix's smtp_randomize_addresses). */
static void merge(struct dns *d, struct qhost *qh, struct dns_host *h)
{
	size_t i[2] = { 0, 0 };

	for (int f = 0; f < 2; f++) {
		struct fam *fa = &qh->f[f];
		for (size_t k = fa->n; k > 1; k--) {
			size_t j = rnd_below(d, k);
			struct ipaddr t = fa->a[k - 1];
			fa->a[k - 1] = fa->a[j];
			fa->a[j] = t;
		}
	}
	snprintf(h->name, sizeof h->name, "%s", qh->name);
	h->pref = qh->pref;
	h->naddrs = 0;
	while (h->naddrs < DNS_MAX_ADDRS && (i[0] < qh->f[0].n || i[1] < qh->f[1].n)) {
		if (i[1] < qh->f[1].n)
			h->addrs[h->naddrs++] = qh->f[1].a[i[1]++];
		if (h->naddrs < DNS_MAX_ADDRS && i[0] < qh->f[0].n)
			h->addrs[h->naddrs++] = qh->f[0].a[i[0]++];
	}
}

/* first_failure: the first host and family (MX order, A before AAAA)
 * whose lookup ended in one of the two states. */
static bool first_failure(struct dns_query *q, enum look_st a, enum look_st b)
{
	for (size_t i = 0; i < q->nq; i++) {
		for (int f = 0; f < 2; f++) {
			enum look_st st = q->qhosts[i].f[f].st;
			if (st == a || st == b) {
				set_reason(&q->res, st, q->qhosts[i].name, f ? T_AAAA : T_A);
				return true;
			}
		}
	}
	return false;
}

/* hosts_result: the hosts with an address, or why there is none. */
static void hosts_result(struct dns_query *q)
{
	struct dns_result *res = &q->res;

	res->hosts = xcalloc(q->nq ? q->nq : 1, sizeof *res->hosts);
	for (size_t i = 0; i < q->nq; i++) {
		merge(q->d, &q->qhosts[i], &res->hosts[res->nhosts]);
		if (res->hosts[res->nhosts].naddrs > 0)
			res->nhosts++;
	}
	if (res->nhosts > 0)
		decide(q, DNS_OK);
	else if (first_failure(q, LK_TEMP, LK_BAD))
		decide(q, DNS_TEMP);
	else {
		first_failure(q, LK_NXDOMAIN, LK_NODATA);
		decide(q, DNS_NOTFOUND);
	}
}

/* maybe_finish: when nothing is in flight, the result goes out through
 * the query's defer source. */
static void maybe_finish(struct dns_query *q)
{
	if (q->pending > 0)
		return;
	if (!q->decided)
		hosts_result(q);
	if (sd_event_source_set_enabled(q->done, SD_EVENT_ONESHOT) < 0)
		msg_fatal("DNS: cannot schedule a result");
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* start_lookup: one ares_query for q (c-ares may call back at once). */
static void start_lookup(struct dns_query *q, const char *name, int type, size_t host)
{
	struct lookup *l = xcalloc(1, sizeof *l);

	l->q = q;
	l->type = type;
	l->host = host;
	l->next = q->lookups;
	if (q->lookups)
		q->lookups->prev = l;
	q->lookups = l;
	q->pending++;
	ares_query(q->d->ch, name, C_IN, type, on_answer, l);
}

static void start_addrs(struct dns_query *q)
{
	for (size_t i = 0; i < q->nq; i++) {
		if (q->families & DNS_V4)
			start_lookup(q, q->qhosts[i].name, T_A, i);
		if (q->families & DNS_V6)
			start_lookup(q, q->qhosts[i].name, T_AAAA, i);
	}
}

static enum look_st ares_st(int status)
{
	switch (status) {
	case ARES_SUCCESS: return LK_OK;
	case ARES_ENODATA: return LK_NODATA;
	case ARES_ENOTFOUND: return LK_NXDOMAIN;
	case ARES_EBADRESP: return LK_BAD;
	default: return LK_TEMP; /* SERVFAIL, REFUSED, timeout, refused connection, ... */
	}
}

static void log_bad(const char *name, int type, const char *err)
{
	msg_warn("malformed DNS answer for name=%s type=%s: %s", name, type_name(type), err);
}

static void add_hosts(struct dns_query *q, size_t n)
{
	q->nq = n;
	q->qhosts = xcalloc(n, sizeof *q->qhosts);
}

/* shuffle_prefs: equal preferences in random order (RFC 5321 5.1). */
static void shuffle_prefs(struct dns *d, struct qhost *h, size_t n)
{
	for (size_t s = 0, e; s < n; s = e) {
		for (e = s + 1; e < n && h[e].pref == h[s].pref; e++)
			;
		for (size_t k = e - s; k > 1; k--) {
			size_t j = s + rnd_below(d, k);
			struct qhost t = h[s + k - 1];
			h[s + k - 1] = h[j];
			h[j] = t;
		}
	}
}

static void mx_answer(struct dns_query *q, int status, const unsigned char *abuf, int alen)
{
	struct dns_mx mx[DNS_MAX_HOSTS];
	enum look_st st = ares_st(status);
	size_t n = 0, skipped = 0;
	char err[200] = "";

	if (st == LK_OK) {
		switch (dns_parse_mx(abuf, alen, mx, DNS_MAX_HOSTS, &n, &skipped, err, sizeof err)) {
		case DNS_PARSE_OK: break;
		case DNS_PARSE_NODATA: st = LK_NODATA; break;
		case DNS_PARSE_NULLMX:
			reason(&q->res, "Domain %s does not accept mail (nullMX)", q->name);
			decide(q, DNS_NULLMX);
			return;
		case DNS_PARSE_BAD:
			log_bad(q->name, T_MX, err);
			st = LK_BAD;
			break;
		}
	}
	if (skipped > 0)
		msg_warn("%s: %zu MX record(s) with an invalid host name skipped", q->name, skipped);
	if (st == LK_NODATA) {
		q->res.implicit_mx = true;
		add_hosts(q, 1);
		snprintf(q->qhosts[0].name, sizeof q->qhosts[0].name, "%s", q->name);
		start_addrs(q);
		return;
	}
	if (st != LK_OK) {
		set_reason(&q->res, st, q->name, T_MX);
		decide(q, st == LK_NXDOMAIN ? DNS_NOTFOUND : DNS_TEMP);
		return;
	}
	add_hosts(q, n);
	for (size_t i = 0; i < n; i++) {
		memcpy(q->qhosts[i].name, mx[i].name, sizeof q->qhosts[i].name);
		q->qhosts[i].pref = mx[i].pref;
	}
	shuffle_prefs(q->d, q->qhosts, n);
	start_addrs(q);
}

static void addr_answer(struct dns_query *q, size_t host, int type, int status,
			const unsigned char *abuf, int alen)
{
	struct qhost *h = &q->qhosts[host];
	struct fam *f = &h->f[type == T_AAAA];
	char err[200] = "";

	f->st = ares_st(status);
	if (f->st != LK_OK)
		return;
	switch (dns_parse_addrs(abuf, alen, type == T_AAAA ? AF_INET6 : AF_INET, f->a,
				DNS_MAX_ADDRS, &f->n, err, sizeof err)) {
	case DNS_PARSE_OK: break;
	case DNS_PARSE_NODATA: f->st = LK_NODATA; break;
	case DNS_PARSE_NULLMX: /* not for addresses */
	case DNS_PARSE_BAD:
		log_bad(h->name, type, err);
		f->st = LK_BAD;
		f->n = 0;
		break;
	}
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct lookup *l = arg;
	struct dns_query *q = l->q;
	int type = l->type;
	size_t host = l->host;
	(void)timeouts;

	if (q) {
		if (l->prev)
			l->prev->next = l->next;
		else
			q->lookups = l->next;
		if (l->next)
			l->next->prev = l->prev;
	}
	free(l);
	if (q == NULL)
		return; /* cancelled, or the resolver is being freed */
	/* The pending count still holds this lookup, so whatever mx_answer
	 * starts cannot finish q before it returns. */
	if (type == T_MX)
		mx_answer(q, status, abuf, alen);
	else
		addr_answer(q, host, type, status, abuf, alen);
	q->pending--;
	maybe_finish(q);
}

/* name_canon: name without one trailing dot, lower case, checked. */
static bool name_canon(const char *name, char out[NAME_TEXT])
{
	size_t n = strnlen(name, NAME_TEXT);

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n >= NAME_TEXT)
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = ascii_tolower(name[i]);
	out[n] = 0;
	return hostname_valid(out, n, false);
}

static struct dns_query *query_new(struct dns *d, const char *name, int families, dns_fn *fn,
				   void *ctx)
{
	struct dns_query *q = xcalloc(1, sizeof *q);
	int r;

	q->d = d;
	q->fn = fn;
	q->ctx = ctx;
	q->families = families & (DNS_V4 | DNS_V6) ? families & (DNS_V4 | DNS_V6)
						   : DNS_V4 | DNS_V6;
	r = sd_event_add_defer(d->event, &q->done, on_done, q);
	if (r < 0 || sd_event_source_set_enabled(q->done, SD_EVENT_OFF) < 0)
		msg_fatal("DNS: cannot add an event source: %s", strerror(r < 0 ? -r : EINVAL));
	q->next = d->queries;
	if (d->queries)
		d->queries->prev = q;
	d->queries = q;
	if (!name_canon(name, q->name)) {
		char sh[STR_SHOW_BUF];

		reason(&q->res, "Name service error for %s: invalid host or domain name",
		       str_show(name, strnlen(name, 1024), sh));
		decide(q, DNS_NOTFOUND);
	}
	return q;
}

/* query_start: the first lookup(s), held so that c-ares calling back at
 * once cannot finish q before all have started. */
static void query_start(struct dns_query *q, bool mx)
{
	q->pending++;
	if (!q->decided) {
		if (mx) {
			start_lookup(q, q->name, T_MX, 0);
		} else {
			add_hosts(q, 1);
			memcpy(q->qhosts[0].name, q->name, sizeof q->name);
			start_addrs(q);
		}
	}
	q->pending--;
	maybe_finish(q);
	dns_rearm(q->d);
}

struct dns_query *dns_mx(struct dns *d, const char *domain, int families, dns_fn *fn, void *ctx)
{
	struct dns_query *q = query_new(d, domain, families, fn, ctx);

	query_start(q, true);
	return q;
}

struct dns_query *dns_host(struct dns *d, const char *host, int families, dns_fn *fn, void *ctx)
{
	struct dns_query *q = query_new(d, host, families, fn, ctx);

	query_start(q, false);
	return q;
}
