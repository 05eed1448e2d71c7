/* fuzz_smtpd.c: the ESMTP session engine (instances/smtpd.h) fed hostile
 * dialogues. The input picks the configuration, the client address and
 * where the byte stream is cut into reads (so the per-read pipelining
 * rules are exercised), and when the session times out or the instance
 * shuts down. STARTTLS is offered; when the session hands over to the
 * handshake, the next read starts inside "TLS". A real queue in a
 * scratch directory commits the messages whenever the session waits.
 *
 * Input: [count byte: low 3 bits K, high bits the flags below] [K split
 * lengths] [event byte: low nibble the read before which the instance
 * shuts down, high nibble the one before which the session times out, 15
 * never] [the client's bytes]. With FUZZ_TRACE set in the environment
 * the dialogue is printed, to see what one input does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cf.h"
#include "fuzzutil.h"
#include "policy.h"
#include "queue.h"
#include "smtpd.h"

#define F_ENV 3        /* which of the configurations */
#define F_TRUSTED 4    /* the client is in mynetworks */
#define F_IPV6 8       /* the client connects over IPv6 */
#define F_LEAVE 16     /* the client leaves while its message is committed */
#define NENV 4
#define CLEAR_EVERY 128 /* inputs between removals of the queued files */

/* The configurations: TLS may/encrypt/none, lenient and strict limits. */
static const char *const env_text[NENV] = {
	"smtpd_tls_security_level = may\n",
	"smtpd_tls_security_level = encrypt\n",
	"smtpd_tls_security_level = may\n" /* strict, with small limits */
	"strict_rfc821_envelopes = yes\nsmtpd_helo_required = yes\n"
	"smtpd_recipient_limit = 3\nsmtpd_junk_command_limit = 5\n"
	"smtpd_hard_error_limit = 5\nline_length_limit = 512\nmessage_size_limit = 1000\n",
	"smtpd_tls_security_level = none\ndisable_vrfy_command = yes\nmessage_size_limit = 1000\n",
};

static struct cf cfs[NENV];
static struct policy policies[NENV];
static struct queue *queue;
static char incoming[600];
static unsigned long inputs;
static bool trace; /* $FUZZ_TRACE: print the dialogue (to replay one input) */

struct session {
	struct smtpd *s;
	struct smtpd_config config;
	int wakes;
	bool freed;
};

static void wake(void *ctx) { ((struct session *)ctx)->wakes++; }

static void load_env(int i, const char *dir)
{
	struct diag d = DIAG_INIT;
	struct buf text = BUF_INIT;

	buf_printf(&text,
		   "myhostname = mail.hosted.test\ninstance_name = f\n"
		   "inet_interfaces = 192.0.2.1 [2001:db8::1]\nproxy_interfaces = 203.0.113.9\n"
		   "mynetworks = 127.0.0.0/8 [::1]/128\nqueue_directory = %s/q\n"
		   "transport_table = %s/transport\n%s",
		   dir, dir, env_text[i]);
	cf_init(&cfs[i]);
	if (!cf_parse_text(&cfs[i], "fuzz.cf", text.data, text.len, &d) ||
	    !cf_finalize(&cfs[i], "fuzz.cf", &d) ||
	    !policy_load(&policies[i], cf_str(&cfs[i], P_transport_table),
			 cf_str(&cfs[i], P_mynetworks), cf_str(&cfs[i], P_inet_interfaces),
			 cf_str(&cfs[i], P_proxy_interfaces), &d)) {
		dprintf(2, "fuzz_smtpd: bad configuration %d\n", i);
		abort();
	}
	buf_free(&text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = fuzz_tmpdir("smtpd");
	char path[600];
	static const char transport[] = "hosted.test\tsmtp:[192.0.2.100]:25\n"
					"other.test\tlmtp:unix:/run/lmtp\n";

	fuzz_quiet();
	trace = getenv("FUZZ_TRACE") != NULL;
	snprintf(path, sizeof path, "%s/transport", dir);
	fuzz_write_file(path, (const uint8_t *)transport, sizeof transport - 1);
	for (int i = 0; i < NENV; i++)
		load_env(i, dir);
	queue = queue_open(cf_str(&cfs[0], P_queue_directory));
	if (queue == NULL)
		abort();
	snprintf(incoming, sizeof incoming, "%s/q/incoming", dir);
	return 0;
}

/* check_output: every reply line is "DDD" + ' ' or '-' + printable text +
 * CRLF, with a code from 2xx to 5xx; the output is then consumed. */
static void check_output(struct smtpd *s)
{
	struct buf *out = smtpd_output(s);
	const char *p = out->data, *end = out->data + out->len;

	if (trace && out->len > 0)
		dprintf(2, "S: %.*s", (int)out->len, out->data);
	while (p < end) {
		const char *crlf = memchr(p, '\r', (size_t)(end - p));
		FUZZ_CHECK(crlf != NULL && crlf + 1 < end && crlf[1] == '\n',
			   "reply line without CRLF");
		size_t n = (size_t)(crlf - p);
		FUZZ_CHECK(n >= 4 && p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' &&
				   p[2] >= '0' && p[2] <= '9' && (p[3] == ' ' || p[3] == '-'),
			   "malformed reply line %.*s", (int)n, p);
		FUZZ_CHECK(fuzz_printable(p, n), "unprintable reply %.*s", (int)n, p);
		p = crlf + 2;
	}
	buf_reset(out);
}

/* feed_read: one read of the connection, as the event loop handles it;
 * false when the client left (the session is gone). */
static bool feed_read(struct session *ss, const char *p, size_t n, bool leave)
{
	size_t used = 0;

	if (trace)
		dprintf(2, "C (read of %zu): %.*s\n", n, (int)n, p);
	while (used < n && smtpd_status(ss->s) == SMTPD_OPEN) {
		size_t k = smtpd_feed(ss->s, p + used, n - used);
		FUZZ_CHECK(k <= n - used, "consumed more than given");
		FUZZ_CHECK(k == n - used || smtpd_status(ss->s) != SMTPD_OPEN,
			   "stopped consuming while open");
		used += k;
		if (smtpd_status(ss->s) != SMTPD_WAITING)
			continue;
		FUZZ_CHECK(queue_pending(queue) == 1, "waiting without a submitted message");
		if (leave) {
			smtpd_free(ss->s);
			queue_flush(queue);
			return false;
		}
		int before = ss->wakes;
		queue_flush(queue);
		FUZZ_CHECK(ss->wakes == before + 1, "commit without wake");
		FUZZ_CHECK(smtpd_status(ss->s) != SMTPD_WAITING, "still waiting after the commit");
	}
	/* Input read before a handshake is dropped (the STARTTLS reply ended
	 * this read, or the session closed). */
	return true;
}

static void session_run(unsigned flags, unsigned ev, const struct fuzz_splits *splits,
			const char *p, size_t n)
{
	struct session ss = { 0 };
	struct smtpd_client c = { 0 };
	struct fuzz_splits sp = *splits;
	unsigned env = flags & F_ENV;
	const char *addr = flags & F_IPV6 ? (flags & F_TRUSTED ? "::1" : "2001:db8::7")
					  : (flags & F_TRUSTED ? "127.0.0.1" : "198.51.100.7");

	ipaddr_parse(addr, strlen(addr), &c.addr);
	c.port = 40000;
	ipaddr_parse("192.0.2.1", 9, &c.local);
	c.local_port = 25;
	ss.config = (struct smtpd_config){ &cfs[env], &policies[env], queue, true };
	ss.s = smtpd_new(&ss.config, &c, (struct smtpd_io){ wake, &ss });
	check_output(ss.s);
	for (unsigned i = 0; n > 0; i++) {
		if (i == (ev & 15))
			smtpd_shutdown(ss.s);
		if (i == (ev >> 4))
			smtpd_timeout(ss.s);
		if (smtpd_status(ss.s) == SMTPD_STARTTLS)
			smtpd_tls_started(ss.s, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)");
		check_output(ss.s);
		if (smtpd_status(ss.s) == SMTPD_CLOSING)
			break;
		size_t k = fuzz_splits_next(&sp, n);
		if (!feed_read(&ss, p, k, flags & F_LEAVE))
			return;
		check_output(ss.s);
		p += k;
		n -= k;
	}
	smtpd_eof(ss.s);
	FUZZ_CHECK(smtpd_status(ss.s) == SMTPD_CLOSING, "open after EOF");
	smtpd_free(ss.s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_splits sp;
	unsigned flags, ev = 0xff;

	fuzz_splits_take(&sp, &data, &size, &flags);
	if (size > 0) {
		ev = data[0];
		data++;
		size--;
	}
	/* An exact-size copy, so ASan sees any read past the end. */
	char *p = malloc(size ? size : 1);
	memcpy(p, data, size);
	session_run(flags, ev, &sp, p, size);
	free(p);
	FUZZ_CHECK(queue_pending(queue) == 0, "a message left uncommitted");
	if (++inputs % CLEAR_EVERY == 0)
		fuzz_clear_dir(incoming);
	return 0;
}
