/* generator.h: vhostmta-generator, the systemd generator (see
 * systemd.generator(7)). For each rendered instance (DIR/NAME/instance.cf,
 * what `vhostmta apply` wrote from the last map it accepted) it writes
 *   NORMAL/vhostmta@NAME.socket.d/50-listen.conf   one ListenStream= per
 *       inet_interfaces address at smtpd_listen_port
 *   NORMAL/vhostmta.target.wants/vhostmta@NAME.socket -> UNITDIR/vhostmta@.socket
 * and nothing else. It reads only /etc, calls nothing, logs to /dev/kmsg,
 * and exits 0 whatever it finds, so it never fails a boot. */
#ifndef VHOSTMTA_GENERATOR_H
#define VHOSTMTA_GENERATOR_H

#define GENERATOR_PROG "vhostmta-generator"
#define GENERATOR_DROPIN "50-listen.conf"
#define GENERATOR_TARGET "vhostmta.target"

#ifndef UNITDIR
#define UNITDIR "/lib/systemd/system"
#endif

struct generator_opts {
	const char *instances; /* the render output directory */
	const char *normal_dir; /* where the units and links go */
	const char *unit_dir;   /* where vhostmta@.socket is installed */
};

/* generator_run: write the drop-ins and links. Returns the number of
 * instances that were skipped because of an error (each one logged);
 * the caller exits 0 regardless. */
unsigned generator_run(const struct generator_opts *o);

/* generator_main: the entry point as systemd calls it,
 * `vhostmta-generator NORMAL_DIR [EARLY_DIR LATE_DIR]`. Always returns 0
 * except for a usage error (2). */
int generator_main(int argc, char **argv, const char *instances);

#endif
