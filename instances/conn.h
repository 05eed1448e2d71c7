/* conn.h: the SMTP connections of an instance on sd-event. The server
 * accepts on the listeners, enforces the session limits, and runs one
 * conn per client: bytes read are fed to the smtpd session, the
 * session's output is written back, with smtpd_timeout as the idle limit.
 * Nothing a client does can end the daemon: every failure closes that
 * one connection.
 *
 * I/O goes through a small table of functions on each conn: plain TCP,
 * and TLS after STARTTLS (the session only says when to start it). */
#ifndef VHOSTMTA_CONN_H
#define VHOSTMTA_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "cf.h"
#include "listen.h"
#include "policy.h"
#include "smtpd.h"

/* sconf: one generation of the configuration. New sessions take the
 * server's current one; a session keeps the one it started with until it
 * ends, so a reload never changes a session in mid-dialogue. */
struct sconf {
	unsigned refs;
	struct cf cf;
	struct policy policy;
	bool policy_loaded;        /* policy_free is due */
	struct smtpd_config smtpd; /* points into this sconf */
	struct tls_ctx *tls;       /* the server certificate, or NULL: no STARTTLS */
};

struct sconf *sconf_new(void); /* one reference, cf initialized */
struct sconf *sconf_ref(struct sconf *c);
void sconf_unref(struct sconf *c);

/* The I/O layer of a connection. read and write move up to n bytes and
 * set *done; CONN_IO_AGAIN: nothing now, retry when the socket is ready
 * (a layer that needs the other direction first, as TLS may, sets
 * conn->io_extra to the epoll events it waits for). */
enum conn_io { CONN_IO_OK, CONN_IO_AGAIN, CONN_IO_EOF, CONN_IO_ERROR };

struct conn;
struct conn_ops {
	enum conn_io (*read)(struct conn *c, void *p, size_t n, size_t *done);
	enum conn_io (*write)(struct conn *c, const void *p, size_t n, size_t *done);
	void (*close)(struct conn *c); /* release the layer and the socket */
};

/* The parts of a conn an I/O layer may use. */
struct conn_layer {
	int fd;
	const struct conn_ops *ops;
	void *ctx;         /* the layer's own state */
	uint32_t extra;    /* epoll events the layer needs besides the conn's */
	int error;         /* errno of the last CONN_IO_ERROR, for the log */
	bool abort;        /* close drops unsent data (a peer that stopped reading) */
	bool more;         /* after a read: more input waits inside the layer,
			    * no socket event will tell */
};
struct conn_layer *conn_layer(struct conn *c);

struct ipcount;
struct tls_ctx;

struct server {
	sd_event *event;
	struct sconf *conf;           /* for new sessions (one reference) */
	struct listeners *listeners;  /* not owned */
	struct server_listener *acc;  /* one accept source per listener */
	sd_event_source *accept_pause;
	struct conn *conns;
	size_t nconns;
	struct ipcount *perip;
	bool stopping;
	void (*changed)(void *ctx);   /* the number of sessions changed */
	void *ctx;
};

void server_init(struct server *sv, sd_event *e, struct sconf *conf);
/* server_listen: accept on every listener. False (err set) when the
 * event loop refuses a source. */
bool server_listen(struct server *sv, struct listeners *ls, char *err, size_t errlen);
/* server_set_conf: conf (a new reference is taken) for new sessions. */
void server_set_conf(struct server *sv, struct sconf *conf);
/* server_stop_listening: close the listeners; sessions go on. */
void server_stop_listening(struct server *sv);
/* server_shutdown: stop listening and ask every session to end (421
 * between transactions; inside one, after its reply). */
void server_shutdown(struct server *sv);
/* server_close_all: end every session now (a session waiting for the
 * queue ends as soon as the queue has answered it). */
void server_close_all(struct server *sv);
size_t server_sessions(const struct server *sv);
void server_free(struct server *sv);

#endif
