/* main.c: the vhostmta command: check, list, render, params and queue. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "buf.h"
#include "cf.h"
#include "generator.h"
#include "log.h"
#include "map.h"
#include "queuecmd.h"
#include "render.h"
#include "run.h"
#include "runctl.h"
#include "runspawn.h"
#include "util.h"
#include "wake.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_MAP SYSCONFDIR "/vhostmta/map.xml"
#define DEFAULT_INSTANCES SYSCONFDIR "/vhostmta/instances"
#define VERSION "0.1"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;
	const char *help;
};

static const struct command *find_command(const char *name);

/* usage_error: what, followed by 'arg' when arg is not NULL; exit 2. */
static void usage_error(const struct command *c, const char *what, const char *arg)
	__attribute__((noreturn));
static void usage_error(const struct command *c, const char *what, const char *arg)
{
	fprintf(stderr, "vhostmta %s: %s", c->name, what);
	if (arg)
		fprintf(stderr, " '%s'", arg);
	fprintf(stderr, "\nusage: vhostmta %s\nTry 'vhostmta %s --help'.\n", c->usage, c->name);
	exit(2);
}

static void show_help(const struct command *c)
{
	printf("usage: vhostmta %s\n\n%s", c->usage, c->help);
	exit(0);
}

/* Options shared by the map commands. */
struct map_opts {
	const char *map;
	const char *host;
	const char *outdir;
	const char *state_dir;
	const char *backend; /* NULL: the map's choice */
	bool json;
};

static void parse_map_opts(const struct command *c, int argc, char **argv, struct map_opts *o,
			   bool want_out)
{
	static const struct option longopts[] = {
		{ "map", required_argument, NULL, 'm' },
		{ "host", required_argument, NULL, 'H' },
		{ "output", required_argument, NULL, 'o' },
		{ "json", no_argument, NULL, 'j' },
		{ "backend", required_argument, NULL, 'b' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;
	enum backend unused;

	o->map = DEFAULT_MAP;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+m:H:o:jb:s:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'm': o->map = optarg; break;
		case 'H': o->host = optarg; break;
		case 'o': o->outdir = optarg; break;
		case 'j': o->json = true; break;
		case 'b':
			if (!backend_parse(optarg, &unused))
				usage_error(c, "--backend is vhostmta or postfix, not", optarg);
			o->backend = optarg;
			break;
		case 's': o->state_dir = optarg; break;
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	if (optind < argc)
		usage_error(c, "unexpected argument", argv[optind]);
	if (want_out && o->outdir == NULL)
		usage_error(c, "-o DIR is required", NULL);
	if (o->outdir && !want_out)
		usage_error(c, "-o is not an option of this command", NULL);
}

/* load: the map, or exit 1 after its errors; --backend overrides the map. */
static void load(struct map *m, const struct map_opts *o)
{
	struct diag d = DIAG_INIT;
	const char *path = o->map;

	if (map_load(m, path, &d) && o->backend)
		backend_parse(o->backend, &m->backend);
	if (d.errors) {
		fprintf(stderr, "vhostmta: %s: %u error%s, nothing done\n", path, d.errors,
			d.errors == 1 ? "" : "s");
		map_free(m);
		exit(1);
	}
}

/* missing_addresses: Postfix refuses an inet_interfaces address that is not
 * on an interface, so the Postfix backend needs every address here. */
static unsigned missing_addresses(const struct map *m, const char *host)
{
	struct iflist all = { IFLIST_ALL, 0, NULL }, here;
	struct diag d = DIAG_INIT;
	char err[200];

	if (!iflist_expand(&all, &here, err, sizeof err)) {
		fprintf(stderr, "vhostmta: cannot list this host's addresses: %s\n", err);
		return 1;
	}
	for (size_t i = 0; i < m->n; i++) {
		const struct map_instance *in = &m->inst[i];
		for (size_t j = 0; map_on_host(in, host) && j < in->naddrs; j++)
			if (!iflist_contains(&here, &in->addrs[j]))
				diag_error(&d, m->path, in->addr_line[j],
					   "address %s of instance \"%s\" is not configured on this host "
					   "(Postfix refuses it)", in->addr_text[j], in->name);
	}
	iflist_free(&here);
	return d.errors;
}

static int cmd_check(int argc, char **argv)
{
	struct map_opts o = { 0 };
	struct map m;
	size_t n = 0, addrs = 0, domains = 0;

	parse_map_opts(find_command("check"), argc, argv, &o, false);
	load(&m, &o);
	if (m.backend == BACKEND_POSTFIX) {
		unsigned missing = missing_addresses(&m, o.host);
		if (missing) {
			fprintf(stderr, "vhostmta: %s: %u address%s missing on this host\n", o.map,
				missing, missing == 1 ? "" : "es");
			map_free(&m);
			return 1;
		}
	}
	for (size_t i = 0; i < m.n; i++) {
		if (!map_on_host(&m.inst[i], o.host))
			continue;
		n++;
		addrs += m.inst[i].naddrs;
		domains += m.inst[i].ndomains;
	}
	printf("%s: ok: %zu instance%s, %zu address%s, %zu domain%s%s%s%s\n", o.map, n,
	       n == 1 ? "" : "s", addrs, addrs == 1 ? "" : "es", domains, domains == 1 ? "" : "s",
	       o.host ? " on host " : "", o.host ? o.host : "",
	       m.backend == BACKEND_POSTFIX ? " (postfix backend: every address is on this host)" : "");
	map_free(&m);
	return 0;
}

static void list_json(const struct map *m, const char *host, struct buf *b)
{
	bool first = true;

	buf_puts(b, "[");
	for (size_t i = 0; i < m->n; i++) {
		const struct map_instance *in = &m->inst[i];
		if (!map_on_host(in, host))
			continue;
		buf_puts(b, first ? "\n  {\"name\": " : ",\n  {\"name\": ");
		first = false;
		buf_put_json(b, in->name);
		buf_puts(b, ", \"addresses\": [");
		for (size_t j = 0; j < in->naddrs; j++) {
			buf_puts(b, j ? ", " : "");
			buf_put_json(b, in->addr_text[j]);
		}
		buf_puts(b, "], \"myhostname\": ");
		buf_put_json(b, in->myhostname);
		buf_puts(b, ", \"host\": ");
		if (in->host)
			buf_put_json(b, in->host);
		else
			buf_puts(b, "null");
		buf_puts(b, ", \"domains\": [");
		for (size_t j = 0; j < in->ndomains; j++) {
			buf_puts(b, j ? ", {\"name\": " : "{\"name\": ");
			buf_put_json(b, in->domains[j].name);
			buf_puts(b, ", \"deliver\": ");
			if (in->domains[j].deliver)
				buf_put_json(b, in->domains[j].deliver);
			else
				buf_puts(b, "null");
			buf_puts(b, "}");
		}
		buf_puts(b, "]}");
	}
	buf_puts(b, first ? "]\n" : "\n]\n");
}

static void list_domains(const struct map_instance *in, struct buf *b)
{
	for (size_t j = 0; j < in->ndomains; j++)
		buf_printf(b, "%s%s", j ? "," : "", in->domains[j].name);
	if (in->ndomains == 0)
		buf_puts(b, "-");
}

static void list_table(const struct map *m, const char *host, struct buf *b)
{
	int wn = 4, wa = 9, wh = 10, wo = 4;
	struct buf addrs = BUF_INIT;

	for (size_t i = 0; i < m->n; i++) {
		const struct map_instance *in = &m->inst[i];
		if (!map_on_host(in, host))
			continue;
		buf_reset(&addrs);
		map_inet_interfaces(in, &addrs);
		wn = (int)(strlen(in->name) > (size_t)wn ? strlen(in->name) : (size_t)wn);
		wa = (int)(addrs.len > (size_t)wa ? addrs.len : (size_t)wa);
		wh = (int)(strlen(in->myhostname) > (size_t)wh ? strlen(in->myhostname) : (size_t)wh);
		if (in->host)
			wo = (int)(strlen(in->host) > (size_t)wo ? strlen(in->host) : (size_t)wo);
	}
	buf_printf(b, "%-*s  %-*s  %-*s  %-*s  %s\n", wn, "NAME", wa, "ADDRESSES", wh, "MYHOSTNAME",
		   wo, "HOST", "DOMAINS");
	for (size_t i = 0; i < m->n; i++) {
		const struct map_instance *in = &m->inst[i];
		if (!map_on_host(in, host))
			continue;
		buf_reset(&addrs);
		map_inet_interfaces(in, &addrs);
		buf_printf(b, "%-*s  %-*s  %-*s  %-*s  ", wn, in->name, wa, buf_cstr(&addrs), wh,
			   in->myhostname, wo, in->host ? in->host : "*");
		list_domains(in, b);
		buf_putc(b, '\n');
	}
	buf_free(&addrs);
}

static int cmd_list(int argc, char **argv)
{
	struct map_opts o = { 0 };
	struct map m;
	struct buf b = BUF_INIT;

	parse_map_opts(find_command("list"), argc, argv, &o, false);
	load(&m, &o);
	if (o.json)
		list_json(&m, o.host, &b);
	else
		list_table(&m, o.host, &b);
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
	map_free(&m);
	return 0;
}

static int cmd_render(int argc, char **argv)
{
	struct map_opts o = { 0 };
	struct map m;
	struct render_stats st;

	parse_map_opts(find_command("render"), argc, argv, &o, true);
	load(&m, &o);
	/* The state directory is written into the configurations: absolute. */
	char state[PATH_MAX];
	if (o.state_dir && o.state_dir[0] != '/') {
		char cwd[PATH_MAX - 64];
		if (getcwd(cwd, sizeof cwd) == NULL) {
			fprintf(stderr, "vhostmta: getcwd: %s\n", strerror(errno));
			return 1;
		}
		snprintf(state, sizeof state, "%s/%s", cwd, o.state_dir);
		o.state_dir = state;
	}
	struct render_opts ro = { o.outdir, o.host, m.backend, o.state_dir };
	bool ok = render_map(&m, &ro, &st);
	for (size_t i = 0; i < st.nitems; i++)
		printf("%s: %s\n", st.items[i].name, render_change_name(st.items[i].change));
	render_stats_free(&st);
	printf("%s: %zu instance%s rendered into %s: %zu file%s written, %zu unchanged, "
	       "%zu director%s removed\n",
	       o.map, st.instances, st.instances == 1 ? "" : "s", o.outdir, st.written,
	       st.written == 1 ? "" : "s", st.unchanged, st.removed, st.removed == 1 ? "y" : "ies");
	map_free(&m);
	return ok ? 0 : 1;
}

/* params: like postconf(1): defaults, or the values of one instance.cf. */
static int cmd_params(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "defaults", no_argument, NULL, 'd' },
		{ "dump-defaults", no_argument, NULL, 'd' },
		{ "non-default", no_argument, NULL, 'n' },
		{ "config", required_argument, NULL, 'c' },
		{ "doc", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *c = find_command("params");
	const char *file = NULL;
	bool defaults = false, nondefault = false;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+dnc:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'd': defaults = true; break;
		case 'n': nondefault = true; break;
		case 'c': file = optarg; break;
		case 'D': param_write_doc(stdout); return 0;
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	if (defaults && file)
		usage_error(c, "-d and -c exclude each other", NULL);
	if (nondefault && file == NULL)
		usage_error(c, "-n needs -c FILE", NULL);
	for (int i = optind; i < argc; i++)
		if (param_lookup(argv[i], strlen(argv[i])) < 0)
			usage_error(c, "unknown parameter", argv[i]);
	if (file == NULL && optind == argc) {
		param_dump_defaults(stdout);
		return 0;
	}

	/* Defaults are shown as the table has them; a file's values expanded. */
	struct cf cf;
	struct diag d = DIAG_INIT;
	bool ok = true;
	cf_init(&cf);
	if (file) {
		cf_parse_file(&cf, file, &d); /* finalize reports the rest too */
		ok = cf_finalize(&cf, file, &d) && d.errors == 0;
	}
	struct buf b = BUF_INIT;
	for (int id = 0; id < P__COUNT; id++) {
		bool named = optind == argc;
		for (int i = optind; i < argc; i++)
			named |= strcmp(argv[i], param_table[id].name) == 0;
		if (!named || (nondefault && !cf_is_set(&cf, (enum param_id)id)))
			continue;
		cf_write_value(&b, param_table[id].name,
			       file ? cf_str(&cf, (enum param_id)id) : param_table[id].def);
	}
	fwrite(buf_cstr(&b), 1, b.len, stdout);
	buf_free(&b);
	cf_free(&cf);
	return ok ? 0 : 1;
}

/* queue: the rendered instances' queues, through vhostmta-instance. */
static int cmd_queue(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "flush", no_argument, NULL, 'f' },
		{ "delete", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *c = find_command("queue");
	struct qcmd_opts o = { .dir = DEFAULT_INSTANCES, .action = QCMD_LIST };
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:fd:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'o': o.dir = optarg; break;
		case 'f':
		case 'd': {
			enum qcmd_action a = ch == 'f' ? QCMD_FLUSH : QCMD_DELETE;
			if (o.action != QCMD_LIST && (o.action != a || a == QCMD_DELETE))
				usage_error(c, "give one of --flush and --delete ID", NULL);
			if (a == QCMD_DELETE && !qcmd_id_plausible(optarg))
				usage_error(c, "--delete needs a queue id, not", optarg);
			o.action = a;
			o.id = a == QCMD_DELETE ? optarg : NULL;
			break;
		}
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	o.names = argv + optind;
	o.nnames = (size_t)(argc - optind);
	return qcmd_run(&o);
}

/* ---- under systemd: apply and the generator ---- */

/* apply: check, render for this host, and have systemd act on the changes. */
static int cmd_apply(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "map", required_argument, NULL, 'm' },
		{ "output", required_argument, NULL, 'o' },
		{ "host", required_argument, NULL, 'H' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *c = find_command("apply");
	struct apply_opts o = { .map = DEFAULT_MAP, .outdir = DEFAULT_INSTANCES };
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+m:o:H:nh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'm': o.map = optarg; break;
		case 'o': o.outdir = optarg; break;
		case 'H': o.host = optarg; break;
		case 'n': o.dry_run = true; break;
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	if (optind < argc)
		usage_error(c, "unexpected argument", argv[optind]);
	return apply_run(&o);
}

/* generator: what systemd runs as vhostmta-generator, with -o for tests. */
static int cmd_generator(int argc, char **argv)
{
	const struct command *c = find_command("generator");
	const char *dir = DEFAULT_INSTANCES;
	int ch;

	optind = 1;
	while ((ch = getopt(argc, argv, "+o:h")) != -1) {
		switch (ch) {
		case 'o': dir = optarg; break;
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	if (argc - optind != 1 && argc - optind != 3)
		usage_error(c, "give NORMAL_DIR [EARLY_DIR LATE_DIR]", NULL);
	return generator_main(argc - optind + 1, argv + optind - 1, dir);
}

/* wake: start the instances with mail in their queues (vhostmta-wake.service). */
static int cmd_wake(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *c = find_command("wake");
	const char *dir = DEFAULT_INSTANCES;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+o:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'o': dir = optarg; break;
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	if (optind < argc)
		usage_error(c, "unexpected argument", argv[optind]);
	return wake_run(dir);
}

/* ---- without systemd: run and status ---- */

/* run: the supervisor (run.c). */
static int cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "map", required_argument, NULL, 'm' },
		{ "output", required_argument, NULL, 'o' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "user", required_argument, NULL, 'u' },
		{ "host", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *c = find_command("run");
	struct run_opts o = { .map = DEFAULT_MAP };
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+m:o:s:u:H:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'm': o.map = optarg; break;
		case 'o': o.outdir = optarg; break;
		case 's': o.state_dir = optarg; break;
		case 'u': o.user = optarg; break;
		case 'H': o.host = optarg; break;
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	if (optind < argc)
		usage_error(c, "unexpected argument", argv[optind]);
	return run_supervise(&o);
}

/* status: the instances of a running supervisor. */
static int cmd_status(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *c = find_command("status");
	const char *dir = NULL;
	bool json = false;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+o:jh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'o': dir = optarg; break;
		case 'j': json = true; break;
		case 'h': show_help(c); break;
		default: usage_error(c, "bad option", NULL);
		}
	}
	if (optind < argc)
		usage_error(c, "unexpected argument", argv[optind]);
	return run_status(dir, json);
}

static int cmd_help(int argc, char **argv);

static const struct command commands[] = {
	{ "check", cmd_check, "check [-m MAP] [--host HOST] [--backend postfix]",
	  "Read the map, check it against every rule of the map format and the schema,\n"
	  "and report each problem as one line MAP:LINE: error: WHAT. All problems are\n"
	  "reported in one run. A clean map prints a one-line summary.\n\n"
	  "  -m, --map MAP     the map (default " DEFAULT_MAP ")\n"
	  "  -H, --host HOST   count only the instances realized on HOST\n"
	  "  -b, --backend B   vhostmta or postfix (default: the map's <defaults backend>);\n"
	  "                    with postfix, every address must be configured on this\n"
	  "                    host, as Postfix refuses others: each missing one is\n"
	  "                    reported with its instance\n\n"
	  "Exit status: 0 the map is valid, 1 it has errors, 2 usage error.\n" },
	{ "list", cmd_list, "list [-m MAP] [--host HOST] [--json]",
	  "List the map's instances, one row each: name, addresses, myhostname, host\n"
	  "(* for every host) and hosted domains.\n\n"
	  "  -m, --map MAP     the map (default " DEFAULT_MAP ")\n"
	  "  -H, --host HOST   only the instances realized on HOST\n"
	  "  -j, --json        a JSON array of objects instead of the table\n" },
	{ "render", cmd_render,
	  "render [-m MAP] -o DIR [--host HOST] [--backend postfix [--state-dir SDIR]]",
	  "Check the map, then write one directory per instance under DIR: instance.cf\n"
	  "(from the instance.cf template) and transport (hosted domain -> next hop),\n"
	  "plus DIR/" RENDER_SIBLINGS ", every instance address of the host. With the\n"
	  "postfix backend: main.cf, master.cf and a texthash transport map, for\n"
	  "`postfix -c DIR/NAME start-fg`, with queue and data under SDIR/NAME.\n"
	  "Each instance's queue is SDIR/NAME (vhostmta) or SDIR/NAME/queue (postfix).\n"
	  "Files are replaced atomically and only when their content changes;\n"
	  "directories of instances no longer in the map (or not on HOST) are removed\n"
	  "(a Postfix queue never is). Nothing is written when the map has an error.\n"
	  "Each instance that changed gets one line: NAME: new, NAME: restart\n"
	  "(listeners changed), NAME: reload, or NAME: removed.\n\n"
	  "  -m, --map MAP        the map (default " DEFAULT_MAP ")\n"
	  "  -o, --output DIR     the output directory (created if missing)\n"
	  "  -H, --host HOST      only the instances realized on HOST\n"
	  "  -b, --backend B      vhostmta or postfix (default: the map's choice)\n"
	  "  -s, --state-dir SDIR the instances' queues (default " RENDER_VHOSTMTA_STATE ",\n"
	  "                       postfix: " RENDER_POSTFIX_STATE ")\n" },
	{ "params", cmd_params, "params [-d | -n] [-c FILE] [--doc] [NAME...]",
	  "Show instance parameters, like postconf(1). Without options, every\n"
	  "parameter with its default value.\n\n"
	  "  -d, --defaults     default values (of the NAMEs given, or all)\n"
	  "  -c, --config FILE  check FILE (instance.cf syntax) and show its values,\n"
	  "                     expanded; errors as FILE:LINE: error: WHAT\n"
	  "  -n, --non-default  only the parameters set explicitly\n"
	  "      --doc          the parameter reference in Markdown\n" },
	{ "queue", cmd_queue, "queue [-o DIR] [--flush | --delete ID] [NAME...]",
	  "Show, flush or delete from the queues of the rendered instances NAME (by\n"
	  "default every instance under DIR), through vhostmta-instance -c\n"
	  "DIR/NAME/instance.cf. Each instance's output comes under a NAME: heading\n"
	  "(an empty queue lists nothing), and a summary line ends the run.\n"
	  "Without an option, each queued message is one line: queue id, sender,\n"
	  "size and number of recipients, oldest first.\n\n"
	  "  -o, --output DIR  the render output directory (default\n"
	  "                    " DEFAULT_INSTANCES ")\n"
	  "      --flush       make every deferred message due now (running\n"
	  "                    instances; a stopped one with an empty queue is fine)\n"
	  "      --delete ID   delete message ID, without a bounce: from the NAMEs\n"
	  "                    given, or from whichever instance lists it; the\n"
	  "                    instance must be running\n\n"
	  "vhostmta-instance is taken from $VHOSTMTA_INSTANCE, else from beside\n"
	  "vhostmta, else from " SBINDIR ".\n"
	  "Exit status: 0 success, 1 an unknown NAME or an instance's command\n"
	  "failed, 2 usage error.\n" },
	{ "apply", cmd_apply, "apply [-m MAP] [-o DIR] [--host HOST] [--dry-run]",
	  "Check the map, render this host's instances into DIR (as render does), then\n"
	  "have systemd act on what changed: daemon-reload (vhostmta-generator rewrites\n"
	  "the socket units' Listen lines), then per instance\n"
	  "  new       start vhostmta@NAME.socket\n"
	  "  restart   its addresses or port changed: stop vhostmta@NAME.service and\n"
	  "            .socket, start the socket again\n"
	  "  reload    other parameters changed: reload vhostmta@NAME.service if it runs\n"
	  "  removed   stop vhostmta@NAME.socket and .service (its queue is kept)\n"
	  "and last start " GENERATOR_TARGET ". Unchanged instances are not touched (a socket\n"
	  "of theirs that is not active is started). A map with errors changes nothing.\n"
	  "One line per action; a refused or failed action is reported, the others\n"
	  "are still carried out, and the next apply finishes what was left undone.\n\n"
	  "  -m, --map MAP     the map (default " DEFAULT_MAP ")\n"
	  "  -o, --output DIR  the instances' configuration (default\n"
	  "                    " DEFAULT_INSTANCES ")\n"
	  "  -H, --host HOST   realize the instances of HOST (default: this machine's\n"
	  "                    host name, as hostname(1) prints it)\n"
	  "  -n, --dry-run     print the plan; write nothing, ask systemd nothing\n\n"
	  "Exit status: 0 success, 1 the map has errors, systemd cannot be reached or\n"
	  "an action failed, 2 usage error.\n" },
	{ "generator", cmd_generator, "generator [-o DIR] NORMAL_DIR [EARLY_DIR LATE_DIR]",
	  "The systemd generator, installed as " GENERATOR_PROG " (a link to vhostmta).\n"
	  "For each instance rendered under DIR it writes\n"
	  "NORMAL_DIR/vhostmta@NAME.socket.d/" GENERATOR_DROPIN " (one ListenStream= per\n"
	  "inet_interfaces address at smtpd_listen_port) and the link\n"
	  "NORMAL_DIR/" GENERATOR_TARGET ".wants/vhostmta@NAME.socket. An instance whose\n"
	  "instance.cf cannot be used is skipped. Logs go to /dev/kmsg (stderr with\n"
	  "SYSTEMD_LOG_TARGET=console). Always exits 0.\n\n"
	  "  -o DIR   the rendered instances (default " DEFAULT_INSTANCES ")\n" },
	{ "wake", cmd_wake, "wake [-o DIR]",
	  "Start vhostmta@NAME.service for each instance rendered under DIR whose queue\n"
	  "(its instance.cf's queue_directory) holds mail in incoming/ or deferred/:\n"
	  "socket activation starts an instance only on a connection, so after a boot\n"
	  "or a restart of " GENERATOR_TARGET " its queued mail would wait for one.\n"
	  "vhostmta-wake.service runs it each time the target starts. Instances with\n"
	  "an empty queue are not touched. One line per start:\n"
	  "  start vhostmta@NAME.service (NAME: N queue files)\n\n"
	  "  -o, --output DIR  the instances' configuration (default\n"
	  "                    " DEFAULT_INSTANCES ")\n\n"
	  "Exit status: 0 success, 1 a queue could not be read, systemd cannot be\n"
	  "reached or a start failed, 2 usage error.\n" },
	{ "run", cmd_run,
	  "run [-m MAP] [-o DIR] [--state-dir SDIR] [--user USER] [--host HOST]",
	  "Run the map's instances without systemd, in the foreground, until SIGTERM or\n"
	  "SIGINT. Check the map (any error: nothing starts), render it into DIR, bind\n"
	  "each instance's listening sockets (IP_FREEBIND) and start vhostmta-instance\n"
	  "-c DIR/NAME/instance.cf for each, as USER, with the sockets passed as systemd\n"
	  "passes them (LISTEN_FDS) and a NOTIFY_SOCKET of the supervisor's. The\n"
	  "supervisor keeps the sockets open for good: a restart refuses no connection.\n"
	  "  a crash        the instance is restarted after 0.1 s, doubling up to 30 s\n"
	  "                 while it keeps crashing (a minute up starts over)\n"
	  "  idle exit      (idle_exit_time) its next connection starts it again\n"
	  "  SIGHUP         read and render the map again; errors change nothing; new\n"
	  "                 instances start, instances whose addresses or port changed\n"
	  "                 restart, others that changed reload, removed ones stop;\n"
	  "                 unchanged instances are not touched\n"
	  "  SIGTERM/SIGINT stop every instance (SIGTERM: they drain; SIGKILL after\n"
	  "                 90 s), then exit 0; queued mail stays in SDIR/NAME\n"
	  "One log line per event on standard error; the instances' lines too.\n\n"
	  "  -m, --map MAP        the map (default " DEFAULT_MAP ")\n"
	  "  -o, --output DIR     where to render (default " RUN_ROOT_DIR " as\n"
	  "                       root, else $XDG_RUNTIME_DIR/vhostmta/instances)\n"
	  "  -s, --state-dir SDIR the queues, SDIR/NAME (default " RENDER_VHOSTMTA_STATE "\n"
	  "                       as root, else $XDG_STATE_HOME/vhostmta)\n"
	  "  -u, --user USER      the instances' user (default " RUN_DEFAULT_USER " if it exists,\n"
	  "                       else " RUN_FALLBACK_USER "; never root); not root: the caller\n"
	  "  -H, --host HOST      realize the instances of HOST (default: this machine's\n"
	  "                       host name, as hostname(1) prints it)\n\n"
	  "Exit status: 0 after SIGTERM or SIGINT, 1 it could not start, 2 usage error.\n" },
	{ "status", cmd_status, "status [-o DIR] [--json]",
	  "Ask the running `vhostmta run` of DIR (through DIR/" RUNCTL_NAME ") about its\n"
	  "instances, one row each: name, state (starting, running, stopping,\n"
	  "restarting after a crash, on-demand after an idle exit, failed), pid, uptime,\n"
	  "sessions and queued messages (as the instance last reported them), restarts\n"
	  "and the last error.\n\n"
	  "  -o, --output DIR  the directory run renders into (default as for run)\n"
	  "  -j, --json        a JSON object instead of the table\n\n"
	  "Exit status: 0, 1 no vhostmta run is running for DIR, 2 usage error.\n" },
	{ "help", cmd_help, "help [COMMAND]", "Show the help of vhostmta or of one command.\n" },
};

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void main_usage(FILE *f)
{
	fprintf(f,
		"usage: vhostmta [-v] COMMAND [OPTIONS]\n\n"
		"vhostmta runs one SMTP instance per address of a hosting server, each sending\n"
		"from its own address with its own EHLO name, as the map of domains to\n"
		"addresses says.\n\nCommands:\n");
	for (size_t i = 0; i < ARRAY_LEN(commands); i++)
		fprintf(f, "  %s\n", commands[i].usage);
	fprintf(f, "\n  -v, --verbose   more detail in the log\n"
		   "  -V, --version   print the version\n\n"
		   "'vhostmta COMMAND --help' describes one command; vhostmta(8) and\n"
		   "vhostmta-map(5) describe them all.\n");
}

static int cmd_help(int argc, char **argv)
{
	if (argc > 1) {
		const struct command *c = find_command(argv[1]);
		if (c == NULL) {
			fprintf(stderr, "vhostmta: no command '%s'\n", argv[1]);
			return 2;
		}
		show_help(c);
	}
	main_usage(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	int i = 1;

	log_init("vhostmta");
	/* Run by systemd through the link vhostmta-generator. */
	const char *base = strrchr(argv[0], '/');
	if (strcmp(base ? base + 1 : argv[0], GENERATOR_PROG) == 0)
		return generator_main(argc, argv, DEFAULT_INSTANCES);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
			log_set_verbose(log_verbose() + 1);
		} else if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
			printf("vhostmta %s\n", VERSION);
			return 0;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			main_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "vhostmta: unknown option '%s'\n", argv[i]);
			main_usage(stderr);
			return 2;
		}
	}
	if (i == argc) {
		main_usage(stderr);
		return 2;
	}
	const struct command *c = find_command(argv[i]);
	if (c == NULL) {
		fprintf(stderr, "vhostmta: unknown command '%s' (try 'vhostmta --help')\n", argv[i]);
		return 2;
	}
	return c->run(argc - i, argv + i);
}
