/* wake.h: `vhostmta wake`, what vhostmta-wake.service runs once
 * vhostmta.target is up. An instance starts on its first connection and
 * exits when idle only with an empty queue; after a reboot or a restart of
 * the target nothing would start one whose queue still holds mail, and
 * that mail would wait for a connection. wake starts vhostmta@NAME.service
 * for every rendered instance (DIR/NAME/instance.cf) whose queue_directory
 * has an entry in incoming/ or deferred/; the others are not touched. */
#ifndef VHOSTMTA_WAKE_H
#define VHOSTMTA_WAKE_H

/* wake_run: one line per started instance on stdout, "start
 * vhostmta@NAME.service (NAME: N queue files)", problems on stderr.
 * Returns 0, or 1 when a queue could not be read or systemd could not be
 * reached or refused or failed a start (the others are still started). */
int wake_run(const char *instances);

#endif
