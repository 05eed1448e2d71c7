/* tls.c: the OpenSSL layer of tls.h. Owns the contexts and one SSL per
 * connection; knows nothing of SMTP. Every call starts from an empty
 * OpenSSL error queue, so a failure is always explained by its own
 * errors, never by an earlier connection's. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls.h"
#include "util.h"

#define TLS_ERR_MAX 256

/* The server's TLS 1.2 suites: forward secret and AEAD only. TLS 1.3's
 * are all of that kind already. */
#define SERVER_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
/* The client meets servers of every age; opportunistic TLS that fails
 * would leave the mail queued, so it accepts the older strong suites,
 * preferring the same ones. */
#define CLIENT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:HIGH:" \
		       "!aNULL:!eNULL:!3DES:!MD5:!PSK:!SRP:!CAMELLIA:!ARIA"

struct tls_ctx {
	SSL_CTX *ssl;
};

struct tls {
	SSL *ssl;
	bool client;
	bool chain_bad;   /* a certificate error other than the name */
	int chain_err;    /* the first of them */
	bool name_bad;    /* the chain is fine, the name is not */
	char err[TLS_ERR_MAX];
};

enum tls_level tls_level_parse(const char *s)
{
	if (strcmp(s, "may") == 0)
		return TLS_LEVEL_MAY;
	if (strcmp(s, "encrypt") == 0)
		return TLS_LEVEL_ENCRYPT;
	if (strcmp(s, "verify") == 0)
		return TLS_LEVEL_VERIFY;
	return TLS_LEVEL_NONE;
}

/* ---- errors ----------------------------------------------------------- */

/* printable: s made printable in place (library and peer text). */
static void printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}

/* lib_error: OpenSSL's reason for the last failure (the first error
 * queued, the root cause), or fallback. */
static void lib_error(char *out, size_t len, const char *fallback)
{
	unsigned long e = ERR_get_error();

	if (e == 0) {
		snprintf(out, len, "%s", fallback);
	} else {
		const char *r = ERR_reason_error_string(e);
		if (r)
			snprintf(out, len, "%s", r);
		else
			ERR_error_string_n(e, out, len);
	}
	ERR_clear_error();
	printable(out);
}

/* ---- contexts ----------------------------------------------------------- */

static SSL_CTX *ctx_common(const SSL_METHOD *m, const char *ciphers, char *err, size_t errlen)
{
	SSL_CTX *c = SSL_CTX_new(m);

	if (c == NULL) {
		lib_error(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
	SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
			       SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Output buffers move (the connection drops what was written) and
	 * a write may take part of what it is offered. */
	SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
			    SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(c, ciphers) != 1) {
		lib_error(err, errlen, "no usable cipher");
		SSL_CTX_free(c);
		return NULL;
	}
	return c;
}

struct tls_ctx *tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	char why[TLS_ERR_MAX];

	ERR_clear_error();
	if (cert == NULL || *cert == 0) {
		snprintf(err, errlen, "no certificate file (smtpd_tls_cert_file)");
		return NULL;
	}
	if (key == NULL || *key == 0)
		key = cert;
	SSL_CTX *c = ctx_common(TLS_server_method(), SERVER_CIPHERS, err, errlen);
	if (c == NULL)
		return NULL;
	SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_dh_auto(c, 1);
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(c, (const unsigned char *)"vhostmta", 8);
	if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) {
		lib_error(why, sizeof why, "unreadable");
		snprintf(err, errlen, "cannot load the certificate %s: %s%s%s", cert, why,
			 errno ? ": " : "", errno ? strerror(errno) : "");
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) {
		lib_error(why, sizeof why, "unreadable");
		snprintf(err, errlen, "cannot load the private key %s: %s%s%s", key, why,
			 errno ? ": " : "", errno ? strerror(errno) : "");
		goto fail;
	}
	if (SSL_CTX_check_private_key(c) != 1) {
		lib_error(why, sizeof why, "mismatch");
		snprintf(err, errlen, "the private key %s does not match the certificate %s: %s",
			 key, cert, why);
		goto fail;
	}
	struct tls_ctx *x = xcalloc(1, sizeof *x);
	x->ssl = c;
	return x;
fail:
	SSL_CTX_free(c);
	return NULL;
}

struct tls_ctx *tls_client_ctx(const char *cafile, char *err, size_t errlen)
{
	char why[TLS_ERR_MAX];

	ERR_clear_error();
	SSL_CTX *c = ctx_common(TLS_client_method(), CLIENT_CIPHERS, err, errlen);
	if (c == NULL)
		return NULL;
	int ok = cafile && *cafile ? SSL_CTX_load_verify_locations(c, cafile, NULL)
				   : SSL_CTX_set_default_verify_paths(c);
	if (ok != 1) {
		lib_error(why, sizeof why, "unreadable");
		snprintf(err, errlen, "cannot load the CA certificates %s: %s",
			 cafile && *cafile ? cafile : "(default)", why);
		SSL_CTX_free(c);
		return NULL;
	}
	struct tls_ctx *x = xcalloc(1, sizeof *x);
	x->ssl = c;
	return x;
}

void tls_ctx_free(struct tls_ctx *x)
{
	if (x == NULL)
		return;
	SSL_CTX_free(x->ssl);
	free(x);
}

/* ---- connections ---------------------------------------------------------- */

/* verify_cb: note every certificate error and go on: the caller decides
 * by its security level, and logs the verdict. */
static int verify_cb(int ok, X509_STORE_CTX *st)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(st, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls *t = ssl ? SSL_get_app_data(ssl) : NULL;

	if (!ok && t != NULL) {
		int e = X509_STORE_CTX_get_error(st);
		if (e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH)
			t->name_bad = true;
		else if (!t->chain_bad) {
			t->chain_bad = true;
			t->chain_err = e;
		}
	}
	return 1;
}

static struct tls *tls_new(struct tls_ctx *x, int fd, bool client)
{
	struct tls *t;

	ERR_clear_error();
	SSL *ssl = SSL_new(x->ssl);
	if (ssl == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		ERR_clear_error();
		return NULL;
	}
	t = xcalloc(1, sizeof *t);
	t->ssl = ssl;
	t->client = client;
	SSL_set_app_data(ssl, t);
	return t;
}

struct tls *tls_server(struct tls_ctx *x, int fd)
{
	struct tls *t = tls_new(x, fd, false);

	if (t)
		SSL_set_accept_state(t->ssl);
	return t;
}

struct tls *tls_client(struct tls_ctx *x, int fd, const char *host)
{
	struct tls *t = tls_new(x, fd, true);
	unsigned char bin[16];

	if (t == NULL)
		return NULL;
	SSL_set_connect_state(t->ssl);
	SSL_set_verify(t->ssl, SSL_VERIFY_NONE, verify_cb);
	if (host && *host) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
		bool ip = inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
		if (ip) {
			X509_VERIFY_PARAM_set1_ip_asc(vp, host);
		} else {
			X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			SSL_set1_host(t->ssl, host);
			SSL_set_tlsext_host_name(t->ssl, host);
		}
	}
	ERR_clear_error();
	return t;
}

void tls_free(struct tls *t)
{
	if (t == NULL)
		return;
	ERR_clear_error();
	if (SSL_is_init_finished(t->ssl))
		(void)SSL_shutdown(t->ssl); /* one attempt: never wait for the peer */
	SSL_free(t->ssl);
	ERR_clear_error();
	free(t);
}

/* result: what an SSL call's return r means. */
static enum tls_rc result(struct tls *t, int r, uint32_t *events)
{
	int e = SSL_get_error(t->ssl, r);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		*events = EPOLLIN;
		return TLS_WANT;
	case SSL_ERROR_WANT_WRITE:
		*events = EPOLLOUT;
		return TLS_WANT;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(t->err, sizeof t->err, "the peer closed the TLS session");
		return TLS_EOF;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			if (errno == 0) {
				snprintf(t->err, sizeof t->err, "lost connection");
				return TLS_EOF;
			}
			snprintf(t->err, sizeof t->err, "%s", strerror(errno));
			return TLS_ERROR;
		}
		/* fall through */
	default:
		lib_error(t->err, sizeof t->err, "TLS protocol error");
		return TLS_ERROR;
	}
}

enum tls_rc tls_handshake(struct tls *t, uint32_t *events)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(t->ssl);
	if (r == 1)
		return TLS_OK;
	enum tls_rc rc = result(t, r, events);
	if (rc != TLS_EOF)
		return rc;
	snprintf(t->err, sizeof t->err, "lost connection"); /* a handshake cut short is a failure */
	return TLS_ERROR;
}

enum tls_rc tls_read(struct tls *t, void *p, size_t n, size_t *done, uint32_t *events)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_read_ex(t->ssl, p, n, done);
	if (r == 1)
		return TLS_OK;
	return result(t, r, events);
}

enum tls_rc tls_write(struct tls *t, const void *p, size_t n, size_t *done, uint32_t *events)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_write_ex(t->ssl, p, n, done);
	if (r == 1)
		return TLS_OK;
	enum tls_rc rc = result(t, r, events);
	return rc == TLS_EOF ? TLS_ERROR : rc; /* nobody reads what we write */
}

bool tls_pending(const struct tls *t)
{
	return SSL_pending(t->ssl) > 0 || SSL_has_pending(t->ssl);
}

const char *tls_error(const struct tls *t)
{
	return t->err[0] ? t->err : "TLS error";
}

const char *tls_version(const struct tls *t) { return SSL_get_version(t->ssl); }

const char *tls_cipher(const struct tls *t)
{
	const char *c = SSL_get_cipher_name(t->ssl);
	return c ? c : "(none)";
}

void tls_describe(const struct tls *t, char *out, size_t len)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
	int alg = 0, bits = c ? SSL_CIPHER_get_bits(c, &alg) : 0;

	snprintf(out, len, "%s with cipher %s (%d/%d bits)", tls_version(t), tls_cipher(t), bits,
		 alg);
}

enum tls_verdict tls_verdict(const struct tls *t, char *why, size_t whylen)
{
	X509 *peer = SSL_get0_peer_certificate(t->ssl);
	long r = SSL_get_verify_result(t->ssl);

	if (peer == NULL) {
		snprintf(why, whylen, "no certificate");
		return TLS_UNTRUSTED;
	}
	if (t->chain_bad || (r != X509_V_OK && !t->name_bad)) {
		snprintf(why, whylen, "%s", X509_verify_cert_error_string(t->chain_bad ? t->chain_err : r));
		return TLS_UNTRUSTED;
	}
	if (t->name_bad) {
		snprintf(why, whylen, "the certificate does not name the host");
		return TLS_TRUSTED;
	}
	snprintf(why, whylen, "verified");
	return TLS_VERIFIED;
}

const char *tls_verdict_name(enum tls_verdict v)
{
	return v == TLS_VERIFIED ? "verified" : v == TLS_TRUSTED ? "trusted" : "untrusted";
}
