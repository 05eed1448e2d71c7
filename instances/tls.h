/* tls.h: STARTTLS for both sides of the instance, over OpenSSL 3, as a
 * layer the server connections (conn.c) and the delivery side (smtpc.c)
 * put between their non-blocking socket and their protocol engine.
 *
 * A context (SSL_CTX) belongs to one configuration generation: a reload
 * makes new ones for new sessions, and sessions under way keep theirs
 * (OpenSSL counts the references). Only TLS 1.2 and newer, forward-secret
 * AEAD ciphers for TLS 1.2, no renegotiation, no compression. */
#ifndef VHOSTMTA_TLS_H
#define VHOSTMTA_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* smtpd_tls_security_level and smtp_tls_security_level, in order. */
enum tls_level { TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_LEVEL_ENCRYPT, TLS_LEVEL_VERIFY };
enum tls_level tls_level_parse(const char *s); /* unknown: none */

struct tls_ctx; /* an SSL_CTX with its role */

/* tls_server_ctx: the certificate chain and key (PEM) of the SMTP server;
 * NULL with the reason (file and OpenSSL's words) in err. */
struct tls_ctx *tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen);
/* tls_client_ctx: for delivery; cafile: the trusted CAs (PEM), or "" for
 * the system's default store. */
struct tls_ctx *tls_client_ctx(const char *cafile, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *x);

/* One TLS connection over a connected non-blocking socket. */
struct tls;

struct tls *tls_server(struct tls_ctx *x, int fd);
/* tls_client: host, when it is a name, is sent as SNI and is the name
 * the certificate is checked against (an address literal's address
 * otherwise). */
struct tls *tls_client(struct tls_ctx *x, int fd, const char *host);
/* tls_free: say close_notify when that can be done at once, free; the
 * socket is the caller's. */
void tls_free(struct tls *t);

/* Results of the steps below. TLS_WANT: call again when the socket has
 * the epoll events in *events (EPOLLIN or EPOLLOUT; a read may need the
 * socket writable and a write readable). */
enum tls_rc { TLS_OK, TLS_WANT, TLS_EOF, TLS_ERROR };

enum tls_rc tls_handshake(struct tls *t, uint32_t *events);
enum tls_rc tls_read(struct tls *t, void *p, size_t n, size_t *done, uint32_t *events);
enum tls_rc tls_write(struct tls *t, const void *p, size_t n, size_t *done, uint32_t *events);
/* tls_pending: decrypted or received input waits inside the library:
 * read again without waiting for the socket. */
bool tls_pending(const struct tls *t);

/* tls_error: why the last step failed, one printable line. */
const char *tls_error(const struct tls *t);

/* After the handshake. */
const char *tls_version(const struct tls *t); /* "TLSv1.3" */
const char *tls_cipher(const struct tls *t);  /* "TLS_AES_256_GCM_SHA384" */
/* tls_describe: "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" */
void tls_describe(const struct tls *t, char *out, size_t len);

/* The peer certificate as the client judges it: verified (a trusted
 * chain that names the host), trusted (a trusted chain, another name),
 * untrusted (no trusted chain, or no certificate). */
enum tls_verdict { TLS_UNTRUSTED, TLS_TRUSTED, TLS_VERIFIED };
enum tls_verdict tls_verdict(const struct tls *t, char *why, size_t whylen);
const char *tls_verdict_name(enum tls_verdict v); /* "untrusted" ... */

#endif
