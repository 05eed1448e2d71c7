/* listen.c: the instance's listening sockets: adopt the ones passed with
 * LISTEN_FDS (each checked by its full address, never by port alone), or
 * bind one per inet_interfaces address. Setup code: every failure is one
 * phrase for the caller, who makes it fatal. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "buf.h"
#include "cf.h"
#include "listen.h"
#include "log.h"
#include "util.h"

#define LISTEN_BACKLOG 511

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

const char *sockaddr_text(const struct ipaddr *a, uint16_t port, char buf[SOCKADDR_TEXT_MAX])
{
	char ip[IPADDR_STRLEN];

	ipaddr_format(a, ip);
	if (a->family == AF_INET6)
		snprintf(buf, SOCKADDR_TEXT_MAX, "[%s]:%u", ip, (unsigned)port);
	else
		snprintf(buf, SOCKADDR_TEXT_MAX, "%s:%u", ip, (unsigned)port);
	return buf;
}

/* ---- the wanted addresses ---------------------------------------------- */

static bool family_wanted(const char *protocols, sa_family_t family)
{
	if (ascii_strcasecmp(protocols, "ipv4") == 0)
		return family == AF_INET;
	if (ascii_strcasecmp(protocols, "ipv6") == 0)
		return family == AF_INET6;
	return true;
}

/* keep_family: drop the addresses inet_protocols excludes; a mapped
 * address counts as (and is bound as) the IPv4 address it carries. */
static void keep_family(struct iflist *l, const char *protocols)
{
	size_t k = 0;

	for (size_t i = 0; i < l->n; i++) {
		struct ipaddr a;
		ipaddr_unmap(&l->addrs[i], &a);
		if (family_wanted(protocols, a.family))
			l->addrs[k++] = a;
	}
	l->n = k;
}

bool listen_wanted(const struct cf *cf, struct iflist *out, char *err, size_t errlen)
{
	struct iflist parsed, all;
	const char *protocols = cf_str(cf, P_inet_protocols);

	if (!iflist_parse(cf_str(cf, P_inet_interfaces), &parsed, err, errlen))
		return false;
	bool ok = iflist_expand(&parsed, &all, err, errlen);
	iflist_free(&parsed);
	if (!ok)
		return false;
	keep_family(&all, protocols);
	if (all.n == 0) {
		iflist_free(&all);
		return fail(err, errlen, "inet_interfaces has no address for inet_protocols = %s",
			    protocols);
	}
	*out = all;
	return true;
}

/* ---- passed sockets ---------------------------------------------------- */

/* same_address: the socket listens on exactly a:port (the IPv4-mapped
 * form of an IPv4 address included: a dual-stack socket bound to it). */
static bool same_address(int fd, const struct ipaddr *a, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;

	ipaddr_to_sockaddr(a, port, &ss, &len);
	if (sd_is_socket_sockaddr(fd, SOCK_STREAM, (struct sockaddr *)&ss, len, 1) > 0)
		return true;
	if (a->family != AF_INET)
		return false;
	struct ipaddr mapped = { .family = AF_INET6 };
	mapped.u.v6.s6_addr[10] = 0xff;
	mapped.u.v6.s6_addr[11] = 0xff;
	memcpy(&mapped.u.v6.s6_addr[12], &a->u.v4, 4);
	ipaddr_to_sockaddr(&mapped, port, &ss, &len);
	return sd_is_socket_sockaddr(fd, SOCK_STREAM, (struct sockaddr *)&ss, len, 1) > 0;
}

static bool is_tcp(int fd)
{
	int proto = 0;
	socklen_t len = sizeof proto;

	return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP;
}

static bool set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

/* local_address: where fd is bound, as an IP address and port. */
static bool local_address(int fd, struct ipaddr *a, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return false;
	if (!ipaddr_from_sockaddr((struct sockaddr *)&ss, len, a, port))
		return false;
	ipaddr_unmap(a, a);
	return true;
}

static bool adopt_one(int fd, const char *name, const struct iflist *want, uint16_t port,
		      struct listener *l, char *err, size_t errlen)
{
	char txt[SOCKADDR_TEXT_MAX];
	int r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);

	if (r < 0)
		return fail(err, errlen, "passed socket %s (fd %d): %s", name, fd, strerror(-r));
	if (r == 0 || !local_address(fd, &l->addr, &l->port) || !is_tcp(fd))
		return fail(err, errlen, "passed socket %s (fd %d) is not a listening TCP socket",
			    name, fd);
	bool found = false;
	for (size_t i = 0; i < want->n && !found; i++)
		found = same_address(fd, &want->addrs[i], port);
	if (!found)
		return fail(err, errlen, "passed socket %s (%s) matches no address in "
			    "inet_interfaces at smtpd_listen_port %u", name,
			    sockaddr_text(&l->addr, l->port, txt), (unsigned)port);
	if (!set_nonblock(fd))
		return fail(err, errlen, "passed socket %s: fcntl: %s", name, strerror(errno));
	l->fd = fd;
	l->passed = true;
	snprintf(l->name, sizeof l->name, "%s", name);
	return true;
}

/* note_unserved: an explicit address with no passed socket is not
 * served; say so ("all" expands to every address: no such warning). */
static void note_unserved(const struct cf *cf, const struct iflist *want,
			  const struct listeners *ls, uint16_t port);

/* printable_name: LISTEN_FDNAMES comes from our parent, but it still
 * goes into log lines: escaped and bounded. */
static void printable_name(const char *s, char out[LISTENER_NAME_MAX])
{
	struct buf b = BUF_INIT;

	buf_put_printable(&b, s, strnlen(s, LISTENER_NAME_MAX / 4 - 1));
	snprintf(out, LISTENER_NAME_MAX, "%s", buf_cstr(&b));
	buf_free(&b);
}

static void close_passed(int n)
{
	for (int i = 0; i < n; i++)
		close(SD_LISTEN_FDS_START + i);
}

static bool adopt_passed(const struct cf *cf, int n, char **names, const struct iflist *want,
			 struct listeners *out, char *err, size_t errlen)
{
	uint16_t port = (uint16_t)cf_num(cf, P_smtpd_listen_port);

	out->v = xcalloc((size_t)n, sizeof *out->v);
	for (int i = 0; i < n; i++) {
		char name[LISTENER_NAME_MAX];
		printable_name(names && names[i] ? names[i] : "unknown", name);
		if (!adopt_one(SD_LISTEN_FDS_START + i, name, want, port, &out->v[i], err, errlen)) {
			close_passed(n);
			free(out->v);
			out->v = NULL;
			return false;
		}
		out->n++;
	}
	note_unserved(cf, want, out, port);
	return true;
}

/* ---- binding ourselves ------------------------------------------------- */

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

static int socket_for(const struct ipaddr *a, bool freebind, const char *txt,
		      char *err, size_t errlen)
{
	int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);

	if (fd < 0) {
		fail(err, errlen, "socket for %s: %s", txt, strerror(errno));
		return -1;
	}
	const char *what = NULL;
	if (!set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1))
		what = "SO_REUSEADDR";
	else if (a->family == AF_INET6 && !set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1))
		what = "IPV6_V6ONLY";
	else if (freebind && !set_freebind(fd, a->family))
		what = "IP_FREEBIND";
	if (what) {
		fail(err, errlen, "%s for %s: %s", what, txt, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static bool bind_one(const struct ipaddr *a, uint16_t port, bool freebind,
		     struct listener *l, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char txt[SOCKADDR_TEXT_MAX];

	sockaddr_text(a, port, txt);
	int fd = socket_for(a, freebind, txt, err, errlen);
	if (fd < 0)
		return false;
	ipaddr_to_sockaddr(a, port, &ss, &len);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		fail(err, errlen, "bind %s: %s", txt, strerror(errno));
		close(fd);
		return false;
	}
	l->fd = fd;
	l->addr = *a;
	l->port = port;
	l->passed = false;
	snprintf(l->name, sizeof l->name, "%s", txt);
	return true;
}

static bool bind_all(const struct cf *cf, const struct iflist *want, struct listeners *out,
		     char *err, size_t errlen)
{
	uint16_t port = (uint16_t)cf_num(cf, P_smtpd_listen_port);
	bool freebind = cf_num(cf, P_smtpd_freebind) != 0;

	out->v = xcalloc(want->n, sizeof *out->v);
	for (size_t i = 0; i < want->n; i++) {
		if (!bind_one(&want->addrs[i], port, freebind, &out->v[i], err, errlen)) {
			listen_close(out);
			return false;
		}
		out->n++;
	}
	return true;
}

/* ---- the interface ----------------------------------------------------- */

static bool is_explicit(const struct cf *cf)
{
	struct iflist parsed;
	char err[256];

	if (!iflist_parse(cf_str(cf, P_inet_interfaces), &parsed, err, sizeof err))
		return false;
	bool expl = parsed.kind == IFLIST_ADDRS;
	iflist_free(&parsed);
	return expl;
}

static bool served(const struct listeners *ls, const struct ipaddr *a, uint16_t port)
{
	for (size_t k = 0; k < ls->n; k++)
		if (ipaddr_equal(&ls->v[k].addr, a) && ls->v[k].port == port)
			return true;
	return false;
}

static void note_unserved(const struct cf *cf, const struct iflist *want,
			  const struct listeners *ls, uint16_t port)
{
	char txt[SOCKADDR_TEXT_MAX];

	if (!is_explicit(cf))
		return;
	for (size_t i = 0; i < want->n; i++)
		if (!served(ls, &want->addrs[i], port))
			msg_warn("no passed socket for %s (inet_interfaces): not listening there",
				 sockaddr_text(&want->addrs[i], port, txt));
}

static void free_names(char **names, int n)
{
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
}

bool listen_open(const struct cf *cf, struct listeners *out, char *err, size_t errlen)
{
	struct iflist want;
	char **names = NULL;
	bool ok;

	out->n = 0;
	out->v = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	if (n < 0)
		return fail(err, errlen, "LISTEN_FDS: %s", strerror(-n));
	if (!listen_wanted(cf, &want, err, errlen)) {
		close_passed(n);
		free_names(names, n);
		return false;
	}
	if (n > 0)
		ok = adopt_passed(cf, n, names, &want, out, err, errlen);
	else
		ok = bind_all(cf, &want, out, err, errlen);
	iflist_free(&want);
	free_names(names, n);
	return ok;
}

void listen_close(struct listeners *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].fd >= 0)
			close(l->v[i].fd);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}
