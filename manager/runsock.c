/* runsock.c: an instance's listening sockets, bound by the supervisor
 * (see runsock.h). The instance checks each passed socket against its own
 * inet_interfaces at smtpd_listen_port, so the set bound here is derived
 * from the same instance.cf the instance will read, the same way. */
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cf.h"
#include "runsock.h"
#include "util.h"

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

const char *runsock_text(const struct rsock *r, char buf[RUNSOCK_TEXT_MAX])
{
	char ip[IPADDR_STRLEN];

	ipaddr_format(&r->addr, ip);
	snprintf(buf, RUNSOCK_TEXT_MAX, r->addr.family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
		 (unsigned)r->port);
	return buf;
}

/* ---- the instance's configuration ------------------------------------------ */

static bool family_wanted(const char *protocols, sa_family_t family)
{
	if (ascii_strcasecmp(protocols, "ipv4") == 0)
		return family == AF_INET;
	if (ascii_strcasecmp(protocols, "ipv6") == 0)
		return family == AF_INET6;
	return true;
}

/* wanted: inet_interfaces expanded, as the instance expands it; a mapped
 * address is bound as the IPv4 address it carries. */
static bool wanted(const struct cf *cf, struct iflist *out, char *err, size_t errlen)
{
	struct iflist parsed;
	const char *protocols = cf_str(cf, P_inet_protocols);
	size_t k = 0;

	if (!iflist_parse(cf_str(cf, P_inet_interfaces), &parsed, err, errlen))
		return false;
	bool ok = iflist_expand(&parsed, out, err, errlen);
	iflist_free(&parsed);
	if (!ok)
		return false;
	for (size_t i = 0; i < out->n; i++) {
		struct ipaddr a;
		ipaddr_unmap(&out->addrs[i], &a);
		if (family_wanted(protocols, a.family))
			out->addrs[k++] = a;
	}
	out->n = k;
	if (k == 0) {
		iflist_free(out);
		return fail(err, errlen, "inet_interfaces has no address for inet_protocols = %s",
			    protocols);
	}
	return true;
}

bool inst_conf_read(const char *path, struct inst_conf *out, char *err, size_t errlen)
{
	struct cf *cf = xcalloc(1, sizeof *cf);
	struct diag d = DIAG_INIT;
	bool ok;

	memset(out, 0, sizeof *out);
	cf_init(cf);
	cf_parse_file(cf, path, &d); /* cf_finalize reports the rest too */
	ok = cf_finalize(cf, path, &d) && d.errors == 0;
	if (!ok)
		fail(err, errlen, "%s: %u error%s", path, d.errors, d.errors == 1 ? "" : "s");
	else if (wanted(cf, &out->addrs, err, errlen)) {
		out->port = (uint16_t)cf_num(cf, P_smtpd_listen_port);
		out->queue_dir = xstrdup(cf_str(cf, P_queue_directory));
	} else {
		ok = false;
	}
	cf_free(cf);
	free(cf);
	return ok;
}

void inst_conf_free(struct inst_conf *c)
{
	iflist_free(&c->addrs);
	free(c->queue_dir);
	c->queue_dir = NULL;
}

/* ---- binding ------------------------------------------------------------------ */

static bool set_int(int fd, int level, int opt, int v)
{
	return setsockopt(fd, level, opt, &v, sizeof v) == 0;
}

static bool set_freebind(int fd, sa_family_t family)
{
#ifdef IPV6_FREEBIND
	if (family == AF_INET6 && set_int(fd, SOL_IPV6, IPV6_FREEBIND, 1))
		return true;
#endif
	return set_int(fd, SOL_IP, IP_FREEBIND, 1);
}

/* bind_one: a listening socket on r->addr:r->port. Freebind always: the
 * address may be configured after the supervisor starts (systemd's
 * FreeBind=yes). Blocking: the instance makes its copy non-blocking. */
static bool bind_one(struct rsock *r, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char txt[RUNSOCK_TEXT_MAX];
	const char *what = NULL;

	runsock_text(r, txt);
	r->fd = socket(r->addr.family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
	if (r->fd < 0)
		return fail(err, errlen, "socket for %s: %s", txt, strerror(errno));
	if (!set_int(r->fd, SOL_SOCKET, SO_REUSEADDR, 1))
		what = "SO_REUSEADDR";
	else if (r->addr.family == AF_INET6 && !set_int(r->fd, IPPROTO_IPV6, IPV6_V6ONLY, 1))
		what = "IPV6_V6ONLY";
	else if (!set_freebind(r->fd, r->addr.family))
		what = "IP_FREEBIND";
	ipaddr_to_sockaddr(&r->addr, r->port, &ss, &len);
	if (what == NULL && bind(r->fd, (struct sockaddr *)&ss, len) < 0)
		what = "bind";
	else if (what == NULL && listen(r->fd, RUNSOCK_BACKLOG) < 0)
		what = "listen";
	if (what == NULL)
		return true;
	fail(err, errlen, "%s %s: %s", what, txt, strerror(errno));
	close(r->fd);
	r->fd = -1;
	return false;
}

/* find: the socket of s on a:port, or NULL. */
static struct rsock *find(struct rsocks *s, const struct ipaddr *a, uint16_t port)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].fd >= 0 && s->v[i].port == port && ipaddr_equal(&s->v[i].addr, a))
			return &s->v[i];
	return NULL;
}

bool runsock_sync(struct rsocks *s, const struct inst_conf *c, char *err, size_t errlen)
{
	struct rsock *v = xcalloc(c->addrs.n, sizeof *v);
	size_t n = 0;

	/* Bind what is missing first: a failure leaves s untouched. */
	for (; n < c->addrs.n; n++) {
		v[n] = (struct rsock){ -1, c->addrs.addrs[n], c->port };
		if (find(s, &v[n].addr, v[n].port) == NULL && !bind_one(&v[n], err, errlen))
			break;
	}
	if (n < c->addrs.n) {
		for (size_t i = 0; i < n; i++)
			if (v[i].fd >= 0)
				close(v[i].fd);
		free(v);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		struct rsock *old = v[i].fd < 0 ? find(s, &v[i].addr, v[i].port) : NULL;
		if (old) {
			v[i].fd = old->fd;
			old->fd = -1;
		}
	}
	runsock_close(s);
	s->v = v;
	s->n = n;
	return true;
}

void runsock_close(struct rsocks *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].fd >= 0)
			close(s->v[i].fd);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}
