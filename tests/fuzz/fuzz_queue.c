/* fuzz_queue.c: the queue file reader (instances/queue.h). The input is
 * written to a file named like a queue id and read with qmsg_read_all;
 * the content of every message of a file that validates is read back
 * with qdata_read, which must yield exactly data_len bytes. A refused
 * file gives a printable phrase and nothing else.
 *
 * Input: a queue file. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzzutil.h"
#include "queue.h"

static char path[600];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	/* A queue id as the name: a first message without an ID record
	 * takes it. */
	snprintf(path, sizeof path, "%s/0123456789ABCDEF", fuzz_tmpdir("queue"));
	return 0;
}

static bool is_hex_id(const char *s)
{
	for (size_t i = 0; i < QID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return s[QID_LEN] == 0;
}

/* content: the message's DATA records read back. */
static void content(int fd, const struct qmsg *m)
{
	struct qdata d;
	char buf[1000];
	uint64_t total = 0;
	long r;

	qdata_init(&d, fd, m->data_offset);
	while ((r = qdata_read(&d, buf, sizeof buf)) > 0) {
		FUZZ_CHECK((size_t)r <= sizeof buf, "read %ld", r);
		total += (uint64_t)r;
	}
	FUZZ_CHECK(r == 0, "content of a valid file unreadable");
	FUZZ_CHECK(total == m->data_len, "%llu content bytes, data_len %llu",
		   (unsigned long long)total, (unsigned long long)m->data_len);
	FUZZ_CHECK(m->data_offset >= 0 || m->data_len == 0, "data_len without data_offset");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qmsg *msgs;
	size_t n;
	char err[256];

	fuzz_write_file(path, data, size);
	if (!qmsg_read_all(path, &msgs, &n, err, sizeof err)) {
		FUZZ_CHECK(msgs == NULL && n == 0, "a refused file with messages");
		FUZZ_CHECK(memchr(err, 0, sizeof err) != NULL && fuzz_printable(err, strlen(err)) &&
				   err[0] != 0,
			   "error phrase %s", err);
		return 0;
	}
	FUZZ_CHECK(n >= 1, "a valid file without messages");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	FUZZ_CHECK(fd >= 0, "open");
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(is_hex_id(msgs[i].id), "message %zu has id \"%s\"", i, msgs[i].id);
		FUZZ_CHECK(msgs[i].nrcpts <= QFILE_MAX_RCPTS, "recipients");
		for (size_t k = 0; k < msgs[i].nrcpts; k++)
			FUZZ_CHECK(msgs[i].rcpts[k] != NULL, "recipient %zu", k);
		content(fd, &msgs[i]);
	}
	close(fd);
	qmsg_free_all(msgs, n);
	return 0;
}
