/* log.h: one line per event on stderr. Under systemd (stderr connected to
 * the journal, or log_prefix forced) each line starts with the sd-daemon
 * "<N>" priority prefix. Taxonomy: msg_fatal (environment: exit 1),
 * msg_panic (our bug: abort), msg_error/msg_warn (recoverable). */
#ifndef VHOSTMTA_LOG_H
#define VHOSTMTA_LOG_H

#include <stdarg.h>
#include <syslog.h>

/* log_init: the program's name from argv[0] (its last path component). */
void log_init(const char *progname);
/* log_set_name: the name at the start of every line, taken whole
 * (syslog_name = vhostmta/alpha logs as "vhostmta/alpha:"). */
void log_set_name(const char *name);
/* log_set_prefix: 1 forces "<N>" prefixes, 0 suppresses them, -1 restores
 * auto-detection through $JOURNAL_STREAM. */
void log_set_prefix(int mode);
void log_set_verbose(int level);
int log_verbose(void);

void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int prio, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define msg_debug(...) do { if (log_verbose()) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define msg_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define msg_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define msg_warn(...) log_msg(LOG_WARNING, "warning: " __VA_ARGS__)
#define msg_error(...) log_msg(LOG_ERR, "error: " __VA_ARGS__)
void msg_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void msg_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
