/* log.c: stderr logging with sd-daemon priority prefixes under systemd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static const char *progname = "vhostmta";
static int prefix_mode = -1; /* -1 auto, 0 off, 1 on */
static int prefix_auto;
static int verbose;

/* stderr is the journal when $JOURNAL_STREAM names its device and inode. */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *name)
{
	const char *slash = strrchr(name, '/');

	progname = slash ? slash + 1 : name;
	prefix_auto = stderr_is_journal();
}

void log_set_name(const char *name)
{
	static char copy[128];
	snprintf(copy, sizeof copy, "%s", name);
	progname = copy;
}

void log_set_prefix(int mode) { prefix_mode = mode; }
void log_set_verbose(int level) { verbose = level; }
int log_verbose(void) { return verbose; }

void log_vmsg(int prio, const char *fmt, va_list ap)
{
	char line[4096];
	int off = 0;
	int prefix = prefix_mode < 0 ? prefix_auto : prefix_mode;

	if (prefix)
		off = snprintf(line, sizeof line, "<%d>", prio & 7);
	off += snprintf(line + off, sizeof line - (size_t)off, "%s: ", progname);
	vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap);
	/* One event, one line: a stray newline never splits a log record. */
	for (char *p = line; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	fprintf(stderr, "%s\n", line);
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

void msg_fatal(const char *fmt, ...)
{
	va_list ap;
	char buf[4096];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	log_msg(LOG_CRIT, "fatal: %s", buf);
	exit(1);
}

void msg_panic(const char *fmt, ...)
{
	va_list ap;
	char buf[4096];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	log_msg(LOG_CRIT, "panic: %s", buf);
	abort();
}
