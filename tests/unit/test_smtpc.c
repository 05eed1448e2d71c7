/* test_smtpc.c: instances/smtpc.c. The reply parser, table-driven (good
 * and bad lines, enhanced status codes, printable text, EHLO keywords);
 * then whole dialogues over real sockets against a scripted server: a
 * forked child that accepts, checks every command line it reads against
 * its script (CRLF included), writes canned replies, stores the message
 * content it receives, and reports a mismatch through its exit status.
 * The client runs on a real sd-event loop in this process. STARTTLS
 * against the same server, which turns TLS server (tls.h) on a step of
 * its script, with certificates made for the test (tlscert.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "buf.h"
#include "log.h"
#include "queue.h"
#include "smtpc.h"
#include "tls.h"
#include "util.h"
#include "testutil.h"
#include "tlscert.h"

#define HELO "client.example.org"

/* ---- the reply parser --------------------------------------------------- */

struct ln {
	const char *s;
	size_t n;
};
#define LN(x) { x, sizeof(x) - 1 }

struct pcase {
	const char *name;
	struct ln in[6];
	enum smtpc_rp want; /* for the last line; the others must say MORE */
	int code;
	const char *text, *dsn;
};

static const struct pcase pcases[] = {
	{ "single", { LN("250 ok") }, SMTPC_RP_DONE, 250, "250 ok", "" },
	{ "bare code", { LN("250") }, SMTPC_RP_DONE, 250, "250", "" },
	{ "code and space", { LN("250 ") }, SMTPC_RP_DONE, 250, "250", "" },
	{ "enhanced", { LN("250 2.1.0 Ok") }, SMTPC_RP_DONE, 250, "250 2.1.0 Ok", "2.1.0" },
	{ "enhanced 3 digits", { LN("550 5.123.456 x") }, SMTPC_RP_DONE, 550, "550 5.123.456 x",
	  "5.123.456" },
	{ "enhanced alone", { LN("450 4.7.1") }, SMTPC_RP_DONE, 450, "450 4.7.1", "4.7.1" },
	{ "enhanced wrong class", { LN("550 2.1.1 odd") }, SMTPC_RP_DONE, 550, "550 2.1.1 odd", "" },
	{ "enhanced class 3", { LN("354 3.0.0 go") }, SMTPC_RP_DONE, 354, "354 3.0.0 go", "" },
	{ "enhanced 4-digit subject", { LN("550 5.1234.1 x") }, SMTPC_RP_DONE, 550,
	  "550 5.1234.1 x", "" },
	{ "enhanced glued", { LN("550 5.1.1x") }, SMTPC_RP_DONE, 550, "550 5.1.1x", "" },
	{ "enhanced no detail", { LN("550 5.1. x") }, SMTPC_RP_DONE, 550, "550 5.1. x", "" },
	{ "multi-line", { LN("250-first"), LN("250 second") }, SMTPC_RP_DONE, 250,
	  "250 first second", "" },
	{ "multi-line enhanced",
	  { LN("550-5.7.1 line one"), LN("550-5.7.1 line two"), LN("550 5.7.1 line three") },
	  SMTPC_RP_DONE, 550, "550 5.7.1 line one line two line three", "5.7.1" },
	{ "multi-line empty continuation", { LN("250-"), LN("250 x") }, SMTPC_RP_DONE, 250,
	  "250 x", "" },
	{ "multi-line bare end", { LN("250-a"), LN("250") }, SMTPC_RP_DONE, 250, "250 a", "" },
	{ "continues", { LN("250-a") }, SMTPC_RP_MORE, 0, NULL, NULL },
	{ "printable", { LN("250 caf\xc3\xa9\ttab\x01\x7f\r") }, SMTPC_RP_DONE, 250,
	  "250 caf???tab???", "" },
	{ "empty", { LN("") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "one digit", { LN("2") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "two digits", { LN("25") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "two digits text", { LN("25 ok") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "non-digit", { LN("2x0 ok") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "letters", { LN("abc ok") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "four digits", { LN("2500 ok") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "bad separator", { LN("250x ok") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "tab separator", { LN("250\tok") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "code 199", { LN("199 x") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "code 600", { LN("600 x") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "code 000", { LN("000 x") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "code 999", { LN("999 x") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "code changes", { LN("250-a"), LN("251 b") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "class changes", { LN("250-a"), LN("550 b") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "NUL in text", { LN("250 a\0b") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "NUL in code", { LN("2\00050 a") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "NUL in continuation", { LN("250-a"), LN("250 \0") }, SMTPC_RP_BAD, 0, NULL, NULL },
	{ "junk in continuation", { LN("250-a"), LN("hello") }, SMTPC_RP_BAD, 0, NULL, NULL },
};

static void test_reply_table(void **state)
{
	(void)state;
	for (size_t k = 0; k < ARRAY_LEN(pcases); k++) {
		const struct pcase *pc = &pcases[k];
		struct smtpc_reply r;
		size_t n = 0;
		enum smtpc_rp rp = SMTPC_RP_MORE;

		while (n < ARRAY_LEN(pc->in) && pc->in[n].s != NULL)
			n++;
		smtpc_reply_init(&r);
		for (size_t i = 0; i < n; i++) {
			rp = smtpc_reply_line(&r, pc->in[i].s, pc->in[i].n);
			if (i + 1 < n && rp != SMTPC_RP_MORE)
				fail_msg("%s: line %zu gave %d, not MORE", pc->name, i, (int)rp);
		}
		if (rp != pc->want)
			fail_msg("%s: gave %d, want %d", pc->name, (int)rp, (int)pc->want);
		if (pc->want == SMTPC_RP_DONE) {
			if (r.code != pc->code || strcmp(r.text, pc->text) != 0 ||
			    strcmp(r.dsn, pc->dsn) != 0)
				fail_msg("%s: got %d \"%s\" dsn \"%s\", want %d \"%s\" \"%s\"", pc->name,
					 r.code, r.text, r.dsn, pc->code, pc->text, pc->dsn);
			if (r.nlines != n)
				fail_msg("%s: %zu lines counted, %zu fed", pc->name, r.nlines, n);
		}
		smtpc_reply_free(&r);
	}
}

/* Line length: SMTPC_LINE_MAX bytes are a line, one more is not; the
 * text is cut at SMTPC_REPLY_MAX - 1 whatever comes in. */
static void test_reply_bounds(void **state)
{
	char *line = xmalloc(SMTPC_LINE_MAX + 2);
	struct smtpc_reply r;
	(void)state;

	memcpy(line, "250 ", 4);
	memset(line + 4, 'x', SMTPC_LINE_MAX - 2);
	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_line(&r, line, SMTPC_LINE_MAX), SMTPC_RP_DONE);
	assert_int_equal(strlen(r.text), SMTPC_REPLY_MAX - 1);
	assert_memory_equal(r.text, "250 xxx", 7);
	smtpc_reply_free(&r);

	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_line(&r, line, SMTPC_LINE_MAX + 1), SMTPC_RP_BAD);
	smtpc_reply_free(&r);

	/* Many short lines fill the text up to its bound, never past it. */
	smtpc_reply_init(&r);
	for (int i = 0; i < 60; i++)
		assert_int_equal(smtpc_reply_line(&r, "250-0123456789", 14), SMTPC_RP_MORE);
	assert_int_equal(smtpc_reply_line(&r, "250 end", 7), SMTPC_RP_DONE);
	assert_int_equal(strlen(r.text), SMTPC_REPLY_MAX - 1);
	smtpc_reply_free(&r);
	free(line);
}

/* SMTPC_REPLY_LINES lines make a reply; one more is an endless reply. */
static void test_reply_line_count(void **state)
{
	struct smtpc_reply r;
	(void)state;

	smtpc_reply_init(&r);
	for (int i = 0; i < SMTPC_REPLY_LINES - 1; i++)
		assert_int_equal(smtpc_reply_line(&r, "250-x", 5), SMTPC_RP_MORE);
	assert_int_equal(smtpc_reply_line(&r, "250 y", 5), SMTPC_RP_DONE);
	assert_int_equal(r.nlines, SMTPC_REPLY_LINES);
	smtpc_reply_free(&r);

	/* A line after the end of a reply is the caller's bug: refused. */
	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_line(&r, "250 a", 5), SMTPC_RP_DONE);
	assert_int_equal(smtpc_reply_line(&r, "250 b", 5), SMTPC_RP_BAD);
	assert_string_equal(r.text, "250 a");
	smtpc_reply_free(&r);

	smtpc_reply_init(&r);
	for (int i = 0; i < SMTPC_REPLY_LINES; i++)
		assert_int_equal(smtpc_reply_line(&r, "250-x", 5), SMTPC_RP_MORE);
	assert_int_equal(smtpc_reply_line(&r, "250 y", 5), SMTPC_RP_BAD);
	smtpc_reply_free(&r);
}

static void test_reply_ehlo_keywords(void **state)
{
	static const char *const lines[] = {
		"250-mx.example.net Hello", "250-pipelining", "250-SIZE 10240000",
		"250-8bitmime", "250-X\001y z", "250-", "250 STARTTLS",
	};
	static const char *const want[] = {
		"PIPELINING", "SIZE 10240000", "8BITMIME", "X?Y Z", "STARTTLS",
	};
	struct smtpc_reply r;
	char *longline = xmalloc(1000);
	(void)state;

	smtpc_reply_init(&r);
	for (size_t i = 0; i < ARRAY_LEN(lines) - 1; i++)
		assert_int_equal(smtpc_reply_line(&r, lines[i], strlen(lines[i])), SMTPC_RP_MORE);
	/* An overlong keyword line is dropped, not cut. */
	memcpy(longline, "250-SIZE ", 9);
	memset(longline + 9, '9', 991);
	assert_int_equal(smtpc_reply_line(&r, longline, 1000), SMTPC_RP_MORE);
	assert_int_equal(smtpc_reply_line(&r, lines[ARRAY_LEN(lines) - 1],
					  strlen(lines[ARRAY_LEN(lines) - 1])), SMTPC_RP_DONE);
	assert_int_equal(r.next, ARRAY_LEN(want));
	for (size_t i = 0; i < ARRAY_LEN(want); i++)
		assert_string_equal(r.ext[i], want[i]);
	smtpc_reply_free(&r);
	assert_null(r.ext);
	assert_int_equal(r.next, 0);

	/* A single-line 250 has no keywords. */
	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_line(&r, "250 mx", 6), SMTPC_RP_DONE);
	assert_int_equal(r.next, 0);
	smtpc_reply_free(&r);
	free(longline);
}

/* ---- the scripted server ----------------------------------------------- */

/* Script steps, one string each, by their first character:
 *   A       accept the next connection
 *   Pip     the client's address must be ip
 *   <line   the next line read must be exactly line CRLF
 *   >line   write line CRLF
 *   =text   write text as it is
 *   Xn      write n 'x' bytes
 *   D       read content up to the final dot; store it in DIR/data.N
 *   dn      read n bytes of content (or less if the client stops)
 *   C       close the connection
 *   E       the client must close now (nothing more to read)
 *   W       read and discard until the client closes
 *   Sms     sleep
 *   T       the TLS handshake as server, with DIR/srv.crt and DIR/srv.key;
 *           from then on everything is read and written through TLS
 *   Tq      the same, but a failed handshake is no error (the client may
 *           give up as soon as it has seen the certificate) */

struct rd {
	int fd;
	size_t off, len;
	char b[65536];
};

/* The server's TLS session, after a T step. */
static struct tls *srv_tls;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "scripted server: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	_exit(1);
}

static void wait_fd(int fd, short events)
{
	struct pollfd p = { fd, events, 0 };

	if (poll(&p, 1, 15000) != 1)
		die("no input for 15 s");
}

/* tls_fill: rd_fill inside TLS; an error reads as the end (the client
 * may close without close_notify, or reset the connection). */
static bool tls_fill(struct rd *r)
{
	size_t n = 0;
	uint32_t ev = EPOLLIN;
	enum tls_rc rc;

	if (!tls_pending(srv_tls))
		wait_fd(r->fd, POLLIN);
	while ((rc = tls_read(srv_tls, r->b, sizeof r->b, &n, &ev)) == TLS_WANT)
		wait_fd(r->fd, ev == EPOLLOUT ? POLLOUT : POLLIN);
	r->off = 0;
	r->len = rc == TLS_OK ? n : 0;
	return r->len > 0;
}

/* rd_fill: more input; false at EOF. */
static bool rd_fill(struct rd *r)
{
	if (srv_tls)
		return tls_fill(r);
	wait_fd(r->fd, POLLIN);
	ssize_t n = read(r->fd, r->b, sizeof r->b);
	if (n < 0 && errno == ECONNRESET)
		n = 0;
	if (n < 0)
		die("read: %s", strerror(errno));
	r->off = 0;
	r->len = (size_t)n;
	return n > 0;
}

/* rd_line: the next line with its LF (and CR) into b; false at EOF. */
static bool rd_line(struct rd *r, struct buf *b)
{
	buf_reset(b);
	for (;;) {
		if (r->off == r->len && !rd_fill(r))
			return false;
		char *nl = memchr(r->b + r->off, '\n', r->len - r->off);
		size_t n = nl ? (size_t)(nl - (r->b + r->off)) + 1 : r->len - r->off;
		buf_append(b, r->b + r->off, n);
		r->off += n;
		if (nl)
			return true;
	}
}

static void put(int fd, const char *p, size_t n)
{
	while (n > 0 && srv_tls) {
		size_t w = 0;
		uint32_t ev = 0;
		enum tls_rc rc = tls_write(srv_tls, p, n, &w, &ev);
		if (rc == TLS_WANT)
			continue;
		if (rc != TLS_OK)
			die("TLS write: %s", tls_error(srv_tls));
		p += w;
		n -= w;
	}
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			die("write: %s", strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

static void read_content(struct rd *r, const char *dir, int n)
{
	struct buf line = BUF_INIT, all = BUF_INIT;
	char path[512];

	for (;;) {
		if (!rd_line(r, &line))
			die("EOF in content");
		if (strcmp(buf_cstr(&line), ".\r\n") == 0)
			break;
		buf_append(&all, line.data, line.len);
	}
	snprintf(path, sizeof path, "%s/data.%d", dir, n);
	FILE *fp = fopen(path, "w");
	if (fp == NULL || fwrite(all.data, 1, all.len, fp) != all.len || fclose(fp) != 0)
		die("cannot store %s", path);
	buf_free(&line);
	buf_free(&all);
}

static void check_peer(int fd, const char *want)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	char ip[INET_ADDRSTRLEN];

	if (getpeername(fd, (struct sockaddr *)&sin, &len) < 0 || sin.sin_family != AF_INET)
		die("getpeername");
	inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof ip);
	if (strcmp(ip, want) != 0)
		die("client address %s, want %s", ip, want);
}

/* tls_accept: the T step. */
static void tls_accept(struct rd *r, const char *dir, bool may_fail)
{
	char crt[256], key[256], err[256];
	uint32_t ev = 0;
	enum tls_rc rc;

	snprintf(crt, sizeof crt, "%s/srv.crt", dir);
	snprintf(key, sizeof key, "%s/srv.key", dir);
	struct tls_ctx *x = tls_server_ctx(crt, key, err, sizeof err);
	if (x == NULL)
		die("%s", err);
	if (r->off < r->len)
		die("input before the TLS handshake: \"%.*s\"", (int)(r->len - r->off),
		    r->b + r->off);
	srv_tls = tls_server(x, r->fd);
	if (srv_tls == NULL)
		die("tls_server");
	while ((rc = tls_handshake(srv_tls, &ev)) == TLS_WANT)
		wait_fd(r->fd, ev == EPOLLOUT ? POLLOUT : POLLIN);
	if (rc != TLS_OK && !may_fail)
		die("TLS handshake: %s", tls_error(srv_tls));
	if (rc != TLS_OK) {
		tls_free(srv_tls);
		srv_tls = NULL;
	}
	tls_ctx_free(x);
}

static void run_script(int lfd, const char *const *steps, const char *dir)
{
	struct rd *r = xcalloc(1, sizeof *r);
	struct buf line = BUF_INIT;
	int ndata = 0;

	r->fd = -1;
	for (size_t i = 0; steps[i] != NULL; i++) {
		const char *s = steps[i], *arg = s + 1;
		switch (s[0]) {
		case 'A':
			r->fd = accept(lfd, NULL, NULL);
			if (r->fd < 0)
				die("accept: %s", strerror(errno));
			r->off = r->len = 0;
			break;
		case 'P':
			check_peer(r->fd, arg);
			break;
		case '<':
			if (!rd_line(r, &line))
				die("EOF, expected \"%s\"", arg);
			if (line.len < 2 || line.data[line.len - 2] != '\r' ||
			    line.len - 2 != strlen(arg) || memcmp(line.data, arg, line.len - 2) != 0)
				die("step %zu: expected \"%s\" CRLF, got \"%s\"", i, arg, buf_cstr(&line));
			break;
		case '>':
			buf_reset(&line);
			buf_puts(&line, arg);
			buf_puts(&line, "\r\n");
			put(r->fd, line.data, line.len);
			break;
		case '=':
			put(r->fd, arg, strlen(arg));
			break;
		case 'X': {
			size_t n = strtoul(arg, NULL, 10);
			char *x = xmalloc(n);
			memset(x, 'x', n);
			put(r->fd, x, n);
			free(x);
			break;
		}
		case 'D':
			read_content(r, dir, ndata++);
			break;
		case 'd': {
			size_t want = strtoul(arg, NULL, 10), got = 0;
			while (got < want) {
				if (r->off == r->len && !rd_fill(r))
					break;
				size_t n = r->len - r->off < want - got ? r->len - r->off : want - got;
				r->off += n;
				got += n;
			}
			break;
		}
		case 'T':
			tls_accept(r, dir, *arg == 'q');
			break;
		case 'C':
			if (srv_tls)
				tls_free(srv_tls);
			srv_tls = NULL;
			close(r->fd);
			r->fd = -1;
			break;
		case 'E':
			if (r->off < r->len || rd_fill(r))
				die("step %zu: expected the client to close, got \"%.*s\"", i,
				    (int)(r->len - r->off), r->b + r->off);
			break;
		case 'W':
			while (rd_fill(r))
				;
			break;
		case 'S':
			usleep((useconds_t)strtoul(arg, NULL, 10) * 1000);
			break;
		default:
			die("bad step \"%s\"", s);
		}
	}
	_exit(0);
}

/* ---- fixture --------------------------------------------------------------- */

struct tc;

struct fix {
	char dir[64];
	sd_event *e;
	pid_t child;
	struct sockaddr_storage ss; /* where the server listens */
	socklen_t sslen;
	int lfd;
};

static int setup(void **state)
{
	struct fix *f = xcalloc(1, sizeof *f);

	snprintf(f->dir, sizeof f->dir, "/tmp/test_smtpc.XXXXXX");
	if (mkdtemp(f->dir) == NULL || sd_event_new(&f->e) < 0)
		return -1;
	f->child = -1;
	f->lfd = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	if (f->child > 0) {
		kill(f->child, SIGKILL);
		waitpid(f->child, NULL, 0);
	}
	if (f->lfd >= 0)
		close(f->lfd);
	sd_event_unref(f->e);
	rm_tree(f->dir);
	free(f);
	return 0;
}

static int listen_tcp(struct fix *f, const char *ip)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&f->ss;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(&f->ss, 0, sizeof f->ss);
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &sin->sin_addr);
	f->sslen = sizeof *sin;
	assert_int_equal(bind(fd, (struct sockaddr *)sin, f->sslen), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&f->ss, &f->sslen), 0);
	return fd;
}

static int listen_unix(struct fix *f)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&f->ss;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(&f->ss, 0, sizeof f->ss);
	sun->sun_family = AF_UNIX;
	snprintf(sun->sun_path, sizeof sun->sun_path, "%s/lmtp", f->dir);
	f->sslen = sizeof *sun;
	assert_int_equal(bind(fd, (struct sockaddr *)sun, f->sslen), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

static uint16_t port_of(const struct fix *f)
{
	return ntohs(((const struct sockaddr_in *)&f->ss)->sin_port);
}

/* serve: fork the scripted server on a fresh listener (TCP on
 * 127.0.0.1, or UNIX when unix_sock). */
static void serve(struct fix *f, bool unix_sock, const char *const *steps)
{
	int lfd = unix_sock ? listen_unix(f) : listen_tcp(f, "127.0.0.1");

	fflush(NULL);
	f->child = fork();
	assert_true(f->child >= 0);
	if (f->child == 0) {
		alarm(30);
		run_script(lfd, steps, f->dir);
	}
	close(lfd);
}

/* server_ok: the script ran to its end. */
static void server_ok(struct fix *f)
{
	int st;

	assert_int_equal(waitpid(f->child, &st, 0), f->child);
	f->child = -1;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("scripted server failed (status 0x%x)", st);
}

static char *slurp(const char *path, size_t *n)
{
	int fd = open(path, O_RDONLY);
	struct buf b = BUF_INIT;
	char chunk[65536];
	ssize_t r;

	assert_true(fd >= 0);
	while ((r = read(fd, chunk, sizeof chunk)) > 0)
		buf_append(&b, chunk, (size_t)r);
	close(fd);
	*n = b.len;
	return buf_steal(&b);
}

static void assert_data(struct fix *f, int n, const char *want, size_t wantlen)
{
	char path[128];
	size_t len;

	snprintf(path, sizeof path, "%s/data.%d", f->dir, n);
	char *got = slurp(path, &len);
	if (len != wantlen || memcmp(got, want, len) != 0)
		fail_msg("content %d: got %zu bytes \"%.300s\", want %zu \"%.300s\"", n, len, got,
			 wantlen, want);
	free(got);
}

/* ---- messages --------------------------------------------------------------- */

static void put_record(FILE *fp, char type, const void *p, size_t n)
{
	unsigned char h[5] = { (unsigned char)type, (unsigned char)(n >> 24),
			       (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n };

	assert_int_equal(fwrite(h, 1, 5, fp), 5);
	if (n > 0)
		assert_int_equal(fwrite(p, 1, n, fp), n);
}

/* message: content as DATA records (one per chunk; chunks NULL-ended),
 * then END; returns the file open for reading, content at offset 0. */
static int message(struct fix *f, const char *name, const char *const *chunks)
{
	char path[128];

	snprintf(path, sizeof path, "%s/%s", f->dir, name);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	for (size_t i = 0; chunks[i] != NULL; i++)
		put_record(fp, 'D', chunks[i], strlen(chunks[i]));
	put_record(fp, 'E', "", 0);
	assert_int_equal(fclose(fp), 0);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* big_message: n bytes of 76-character lines. */
static int big_message(struct fix *f, size_t n)
{
	char path[128];
	char *p = xmalloc(n);

	for (size_t i = 0; i < n; i++)
		p[i] = i % 78 == 76 ? '\r' : i % 78 == 77 ? '\n' : (char)('a' + i % 26);
	snprintf(path, sizeof path, "%s/big", f->dir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	for (size_t off = 0; off < n; off += 1 << 20)
		put_record(fp, 'D', p + off, n - off < (1u << 20) ? n - off : 1u << 20);
	put_record(fp, 'E', "", 0);
	assert_int_equal(fclose(fp), 0);
	free(p);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* ---- the client side -------------------------------------------------------- */

#define MAXT 4

struct tc {
	struct smtpc_txn t[MAXT];
	struct smtpc_rcpt r[MAXT][3];
	size_t nt, next;
	int ready, done, closed;
	int done_in_send;         /* done() calls seen inside smtpc_send */
	bool usable[MAXT];
	bool abort_in_done, send_when_dead;
	bool idle;                /* ready() leaves the connection idle */
	bool pipelining;
	uint64_t size_limit;
	char peer[512];
	char tls[128];            /* smtpc_tls_summary when ready */
	struct smtpc_result why;
	struct smtpc *c;
};

static void send_next(struct tc *x, struct smtpc *c)
{
	if (x->next < x->nt) {
		int before = x->done;
		smtpc_send(c, &x->t[x->next++]);
		x->done_in_send += x->done - before;
	} else {
		smtpc_quit(c);
	}
}

static void t_ready(void *ctx, struct smtpc *c)
{
	struct tc *x = ctx;

	x->ready++;
	x->pipelining = smtpc_has_pipelining(c);
	x->size_limit = smtpc_size_limit(c);
	snprintf(x->peer, sizeof x->peer, "%s", smtpc_peer(c));
	snprintf(x->tls, sizeof x->tls, "%s", smtpc_tls_summary(c));
	if (!x->idle)
		send_next(x, c);
}

static void t_done(void *ctx, struct smtpc *c, struct smtpc_txn *t)
{
	struct tc *x = ctx;

	assert_true(x->done < MAXT);
	assert_ptr_equal(t, &x->t[x->done]);
	x->usable[x->done++] = smtpc_usable(c);
	if (x->abort_in_done) {
		smtpc_abort(c);
		return;
	}
	if (smtpc_usable(c) || (x->send_when_dead && x->next < x->nt))
		send_next(x, c);
}

static void t_closed(void *ctx, struct smtpc *c, const struct smtpc_result *why)
{
	struct tc *x = ctx;

	x->closed++;
	x->why = *why;
	snprintf(x->peer, sizeof x->peer, "%s", smtpc_peer(c));
}

static const struct smtpc_ops tops = { t_ready, t_done, t_closed };

static struct smtpc_cfg cfg_default(void)
{
	struct smtpc_cfg g = {
		.helo_name = HELO,
		.connect_us = 5000000, .helo_us = 5000000, .mail_us = 5000000,
		.rcpt_us = 5000000, .data_init_us = 5000000, .data_xfer_us = 5000000,
		.data_done_us = 5000000, .quit_us = 5000000,
		.line_length_limit = 998,
	};
	return g;
}

/* txn: message i from sender to up to three recipients (NULL-ended). */
static void txn(struct tc *x, size_t i, const char *sender, int fd, uint64_t size,
		const char *r0, const char *r1, const char *r2)
{
	const char *rs[3] = { r0, r1, r2 };
	struct smtpc_txn *t = &x->t[i];

	t->id = "TESTID";
	t->sender = sender;
	t->data_fd = fd;
	t->data_offset = 0;
	t->size = size;
	t->rcpts = x->r[i];
	t->nrcpts = 0;
	for (int k = 0; k < 3 && rs[k]; k++)
		x->r[i][t->nrcpts++].addr = rs[k];
	if (i + 1 > x->nt)
		x->nt = i + 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* go: connect (from src, if given) and run the loop until every
 * connection is gone. Nothing may be reported before the loop runs. */
static void go(struct fix *f, struct tc *x, const struct smtpc_cfg *g, const char *host,
	       const struct sockaddr *src, socklen_t srclen)
{
	uint64_t start = now_ms();

	x->c = smtpc_connect(f->e, g, &tops, x, host, (struct sockaddr *)&f->ss, f->sslen, src,
			     srclen);
	assert_non_null(x->c);
	assert_int_equal(x->ready + x->done + x->closed, 0);
	while (smtpc_count() > 0) {
		if (now_ms() - start > 20000)
			fail_msg("the connection is still open after 20 s");
		assert_true(sd_event_run(f->e, 100000) >= 0);
	}
}

static void assert_res(const struct smtpc_result *r, int code, const char *dsn, const char *text)
{
	if (r->code != code || strcmp(r->dsn, dsn) != 0 || strcmp(r->text, text) != 0)
		fail_msg("got %d %s \"%s\", want %d %s \"%s\"", r->code, r->dsn, r->text, code, dsn,
			 text);
}

static void assert_prefix(const char *s, const char *prefix)
{
	if (strncmp(s, prefix, strlen(prefix)) != 0)
		fail_msg("\"%s\" does not start with \"%s\"", s, prefix);
}

/* ---- dialogues ----------------------------------------------------------------- */

static const char *const ehlo_pipelining[] = {
	">250-mx.test", ">250-PIPELINING", ">250-SIZE 10000000", ">250-8BITMIME",
	">250 ENHANCEDSTATUSCODES",
};

/* A whole delivery with PIPELINING, the message written through the
 * queue: MAIL, both RCPTs and DATA before any reply (the script answers
 * only after reading all four, so a client that waited would time
 * out); content CRLF-only, dot-stuffed, folded at 998. */
static void test_pipelined_delivery(void **state)
{
	struct fix *f = *state;
	char qdir[128], id[QID_LEN + 1], mail[128], path[256], err[256];
	static const char *const chunks[] = {
		"Subject: test\r\n\r\n", ".hidden\r\nbare\nlf\r", "\n.", "starts a line\r\n",
		NULL, /* the long line */
		"\r\nlast line without end",
	};
	struct tc x = { 0 };

	char *longline = xmalloc(2001);
	memset(longline, 'A', 2000);
	longline[2000] = 0;
	snprintf(qdir, sizeof qdir, "%s/q", f->dir);
	struct queue *q = queue_open(qdir);
	assert_non_null(q);
	struct qfile *qf = queue_create(q, id);
	assert_non_null(qf);
	assert_true(qfile_add(qf, QREC_VERSION, "1", 1));
	assert_true(qfile_add(qf, QREC_TIME, "1700000000123456", 16));
	assert_true(qfile_add(qf, QREC_CLIENT, "192.0.2.9 client.example.org", 28));
	assert_true(qfile_add(qf, QREC_SENDER, "alice@example.org", 17));
	assert_true(qfile_add(qf, QREC_RCPT, "bob@example.net", 15));
	assert_true(qfile_add(qf, QREC_RCPT, "carol@example.net", 17));
	for (size_t i = 0; i < ARRAY_LEN(chunks); i++) {
		const char *s = chunks[i] ? chunks[i] : longline;
		assert_true(qfile_add(qf, QREC_DATA, s, strlen(s)));
	}
	queue_submit(qf, NULL, NULL);
	assert_int_equal(queue_flush(q), 1);
	queue_close(q);
	snprintf(path, sizeof path, "%s/incoming/%s", qdir, id);
	struct qmsg *m;
	size_t nm;
	assert_true(qmsg_read_all(path, &m, &nm, err, sizeof err));
	assert_int_equal(nm, 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);

	snprintf(mail, sizeof mail, "<MAIL FROM:<alice@example.org> SIZE=%llu BODY=8BITMIME",
		 (unsigned long long)m[0].data_len);
	const char *steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ehlo_pipelining[0], ehlo_pipelining[1],
		ehlo_pipelining[2], ehlo_pipelining[3], ehlo_pipelining[4],
		mail, "<RCPT TO:<bob@example.net>", "<RCPT TO:<carol@example.net>", "<DATA",
		">250 2.1.0 Ok", ">250 2.1.5 Ok", ">250 2.1.5 Ok", ">354 End data with <CR><LF>.<CR><LF>",
		"D", ">250 2.0.0 Ok: queued as ABC123", "<QUIT", ">221 2.0.0 Bye", "E", NULL,
	};
	serve(f, false, steps);
	txn(&x, 0, "alice@example.org", fd, m[0].data_len, "bob@example.net", "carol@example.net", NULL);
	x.t[0].body_8bit = true;
	x.t[0].data_offset = m[0].data_offset;
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);

	assert_int_equal(x.ready, 1);
	assert_int_equal(x.done, 1);
	assert_int_equal(x.closed, 0);
	assert_true(x.usable[0]);
	assert_true(x.pipelining);
	assert_int_equal(x.size_limit, 10000000);
	char peer[64];
	snprintf(peer, sizeof peer, "mx.test[127.0.0.1]:%u", port_of(f));
	assert_string_equal(x.peer, peer);
	for (int i = 0; i < 2; i++) {
		assert_res(&x.r[0][i].res, 250, "2.0.0", "250 2.0.0 Ok: queued as ABC123");
		assert_string_equal(x.r[0][i].res.reply, "250 2.0.0 Ok: queued as ABC123");
	}

	struct buf want = BUF_INIT;
	buf_puts(&want, "Subject: test\r\n\r\n..hidden\r\nbare\r\nlf\r\n..starts a line\r\n");
	buf_append(&want, longline, 998);
	buf_puts(&want, "\r\n ");
	buf_append(&want, longline, 997);
	buf_puts(&want, "\r\n ");
	buf_append(&want, longline, 5);
	buf_puts(&want, "\r\nlast line without end\r\n");
	assert_data(f, 0, want.data, want.len);
	buf_free(&want);
	free(longline);
	qmsg_free_all(m, nm);
	close(fd);
}

/* Without PIPELINING: one command at a time; replies with LF-only line
 * ends are read too; no SIZE= or BODY= when not offered. */
static void test_unpipelined_delivery(void **state)
{
	struct fix *f = *state;
	static const char *const chunks[] = { "Subject: x\r\n\r\nhello\r\n", NULL };
	static const char *const steps[] = {
		"A", "=220 mx.test ESMTP\n", "<EHLO " HELO, "=250-mx.test\n250 HELP\n",
		"<MAIL FROM:<>", "=250 2.1.0 Ok\n", "<RCPT TO:<bob@example.net>", ">250 2.1.5 Ok",
		"<RCPT TO:<carol@example.net>", ">250 2.1.5 Ok", "<DATA", ">354 go ahead", "D",
		">250 2.0.0 Ok: queued as Q1", "<QUIT", ">221 Bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", chunks);

	serve(f, false, steps);
	txn(&x, 0, "", fd, 100, "bob@example.net", "carol@example.net", NULL);
	x.t[0].body_8bit = true;
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_false(x.pipelining);
	assert_int_equal(x.size_limit, 0);
	assert_int_equal(x.done, 1);
	assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 Ok: queued as Q1");
	assert_res(&x.r[0][1].res, 250, "2.0.0", "250 2.0.0 Ok: queued as Q1");
	assert_data(f, 0, "Subject: x\r\n\r\nhello\r\n", 21);
	close(fd);
}

/* Two messages on one connection: no RSET between completed ones. */
static void test_two_messages(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "first\r\n", NULL };
	static const char *const c2[] = { "second\r\n", ".\r\n", "..\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250-mx.test", ">250 PIPELINING",
		"<MAIL FROM:<a@example.org>", "<RCPT TO:<b@example.net>", "<DATA",
		">250 ok", ">250 ok", ">354 go", "D", ">250 2.0.0 queued as ONE",
		"<MAIL FROM:<c@example.org>", "<RCPT TO:<d@example.net>", "<DATA",
		">250 ok", ">250 ok", ">354 go", "D", ">250 2.0.0 queued as TWO",
		"<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd1 = message(f, "m1", c1), fd2 = message(f, "m2", c2);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd1, 7, "b@example.net", NULL, NULL);
	txn(&x, 1, "c@example.org", fd2, 15, "d@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.done, 2);
	assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 queued as ONE");
	assert_res(&x.r[1][0].res, 250, "2.0.0", "250 2.0.0 queued as TWO");
	assert_data(f, 0, "first\r\n", 7);
	assert_data(f, 1, "second\r\n..\r\n...\r\n", 17);
	close(fd1);
	close(fd2);
}

/* MAIL refused in a pipelined group: every recipient gets the MAIL
 * reply (not the 503s that follow), the DATA refusal is consumed, RSET,
 * and the connection carries the next message. */
static void test_mail_rejected_pipelined(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250-mx.test", ">250 PIPELINING",
		"<MAIL FROM:<bad@example.org>", "<RCPT TO:<b@example.net>", "<RCPT TO:<c@example.net>",
		"<DATA", ">550 5.7.1 sender rejected", ">503 5.5.1 need MAIL", ">503 5.5.1 need MAIL",
		">554 5.5.1 no valid recipients", "<RSET", ">250 2.0.0 Ok",
		"<MAIL FROM:<good@example.org>", "<RCPT TO:<b@example.net>", "<DATA",
		">250 ok", ">250 ok", ">354 go", "D", ">250 2.0.0 queued as OK2",
		"<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "bad@example.org", fd, 7, "b@example.net", "c@example.net", NULL);
	txn(&x, 1, "good@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.done, 2);
	assert_true(x.usable[0]);
	for (int i = 0; i < 2; i++)
		assert_res(&x.r[0][i].res, 550, "5.7.1",
			   "host mx.test[127.0.0.1] said: 550 5.7.1 sender rejected "
			   "(in reply to MAIL FROM command)");
	assert_string_equal(x.r[0][0].res.reply, "550 5.7.1 sender rejected");
	assert_res(&x.r[1][0].res, 250, "2.0.0", "250 2.0.0 queued as OK2");
	close(fd);
}

/* Without pipelining, a refused MAIL sends no RCPT at all. A reply
 * without an enhanced code gets one from its class. */
static void test_mail_rejected(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test",
		"<MAIL FROM:<bad@example.org>", ">451 try later", "<RSET", ">250 Ok",
		"<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "bad@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.done, 1);
	assert_res(&x.r[0][0].res, 451, "4.0.0",
		   "host mx.test[127.0.0.1] said: 451 try later (in reply to MAIL FROM command)");
	close(fd);
}

/* One RCPT refused, the other delivered. */
static void test_one_rcpt_rejected(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250-mx.test", ">250 PIPELINING",
		"<MAIL FROM:<a@example.org>", "<RCPT TO:<bob@example.net>",
		"<RCPT TO:<carol@example.net>", "<DATA", ">250 2.1.0 Ok",
		">550 5.1.1 <bob@example.net>: Recipient address rejected", ">250 2.1.5 Ok",
		">354 go", "D", ">250 2.0.0 Ok: queued as X9", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "bob@example.net", "carol@example.net", NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 550, "5.1.1",
		   "host mx.test[127.0.0.1] said: 550 5.1.1 <bob@example.net>: Recipient address "
		   "rejected (in reply to RCPT TO command)");
	assert_res(&x.r[0][1].res, 250, "2.0.0", "250 2.0.0 Ok: queued as X9");
}

/* Every RCPT refused without pipelining: no DATA, RSET, still usable. */
static void test_all_rcpts_rejected(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">550 5.1.1 no", "<RCPT TO:<c@example.net>",
		">450 4.2.0 greylisted", "<RSET", ">250 ok", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", "c@example.net", NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_true(x.usable[0]);
	assert_int_equal(x.r[0][0].res.code, 550);
	assert_int_equal(x.r[0][1].res.code, 450);
	assert_string_equal(x.r[0][1].res.dsn, "4.2.0");
	close(fd);
}

/* DATA refused (after accepted RCPTs): the accepted ones get it. */
static void test_data_rejected(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">250 ok", "<DATA", ">554 5.6.0 no thanks",
		"<RSET", ">250 ok", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 554, "5.6.0",
		   "host mx.test[127.0.0.1] said: 554 5.6.0 no thanks (in reply to DATA command)");
	close(fd);
}

/* A refused final dot: the transaction is over, no RSET. */
static void test_dot_rejected(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">250 ok", "<DATA", ">354 go", "D",
		">550-5.7.1 this message", ">550 5.7.1 looks like spam", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 550, "5.7.1",
		   "host mx.test[127.0.0.1] said: 550 5.7.1 this message looks like spam "
		   "(in reply to end of DATA command)");
	close(fd);
}

static void test_greeting_rejected(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = { "A", ">554 5.7.1 go away", "E", NULL };
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 0);
	assert_int_equal(x.closed, 1);
	/* A 5xx greeting defers (Postfix's smtp_skip_5xx_greeting): it says
	 * nothing about the recipients, another MX host may take them. */
	assert_res(&x.why, 0, "4.7.1",
		   "host mx.test[127.0.0.1] refused to talk to me: 554 5.7.1 go away");
	assert_string_equal(x.why.reply, "554 5.7.1 go away");
}

/* EHLO refused: HELO, and no extensions. */
static void test_helo_fallback(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">502 5.5.2 what", "<HELO " HELO, ">250 mx.test",
		"<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 1);
	assert_int_equal(x.closed, 0);
	assert_false(x.pipelining);
}

/* The server drops the connection while the content is being written
 * (it reads a little, then closes: a reset). */
static void test_closed_mid_data(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250-mx.test", ">250 PIPELINING",
		"<MAIL FROM:<a@example.org>", "<RCPT TO:<b@example.net>", "<DATA",
		">250 ok", ">250 ok", ">354 go", "d1000", "C", NULL,
	};
	struct tc x = { 0 };
	int fd = big_message(f, 32u << 20);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 32u << 20, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.done, 1);
	assert_false(x.usable[0]);
	assert_int_equal(x.closed, 1);
	assert_int_equal(x.r[0][0].res.code, 0);
	assert_string_equal(x.r[0][0].res.dsn, "4.4.2");
	assert_prefix(x.r[0][0].res.text, "lost connection with mx.test[127.0.0.1] while sending ");
	assert_string_equal(x.why.text, x.r[0][0].res.text);
	close(fd);
}

/* Lost after the final dot, before its reply: may be a duplicate. */
static void test_closed_after_dot(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">250 ok", "<DATA", ">354 go", "D", "C", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 0, "4.4.2",
		   "lost connection with mx.test[127.0.0.1] while sending end of data -- message "
		   "may be sent more than once");
	assert_int_equal(x.closed, 1);
	close(fd);
}

/* 421 in the middle of a pipelined group: every recipient without a
 * result is deferred (code 0) with the server's words. */
static void test_421_mid_transaction(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250-mx.test", ">250 PIPELINING",
		"<MAIL FROM:<a@example.org>", "<RCPT TO:<b@example.net>", "<RCPT TO:<c@example.net>",
		"<DATA", ">250 ok", ">250 ok", ">421 4.3.2 shutting down", "C", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", "c@example.net", NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	const char *want = "host mx.test[127.0.0.1] said: 421 4.3.2 shutting down "
			   "(in reply to RCPT TO command)";
	assert_res(&x.r[0][0].res, 0, "4.3.2", want);
	assert_res(&x.r[0][1].res, 0, "4.3.2", want);
	assert_int_equal(x.closed, 1);
	assert_int_equal(x.why.code, 421);
	close(fd);
}

static void test_connection_refused(void **state)
{
	struct fix *f = *state;
	struct tc x = { 0 };
	char want[128];

	/* A port nobody listens on. */
	int fd = listen_tcp(f, "127.0.0.1");
	close(fd);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	snprintf(want, sizeof want, "connect to mx.test[127.0.0.1]:%u: Connection refused",
		 port_of(f));
	assert_int_equal(x.closed, 1);
	assert_res(&x.why, 0, "4.4.1", want);
}

/* The source address is bound before connecting: the server sees it. */
static void test_bind_source(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", "P127.0.0.2", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<QUIT",
		">221 bye", "E", NULL,
	};
	struct sockaddr_in src = { .sin_family = AF_INET };
	struct tc x = { 0 };

	inet_pton(AF_INET, "127.0.0.2", &src.sin_addr);
	serve(f, false, steps);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", (struct sockaddr *)&src, sizeof src);
	server_ok(f);
	assert_int_equal(x.ready, 1);
	assert_int_equal(x.closed, 0);
}

/* A source address that is not ours fails the connection: it never
 * goes out from another address. */
static void test_bind_fails(void **state)
{
	struct fix *f = *state;
	struct sockaddr_in src = { .sin_family = AF_INET };
	struct tc x = { 0 };
	char v[8] = "";

	FILE *fp = fopen("/proc/sys/net/ipv4/ip_nonlocal_bind", "r");
	if (fp) {
		if (fgets(v, sizeof v, fp) == NULL)
			v[0] = 0;
		fclose(fp);
	}
	if (v[0] == '1')
		skip();
	f->lfd = listen_tcp(f, "127.0.0.1");
	inet_pton(AF_INET, "192.0.2.1", &src.sin_addr);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", (struct sockaddr *)&src, sizeof src);
	assert_int_equal(x.closed, 1);
	assert_int_equal(x.ready, 0);
	assert_res(&x.why, 0, "4.4.0", "bind 192.0.2.1 failed: Cannot assign requested address");
	/* Nothing reached the listener. */
	assert_int_equal(fcntl(f->lfd, F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(accept(f->lfd, NULL, NULL), -1);
	assert_int_equal(errno, EAGAIN);
}

static void test_greeting_timeout(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = { "A", "W", NULL };
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_default();
	g.helo_us = 200000;
	uint64_t t0 = now_ms();
	go(f, &x, &g, "mx.test", NULL, 0);
	uint64_t ms = now_ms() - t0;
	server_ok(f);
	assert_true(ms >= 200 && ms < 3000);
	assert_res(&x.why, 0, "4.4.2",
		   "conversation with mx.test[127.0.0.1] timed out while receiving the initial "
		   "server greeting");
}

/* No reply to the final dot. */
static void test_dot_timeout(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">250 ok", "<DATA", ">354 go", "D", "W", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	g.data_done_us = 200000;
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 0, "4.4.2",
		   "conversation with mx.test[127.0.0.1] timed out while sending end of data -- "
		   "message may be sent more than once");
	assert_int_equal(x.closed, 1);
	close(fd);
}

/* LMTP over a UNIX socket: LHLO, one reply per accepted recipient. */
static void test_lmtp(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 lmtp.test LMTP", "<LHLO " HELO, ">250-lmtp.test", ">250-PIPELINING",
		">250 ENHANCEDSTATUSCODES", "<MAIL FROM:<a@example.org>", "<RCPT TO:<bob@example.net>",
		"<RCPT TO:<nobody@example.net>", "<RCPT TO:<carol@example.net>", "<DATA",
		">250 2.1.0 ok", ">250 2.1.5 ok", ">550 5.1.1 nobody here", ">250 2.1.5 ok", ">354 go",
		"D", ">250 2.0.0 <bob@example.net> delivered", ">452 4.2.2 <carol@example.net> full",
		"<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);
	char want[256];

	serve(f, true, steps);
	txn(&x, 0, "a@example.org", fd, 7, "bob@example.net", "nobody@example.net",
	    "carol@example.net");
	struct smtpc_cfg g = cfg_default();
	g.lmtp = true;
	go(f, &x, &g, "localhost", NULL, 0);
	server_ok(f);
	snprintf(want, sizeof want, "localhost[%s/lmtp]", f->dir);
	assert_string_equal(x.peer, want);
	assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 <bob@example.net> delivered");
	assert_int_equal(x.r[0][1].res.code, 550);
	snprintf(want, sizeof want,
		 "host localhost[%s/lmtp] said: 452 4.2.2 <carol@example.net> full (in reply to "
		 "end of DATA command)", f->dir);
	assert_res(&x.r[0][2].res, 452, "4.2.2", want);
	close(fd);
}

/* Over the server's SIZE limit: nothing is sent, 552 5.3.4, the
 * connection stays usable, and done() comes from the loop. */
static void test_size_exceeded(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250-mx.test", ">250 SIZE 1000",
		"<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 5000, "b@example.net", "c@example.net", NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.size_limit, 1000);
	assert_int_equal(x.done_in_send, 0);
	assert_int_equal(x.done, 1);
	assert_true(x.usable[0]);
	for (int i = 0; i < 2; i++)
		assert_res(&x.r[0][i].res, 552, "5.3.4",
			   "message size 5000 exceeds size limit 1000 of server mx.test[127.0.0.1]");
	close(fd);
}

/* An endless line is refused after SMTPC_LINE_MAX bytes, not buffered. */
static void test_endless_line(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = { "A", "=220 ", "X100000", "W", NULL };
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.why, 0, "4.5.0",
		   "host mx.test[127.0.0.1] sent a malformed reply while receiving the initial "
		   "server greeting");
}

/* A malformed reply in a transaction defers what is outstanding. */
static void test_malformed_in_transaction(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">25O ok", "W", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 0, "4.5.0",
		   "host mx.test[127.0.0.1] sent a malformed reply while sending RCPT TO");
	assert_int_equal(x.closed, 1);
	close(fd);
}

/* smtpc_abort inside done(): no closed(), nothing used after free
 * (AddressSanitizer watches), the server sees the connection close. */
static void test_abort_in_done(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">250 ok", "<DATA", ">354 go", "D",
		">250 2.0.0 queued", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	x.abort_in_done = true;
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.done, 1);
	assert_int_equal(x.closed, 0);
	assert_int_equal(x.r[0][0].res.code, 250);
	close(fd);
}

/* A message sent from done() of a failed connection ends at once with
 * the same failure; then closed(). */
static void test_send_on_dead(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		"C", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	txn(&x, 1, "a@example.org", fd, 7, "c@example.net", NULL, NULL);
	x.send_when_dead = true;
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.done, 2);
	assert_int_equal(x.closed, 1);
	const char *want = "lost connection with mx.test[127.0.0.1] while sending MAIL FROM";
	assert_res(&x.r[0][0].res, 0, "4.4.2", want);
	assert_res(&x.r[1][0].res, 0, "4.4.2", want);
	assert_res(&x.why, 0, "4.4.2", want);
	close(fd);
}

/* A recipient that cannot be put on a command line is never sent. */
static void test_unsendable_rcpt(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<c@example.net>", ">250 ok", "<DATA", ">354 go", "D",
		">250 2.0.0 queued", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net>\r\nRSET", "c@example.net", NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.r[0][0].res.code, 553);
	assert_int_equal(x.r[0][1].res.code, 250);
	close(fd);
}

/* A message much larger than the socket buffers: written as the
 * server reads (EAGAIN, then EPOLLOUT), arriving whole and unchanged. */
static void test_big_delivery(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250-mx.test", ">250 PIPELINING",
		"<MAIL FROM:<a@example.org>", "<RCPT TO:<b@example.net>", "<DATA",
		">250 ok", ">250 ok", ">354 go", "S300", "D", ">250 2.0.0 queued as BIG",
		"<QUIT", ">221 bye", "E", NULL,
	};
	const size_t size = 8u << 20;
	struct tc x = { 0 };
	int fd = big_message(f, size);
	char path[128];
	size_t n;

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, size, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 queued as BIG");
	snprintf(path, sizeof path, "%s/big", f->dir);
	char *file = slurp(path, &n);
	struct buf want = BUF_INIT;
	for (size_t off = 0; off < n && off + 5 <= n; ) { /* the DATA payloads */
		const unsigned char *h = (const unsigned char *)file + off;
		size_t len = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
		if (h[0] != 'D')
			break;
		buf_append(&want, file + off + 5, len);
		off += 5 + len;
	}
	assert_int_equal(want.len, size);
	/* 8 MiB of 78-byte lines ends mid-line: the client ends that line. */
	assert_true(size % 78 != 0);
	buf_puts(&want, "\r\n");
	assert_data(f, 0, want.data, want.len);
	buf_free(&want);
	free(file);
	close(fd);
}

static int send_later(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct tc *x = userdata;
	(void)src;
	(void)usec;
	send_next(x, x->c);
	return 0;
}

/* An idle connection (a cached one) takes a message later, from outside
 * any callback. */
static void test_send_later(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">250 ok", "<DATA", ">354 go", "D",
		">250 2.0.0 queued as LATE", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);
	sd_event_source *timer;

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	x.idle = true;
	assert_true(sd_event_add_time_relative(f->e, &timer, CLOCK_MONOTONIC, 100000, 0,
					       send_later, &x) >= 0);
	struct smtpc_cfg g = cfg_default();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	sd_event_source_unref(timer);
	assert_int_equal(x.ready, 1);
	assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 queued as LATE");
	close(fd);
}

/* An idle connection the server closes is reported by closed(). */
static void test_idle_421(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "S50", ">421 4.4.2 idle too long",
		"C", NULL,
	};
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_default();
	x.idle = true;
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 1);
	assert_int_equal(x.closed, 1);
	assert_res(&x.why, 421, "4.4.2", "host mx.test[127.0.0.1] said: 421 4.4.2 idle too long");
}

/* ... and one the server just drops. */
static void test_idle_eof(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test", "<EHLO " HELO, ">250 mx.test", "C", NULL,
	};
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_default();
	x.idle = true;
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.closed, 1);
	assert_res(&x.why, 0, "4.4.2", "lost connection with mx.test[127.0.0.1] while idle");
}

/* ---- STARTTLS ------------------------------------------------------------------ */

/* certs: DIR/ca.crt, the CA a client may trust, and the server's
 * DIR/srv.crt and DIR/srv.key for name, signed by that CA or, with
 * other_ca, by one the client does not know. */
static void certs(struct fix *f, const char *name, bool other_ca)
{
	struct tlscert ca = { 0 }, other = { 0 }, srv = { 0 };

	assert_true(tlscert_ca(&ca, "vhostmta test CA"));
	assert_true(tlscert_write(&ca, f->dir, "ca", false));
	if (other_ca)
		assert_true(tlscert_ca(&other, "another test CA"));
	assert_true(tlscert_leaf(&srv, name, other_ca ? &other : &ca));
	assert_true(tlscert_write(&srv, f->dir, "srv", true));
	tlscert_free(&ca);
	tlscert_free(&other);
	tlscert_free(&srv);
}

static struct tls_ctx *given_ctx(void *arg) { return arg; }

/* client_ctx: trusting DIR/ca.crt, or (no_ca) only the system's store. */
static struct tls_ctx *client_ctx(struct fix *f, bool no_ca)
{
	char path[256], err[256];

	snprintf(path, sizeof path, "%s/ca.crt", f->dir);
	struct tls_ctx *x = tls_client_ctx(no_ca ? "" : path, err, sizeof err);
	if (x == NULL)
		fail_msg("tls_client_ctx: %s", err);
	return x;
}

static struct smtpc_cfg cfg_tls(enum tls_level level, struct tls_ctx *x)
{
	struct smtpc_cfg g = cfg_default();

	g.tls_level = level;
	g.starttls_us = 5000000;
	g.tls_ctx = given_ctx;
	g.tls_arg = x;
	return g;
}

static void assert_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	if (n < k || strcmp(s + n - k, suffix) != 0)
		fail_msg("\"%s\" does not end with \"%s\"", s, suffix);
}

/* The server offers STARTTLS before TLS (and SIZE, which it does not
 * offer inside); inside, the second EHLO, then a pipelined delivery.
 * MAIL without SIZE= shows that the extensions were read afresh. */
static const char *const tls_delivery[] = {
	"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250-SIZE 1000",
	">250 STARTTLS", "<STARTTLS", ">220 2.0.0 Ready to start TLS", "T", "<EHLO " HELO,
	">250-mx.test", ">250 PIPELINING", "<MAIL FROM:<a@example.org>",
	"<RCPT TO:<b@example.net>", "<DATA", ">250 2.1.0 ok", ">250 2.1.5 ok", ">354 go", "D",
	">250 2.0.0 queued as TLS1", "<QUIT", ">221 bye", "E", NULL,
};

/* tls_deliver: one message through tls_delivery, at level and with
 * the client context x, to a server certified for name. */
static void tls_deliver(struct fix *f, struct tc *x, enum tls_level level, struct tls_ctx *ctx)
{
	static const char *const c1[] = { "hello\r\n", NULL };
	int fd = message(f, "m1", c1);

	serve(f, false, tls_delivery);
	txn(x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_tls(level, ctx);
	go(f, x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x->ready, 1);
	assert_int_equal(x->size_limit, 0);
	assert_true(x->pipelining);
	assert_res(&x->r[0][0].res, 250, "2.0.0", "250 2.0.0 queued as TLS1");
	assert_data(f, 0, "hello\r\n", 7);
	close(fd);
}

/* may, offered, no CA to check with: TLS all the same, untrusted. */
static void test_tls_may(void **state)
{
	struct fix *f = *state;
	struct tc x = { 0 };

	certs(f, "mx.test", false);
	struct tls_ctx *ctx = client_ctx(f, true);
	tls_deliver(f, &x, TLS_LEVEL_MAY, ctx);
	assert_prefix(x.tls, "TLSv1.");
	assert_suffix(x.tls, ":untrusted");
	tls_ctx_free(ctx);
}

/* verify with the right CA and the name the connection was made for. */
static void test_tls_verify(void **state)
{
	struct fix *f = *state;
	struct tc x = { 0 };

	certs(f, "mx.test", false);
	struct tls_ctx *ctx = client_ctx(f, false);
	tls_deliver(f, &x, TLS_LEVEL_VERIFY, ctx);
	assert_prefix(x.tls, "TLSv1.");
	assert_suffix(x.tls, ":verified");
	tls_ctx_free(ctx);
}

/* tls_refused: level verify against a certificate it must refuse:
 * deferred, and nothing said inside TLS. */
static void tls_refused(struct fix *f, const char *name, bool other_ca, const char *why)
{
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250 STARTTLS",
		"<STARTTLS", ">220 2.0.0 go", "Tq", "E", NULL,
	};
	struct tc x = { 0 };

	certs(f, name, other_ca);
	struct tls_ctx *ctx = client_ctx(f, false);
	serve(f, false, steps);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_VERIFY, ctx);
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 0);
	assert_int_equal(x.closed, 1);
	assert_int_equal(x.why.code, 0);
	assert_string_equal(x.why.dsn, "4.7.5");
	assert_prefix(x.why.text, why);
	assert_suffix(x.why.text, "mx.test[127.0.0.1]");
	tls_ctx_free(ctx);
}

static void test_tls_verify_wrong_name(void **state)
{
	tls_refused(*state, "other.test", false, "Server certificate not verified (");
}

static void test_tls_verify_unknown_ca(void **state)
{
	tls_refused(*state, "mx.test", true, "Server certificate not trusted (");
}

/* encrypt, and the server offers no STARTTLS: no MAIL in plaintext. */
static void test_tls_encrypt_not_offered(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250 PIPELINING", "E",
		NULL,
	};
	struct tc x = { 0 };

	certs(f, "mx.test", false);
	struct tls_ctx *ctx = client_ctx(f, false);
	serve(f, false, steps);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_ENCRYPT, ctx);
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 0);
	assert_res(&x.why, 0, "4.7.4",
		   "TLS is required, but was not offered by host mx.test[127.0.0.1]");
	tls_ctx_free(ctx);
}

/* encrypt, and EHLO refused: no HELO, no plaintext. */
static void test_tls_encrypt_ehlo_refused(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">502 5.5.1 what?", "E", NULL,
	};
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_ENCRYPT, NULL);
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 0);
	assert_int_equal(x.why.code, 0);
	assert_string_equal(x.why.dsn, "4.7.4");
	assert_prefix(x.why.text, "TLS is required, but host mx.test[127.0.0.1] refused EHLO");
}

/* may, not offered: plaintext as before. */
static void test_tls_may_not_offered(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250 mx.test", "<MAIL FROM:<a@example.org>",
		">250 ok", "<RCPT TO:<b@example.net>", ">250 ok", "<DATA", ">354 go", "D",
		">250 2.0.0 queued", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_MAY, NULL);
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 queued");
	assert_string_equal(x.tls, "none");
	close(fd);
}

/* STARTTLS refused under may: deferred, never on in plaintext. */
static void test_tls_refused_454(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250 STARTTLS",
		"<STARTTLS", ">454 4.7.0 TLS not available due to local problem", "E", NULL,
	};
	struct tc x = { 0 };

	certs(f, "mx.test", false);
	struct tls_ctx *ctx = client_ctx(f, true);
	serve(f, false, steps);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_MAY, ctx);
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 0);
	assert_res(&x.why, 0, "4.7.0",
		   "host mx.test[127.0.0.1] said: 454 4.7.0 TLS not available due to local "
		   "problem (in reply to STARTTLS command)");
	assert_string_equal(x.why.reply, "454 4.7.0 TLS not available due to local problem");
	tls_ctx_free(ctx);
}

/* The server offers TLS, our engine is unavailable: no STARTTLS, and no
 * plaintext either. */
static void test_tls_engine_unavailable(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250 STARTTLS", "E", NULL,
	};
	struct tc x = { 0 };

	serve(f, false, steps);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_MAY, NULL);
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_res(&x.why, 0, "4.7.5", "TLS is required, but our TLS engine is unavailable");
}

/* A line sent in the same write as the 220 (a man in the middle's
 * "250" would pass for the reply to the EHLO inside TLS) is dropped:
 * the handshake runs, and the dialogue inside TLS is the real one. */
static void test_tls_bundled_reply(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250 STARTTLS",
		"<STARTTLS", "=220 2.0.0 go\r\n250 2.0.0 fake\r\n", "T", "<EHLO " HELO,
		">250 mx.test", "<MAIL FROM:<a@example.org>", ">250 ok", "<RCPT TO:<b@example.net>",
		">250 ok", "<DATA", ">354 go", "D", ">250 2.0.0 queued", "<QUIT", ">221 bye", "E",
		NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	certs(f, "mx.test", false);
	struct tls_ctx *ctx = client_ctx(f, true);
	serve(f, false, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_MAY, ctx);
	cap_begin();
	go(f, &x, &g, "mx.test", NULL, 0);
	char *log = cap_end();
	fputs(log, stderr);
	if (x.ready == 0) {
		/* The fake line came apart from the 220 and went into the
		 * handshake: a handshake failure, never a plaintext MAIL. */
		assert_string_equal(x.why.dsn, "4.7.5");
		assert_prefix(x.why.text, "cannot start TLS with host mx.test[127.0.0.1]");
	} else {
		server_ok(f);
		assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 queued");
		assert_prefix(x.tls, "TLSv1.");
		assert_non_null(strstr(log, "mx.test[127.0.0.1]:"));
		assert_non_null(strstr(log, "after the reply to STARTTLS discarded"));
	}
	free(log);
	tls_ctx_free(ctx);
	close(fd);
}

/* The server answers the ClientHello with junk: deferred, 4.7.5. */
static void test_tls_handshake_fails(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250 STARTTLS",
		"<STARTTLS", ">220 2.0.0 go", "d5", "=HTTP/1.0 400 Bad Request\r\n\r\n", "W", NULL,
	};
	struct tc x = { 0 };

	certs(f, "mx.test", false);
	struct tls_ctx *ctx = client_ctx(f, true);
	serve(f, false, steps);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_MAY, ctx);
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_int_equal(x.ready, 0);
	assert_int_equal(x.why.code, 0);
	assert_string_equal(x.why.dsn, "4.7.5");
	assert_prefix(x.why.text, "cannot start TLS with host mx.test[127.0.0.1]: handshake failed: ");
	tls_ctx_free(ctx);
}

/* The server goes quiet after the 220: smtp_starttls_timeout ends the
 * handshake. */
static void test_tls_handshake_timeout(void **state)
{
	struct fix *f = *state;
	static const char *const steps[] = {
		"A", ">220 mx.test ESMTP", "<EHLO " HELO, ">250-mx.test", ">250 STARTTLS",
		"<STARTTLS", ">220 2.0.0 go", "W", NULL,
	};
	struct tc x = { 0 };

	certs(f, "mx.test", false);
	struct tls_ctx *ctx = client_ctx(f, true);
	serve(f, false, steps);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_MAY, ctx);
	g.starttls_us = 200000;
	uint64_t start = now_ms();
	go(f, &x, &g, "mx.test", NULL, 0);
	server_ok(f);
	assert_true(now_ms() - start < 4000); /* not helo_us */
	assert_res(&x.why, 0, "4.4.2",
		   "conversation with mx.test[127.0.0.1] timed out while performing the TLS "
		   "handshake");
	tls_ctx_free(ctx);
}

/* LMTP never says STARTTLS, whatever is offered and configured. */
static void test_tls_lmtp(void **state)
{
	struct fix *f = *state;
	static const char *const c1[] = { "hello\r\n", NULL };
	static const char *const steps[] = {
		"A", ">220 lmtp.test LMTP", "<LHLO " HELO, ">250-lmtp.test", ">250 STARTTLS",
		"<MAIL FROM:<a@example.org>", ">250 ok", "<RCPT TO:<b@example.net>", ">250 ok",
		"<DATA", ">354 go", "D", ">250 2.0.0 delivered", "<QUIT", ">221 bye", "E", NULL,
	};
	struct tc x = { 0 };
	int fd = message(f, "m1", c1);

	certs(f, "localhost", false);
	struct tls_ctx *ctx = client_ctx(f, false);
	serve(f, true, steps);
	txn(&x, 0, "a@example.org", fd, 7, "b@example.net", NULL, NULL);
	struct smtpc_cfg g = cfg_tls(TLS_LEVEL_VERIFY, ctx);
	g.lmtp = true;
	go(f, &x, &g, "localhost", NULL, 0);
	server_ok(f);
	assert_res(&x.r[0][0].res, 250, "2.0.0", "250 2.0.0 delivered");
	assert_string_equal(x.tls, "none");
	tls_ctx_free(ctx);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_table),
		cmocka_unit_test(test_reply_bounds),
		cmocka_unit_test(test_reply_line_count),
		cmocka_unit_test(test_reply_ehlo_keywords),
		cmocka_unit_test_setup_teardown(test_pipelined_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unpipelined_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mail_rejected_pipelined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mail_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_rcpt_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_rcpts_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dot_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_greeting_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_helo_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_mid_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_after_dot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_421_mid_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_source, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_greeting_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dot_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lmtp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_exceeded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_endless_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_in_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_in_done, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_on_dead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsendable_rcpt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_later, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_421, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_may, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_verify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_verify_wrong_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_verify_unknown_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_encrypt_not_offered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_encrypt_ehlo_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_may_not_offered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_refused_454, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_engine_unavailable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_bundled_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_handshake_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_handshake_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_lmtp, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
