/* test_render.c: vhostmta render: every rendered instance.cf parses back
 * through the lib parser; unchanged files keep their mtime; instances gone
 * from the map lose their directory; foreign directories are kept. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cf.h"
#include "map.h"
#include "render.h"
#include "util.h"

static char tmpdir[256];

static const char *path_in(const char *rel)
{
	static char p[4][512];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, rel);
	return p[k];
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	struct buf b = BUF_INIT;
	char chunk[4096];
	size_t n;

	assert_non_null(f);
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	return buf_steal(&b);
}

static const char *example_map(void)
{
	static char p[512];
	const char *top = getenv("TOP");
	snprintf(p, sizeof p, "%s/templates/example-map.xml", top ? top : ".");
	return p;
}

/* render: the vhostmta backend into dir (relative to tmpdir). */
static bool render(const struct map *m, const char *dir, const char *host, struct render_stats *st)
{
	struct render_opts o = { path_in(dir), host, BACKEND_VHOSTMTA, NULL };
	bool ok = render_map(m, &o, st);
	render_stats_free(st);
	return ok;
}

static void load_ok(struct map *m, const char *path)
{
	struct diag d = DIAG_INIT;
	assert_true(map_load(m, path, &d));
	assert_int_equal(d.errors, 0);
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/vhostmta-render.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd);
}

/* parse_back: instance.cf through cf_parse_file + cf_finalize, no diagnostics. */
static void parse_back(struct cf *cf, const char *file)
{
	struct diag d = DIAG_INIT;
	cf_init(cf);
	assert_true(cf_parse_file(cf, file, &d));
	assert_true(cf_finalize(cf, file, &d));
	assert_int_equal(d.errors, 0);
	assert_int_equal(d.warnings, 0);
}

static void test_render_parses_back(void **state)
{
	struct map m;
	struct render_stats st;
	struct cf cf;
	char confdir[600], transport[700];

	load_ok(&m, example_map());
	assert_true(render(&m, "out", NULL, &st));
	assert_int_equal(st.instances, 3);
	assert_int_equal(st.written, 7); /* 3 x (instance.cf, transport) + host-addresses */
	assert_int_equal(st.unchanged, 0);

	static const struct {
		const char *name, *host, *addr;
	} want[] = {
		{ "alpha", "mail.alpha.test", "127.0.0.2" },
		{ "bravo", "mail.bravo.test", "127.0.0.3" },
		{ "charlie", "mail.charlie.test", "127.0.0.4" },
	};
	char real[512];
	assert_non_null(realpath(path_in("out"), real));
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		char file[600];
		snprintf(file, sizeof file, "%s/%s/instance.cf", real, want[i].name);
		parse_back(&cf, file);
		assert_string_equal(cf_str(&cf, P_instance_name), want[i].name);
		assert_string_equal(cf_str(&cf, P_myhostname), want[i].host);
		assert_string_equal(cf_str(&cf, P_inet_interfaces), want[i].addr);
		assert_string_equal(cf_str(&cf, P_smtp_bind_address), want[i].addr);
		assert_string_equal(cf_str(&cf, P_mynetworks), "127.0.0.0/8 [::1]/128");
		assert_int_equal(cf_num(&cf, P_smtpd_listen_port), 2525);
		snprintf(confdir, sizeof confdir, "%s/%s", real, want[i].name);
		assert_string_equal(cf_str(&cf, P_config_directory), confdir);
		snprintf(transport, sizeof transport, "%s/transport", confdir);
		assert_string_equal(cf_str(&cf, P_transport_table), transport);
		snprintf(transport, sizeof transport, "%s/host-addresses", real);
		assert_string_equal(cf_str(&cf, P_sibling_table), transport);
		assert_int_equal(cf_num(&cf, P_message_size_limit), i == 1 ? 20480000 : 10240000);
		snprintf(transport, sizeof transport, "%s/%s", RENDER_VHOSTMTA_STATE, want[i].name);
		assert_string_equal(cf_str(&cf, P_queue_directory), transport);
		cf_free(&cf);
	}
	char *t = read_file(path_in("out/alpha/transport"));
	assert_non_null(strstr(t, "\nalpha.test\tsmtp:[127.0.0.100]:2526\n"));
	assert_non_null(strstr(t, "\n# alpha-shop.test: outbound only\n"));
	free(t);
	t = read_file(path_in("out/bravo/transport"));
	assert_non_null(strstr(t, "\nbravo.test\tlmtp:[127.0.0.100]:2424\n"));
	free(t);
	t = read_file(path_in("out/host-addresses"));
	assert_non_null(strstr(t, "\n127.0.0.2\talpha\n127.0.0.3\tbravo\n127.0.0.4\tcharlie\n"));
	free(t);
	map_free(&m);
}

/* age: set a file's mtime far in the past, so a rewrite shows. */
static void age(const char *path)
{
	struct timespec ts[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static time_t mtime(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mtime;
}

static void test_rerender_writes_nothing(void **state)
{
	struct map m;
	struct render_stats st;
	static const char *const files[] = { "out2/alpha/instance.cf", "out2/alpha/transport",
					     "out2/bravo/instance.cf", "out2/charlie/transport",
					     "out2/host-addresses" };

	load_ok(&m, example_map());
	assert_true(render(&m, "out2", NULL, &st));
	for (size_t i = 0; i < ARRAY_LEN(files); i++)
		age(path_in(files[i]));
	assert_true(render(&m, "out2", NULL, &st));
	assert_int_equal(st.written, 0);
	assert_int_equal(st.unchanged, 7);
	assert_int_equal(st.removed, 0);
	for (size_t i = 0; i < ARRAY_LEN(files); i++)
		assert_int_equal(mtime(path_in(files[i])), 1000000000);
	assert_int_equal(access(path_in("out2/alpha/.instance.cf.tmp"), F_OK), -1);
	map_free(&m);
}

static const char changed_map[] =
	"<map xmlns=\"urn:vhostmta:map:1\">\n"
	"  <defaults>\n"
	"    <param name=\"mynetworks\" value=\"127.0.0.0/8 [::1]/128\"/>\n"
	"    <param name=\"smtpd_listen_port\" value=\"2525\"/>\n"
	"  </defaults>\n"
	"  <instance name=\"alpha\" myhostname=\"mail.alpha.test\">\n"
	"    <address>127.0.0.2</address>\n"
	"    <domain name=\"alpha.test\" deliver=\"smtp:[127.0.0.100]:2526\"/>\n"
	"    <domain name=\"alpha-shop.test\"/>\n"
	"    <param name=\"smtp_bind_address\" value=\"127.0.0.2\"/>\n"
	"  </instance>\n"
	"  <instance name=\"bravo\" myhostname=\"mail.bravo.test\">\n"
	"    <address>127.0.0.3</address>\n"
	"    <domain name=\"bravo.test\" deliver=\"lmtp:[127.0.0.100]:2424\"/>\n"
	"    <param name=\"smtp_bind_address\" value=\"127.0.0.3\"/>\n"
	"    <param name=\"message_size_limit\" value=\"30000000\"/>\n"
	"  </instance>\n"
	"</map>\n";

static void test_changed_map(void **state)
{
	struct map m;
	struct render_stats st;

	/* Same map text but at another path would change every header line:
	 * copy the example map next to the changed one and render both from
	 * one path, as an operator editing the map in place does. */
	char *orig = read_file(example_map());
	write_file(path_in("map.xml"), orig);
	free(orig);
	load_ok(&m, path_in("map.xml"));
	assert_true(render(&m, "out3", NULL, &st));
	map_free(&m);
	assert_int_equal(mkdir(path_in("out3/foreign"), 0755), 0);
	write_file(path_in("out3/foreign/notes"), "not ours\n");
	age(path_in("out3/alpha/instance.cf"));

	write_file(path_in("map.xml"), changed_map);
	load_ok(&m, path_in("map.xml"));
	assert_true(render(&m, "out3", NULL, &st));
	assert_int_equal(st.instances, 2);
	assert_int_equal(st.removed, 1);
	/* bravo's instance.cf and the host's address table changed. */
	assert_int_equal(st.written, 2);
	assert_int_equal(mtime(path_in("out3/alpha/instance.cf")), 1000000000);
	assert_int_equal(access(path_in("out3/charlie"), F_OK), -1);
	assert_int_equal(access(path_in("out3/foreign/notes"), F_OK), 0);
	char *t = read_file(path_in("out3/bravo/instance.cf"));
	assert_non_null(strstr(t, "\nmessage_size_limit = 30000000\n"));
	free(t);
	t = read_file(path_in("out3/host-addresses"));
	assert_null(strstr(t, "charlie"));
	free(t);
	map_free(&m);
}

static const char hosts_map[] =
	"<map xmlns=\"urn:vhostmta:map:1\">\n"
	"  <instance name=\"a\" myhostname=\"mail.a.test\" host=\"mx1\"><address>192.0.2.1</address></instance>\n"
	"  <instance name=\"b\" myhostname=\"mail.b.test\" host=\"mx2\"><address>192.0.2.2</address></instance>\n"
	"  <instance name=\"c\" myhostname=\"mail.c.test\"><address>192.0.2.3</address>"
	"<address>2001:db8::3</address></instance>\n"
	"</map>\n";

static void test_host_filter(void **state)
{
	struct map m;
	struct render_stats st;
	struct cf cf;
	char real[512], file[600];

	write_file(path_in("hosts.xml"), hosts_map);
	load_ok(&m, path_in("hosts.xml"));
	struct render_opts so = { path_in("out4s"), NULL, BACKEND_VHOSTMTA, "/srv/q" };
	assert_true(render_map(&m, &so, &st));
	render_stats_free(&st);
	char *q = read_file(path_in("out4s/a/instance.cf"));
	assert_non_null(strstr(q, "\nqueue_directory = /srv/q/a\n"));
	free(q);
	assert_true(render(&m, "out4", "MX1", &st));
	assert_int_equal(st.instances, 2);
	assert_int_equal(access(path_in("out4/a/instance.cf"), F_OK), 0);
	assert_int_equal(access(path_in("out4/b"), F_OK), -1);
	char *t = read_file(path_in("out4/host-addresses"));
	assert_non_null(strstr(t, "\n192.0.2.1\ta\n192.0.2.3\tc\n2001:db8::3\tc\n"));
	assert_null(strstr(t, "192.0.2.2"));
	free(t);
	assert_non_null(realpath(path_in("out4"), real));
	snprintf(file, sizeof file, "%s/c/instance.cf", real);
	parse_back(&cf, file);
	assert_string_equal(cf_str(&cf, P_inet_interfaces), "192.0.2.3 2001:db8::3");
	cf_free(&cf);
	/* Rendering for the other host removes a, adds b. */
	assert_true(render(&m, "out4", "mx2", &st));
	assert_int_equal(st.removed, 1);
	assert_int_equal(access(path_in("out4/a"), F_OK), -1);
	assert_int_equal(access(path_in("out4/b/instance.cf"), F_OK), 0);
	map_free(&m);
}

/* A long list value folds onto continuation lines and reads back whole. */
static void test_long_value_round_trip(void **state)
{
	struct buf map = BUF_INIT, nets = BUF_INIT;
	struct map m;
	struct render_stats st;
	struct cf cf;
	char real[512], file[600];

	for (int i = 0; i < 60; i++)
		buf_printf(&nets, "%s10.%d.0.0/16", i ? " " : "", i);
	buf_printf(&map,
		   "<map xmlns=\"urn:vhostmta:map:1\">\n"
		   "  <instance name=\"long\" myhostname=\"mail.long.test\">\n"
		   "    <address>192.0.2.9</address>\n"
		   "    <param name=\"mynetworks\" value=\"%s\"/>\n"
		   "  </instance>\n</map>\n", buf_cstr(&nets));
	write_file(path_in("long.xml"), buf_cstr(&map));
	load_ok(&m, path_in("long.xml"));
	assert_true(render(&m, "out5", NULL, &st));
	assert_non_null(realpath(path_in("out5"), real));
	snprintf(file, sizeof file, "%s/long/instance.cf", real);
	char *t = read_file(file);
	assert_non_null(strstr(t, "\n    10.")); /* folded */
	free(t);
	parse_back(&cf, file);
	assert_string_equal(cf_str(&cf, P_mynetworks), buf_cstr(&nets));
	cf_free(&cf);
	map_free(&m);
	buf_free(&map);
	buf_free(&nets);
}

/* changes: render map text with a backend and return "name:change ..." */
static char *changes(const char *maptext, const char *dir, enum backend b)
{
	struct map m;
	struct render_stats st;
	struct buf out = BUF_INIT;
	struct render_opts o = { path_in(dir), NULL, b, path_in("state") };

	write_file(path_in("changes.xml"), maptext);
	load_ok(&m, path_in("changes.xml"));
	assert_true(render_map(&m, &o, &st));
	for (size_t i = 0; i < st.nitems; i++)
		buf_printf(&out, "%s%s:%s", i ? " " : "", st.items[i].name,
			   render_change_name(st.items[i].change));
	render_stats_free(&st);
	map_free(&m);
	return buf_steal(&out);
}

#define INST(name, addr, extra)                                                    \
	"  <instance name=\"" name "\" myhostname=\"mail." name ".test\">\n"       \
	"    <address>" addr "</address>\n"                                      \
	"    <domain name=\"" name ".test\" deliver=\"smtp:[192.0.2.100]:25\"/>\n" \
	extra "  </instance>\n"

static void expect_changes(const char *maptext, const char *dir, enum backend b,
			   const char *want)
{
	char *got = changes(maptext, dir, b);
	assert_string_equal(got, want);
	free(got);
}

/* Both backends: a new instance starts, a parameter change reloads, an
 * address or port change restarts, a vanished instance is removed, and
 * nothing else is touched. */
static void test_change_kinds(void **state)
{
	static const char *const dirs[] = { "chg-v", "chg-p" };
	const char *open_ = "<map xmlns=\"urn:vhostmta:map:1\">\n";
	struct buf a = BUF_INIT;

	for (int k = 0; k < 2; k++) {
		enum backend b = k ? BACKEND_POSTFIX : BACKEND_VHOSTMTA;
		buf_reset(&a);
		buf_printf(&a, "%s%s%s%s</map>\n", open_, INST("a", "192.0.2.1", ""),
			   INST("b", "192.0.2.2", ""), INST("c", "192.0.2.3", ""));
		expect_changes(buf_cstr(&a), dirs[k], b, "a:new b:new c:new");
		expect_changes(buf_cstr(&a), dirs[k], b, "");

		buf_reset(&a);
		buf_printf(&a, "%s%s%s%s</map>\n", open_, INST("a", "192.0.2.1", ""),
			   INST("b", "192.0.2.2", "    <param name=\"message_size_limit\" value=\"5000000\"/>\n"),
			   INST("c", "192.0.2.33", ""));
		expect_changes(buf_cstr(&a), dirs[k], b, "b:reload c:restart (listeners changed)");

		buf_reset(&a);
		buf_printf(&a, "%s<defaults><param name=\"smtpd_listen_port\" value=\"2525\"/></defaults>\n%s%s</map>\n",
			   open_, INST("b", "192.0.2.2", "    <param name=\"message_size_limit\" value=\"5000000\"/>\n"),
			   INST("c", "192.0.2.33", ""));
		expect_changes(buf_cstr(&a), dirs[k], b,
			       "b:restart (listeners changed) c:restart (listeners changed) a:removed");
	}
	buf_free(&a);
}

/* The same map read from another path changes only the header comments:
 * the files are rewritten, and no instance needs anything. */
static void test_comment_only_change(void **state)
{
	const char *text = "<map xmlns=\"urn:vhostmta:map:1\">\n"
			   INST("a", "192.0.2.1", "") "</map>\n";
	struct map m;
	struct render_stats st;

	for (int k = 0; k < 2; k++) {
		enum backend b = k ? BACKEND_POSTFIX : BACKEND_VHOSTMTA;
		const char *dir = k ? "cmt-p" : "cmt-v";
		expect_changes(text, dir, b, "a:new");
		write_file(path_in("moved.xml"), text);
		load_ok(&m, path_in("moved.xml"));
		struct render_opts o = { path_in(dir), NULL, b, path_in("state") };
		assert_true(render_map(&m, &o, &st));
		assert_int_equal(st.nitems, 0);
		assert_true(st.written >= 2);
		render_stats_free(&st);
		map_free(&m);
	}
}

static void test_postfix_files(void **state)
{
	static const char map_text[] =
		"<map xmlns=\"urn:vhostmta:map:1\">\n"
		"  <defaults backend=\"postfix\">\n"
		"    <param name=\"mynetworks\" value=\"127.0.0.0/8\"/>\n"
		"    <param name=\"smtpd_listen_port\" value=\"2525\"/>\n"
		"    <param name=\"idle_exit_time\" value=\"60s\"/>\n"
		"  </defaults>\n"
		"  <instance name=\"a\" myhostname=\"mail.a.test\">\n"
		"    <address>192.0.2.1</address>\n"
		"    <address>2001:db8::1</address>\n"
		"    <domain name=\"a.test\" deliver=\"lmtp:unix:/run/dovecot/lmtp\"/>\n"
		"    <domain name=\"b.test\"/>\n"
		"    <domain name=\"c.test\" deliver=\"smtp:[192.0.2.9]:2526\"/>\n"
		"    <param name=\"inet_protocols\" value=\"ipv4\"/>\n"
		"    <param name=\"smtp_bind_address\" value=\"192.0.2.1\"/>\n"
		"    <param name=\"smtp_helo_name\" value=\"out.a.test\"/>\n"
		"  </instance>\n"
		"</map>\n";
	struct map m;
	struct render_stats st;
	char real[512], want[700];

	write_file(path_in("pf.xml"), map_text);
	load_ok(&m, path_in("pf.xml"));
	assert_int_equal(m.backend, BACKEND_POSTFIX);
	struct render_opts o = { path_in("out6"), NULL, m.backend, path_in("pfstate") };
	assert_true(render_map(&m, &o, &st));
	assert_int_equal(st.written, 3);
	render_stats_free(&st);
	assert_non_null(realpath(path_in("out6"), real));

	char *t = read_file(path_in("out6/a/main.cf"));
	assert_non_null(strstr(t, "\nmyhostname = mail.a.test\n"));
	assert_non_null(strstr(t, "\ninet_interfaces = 192.0.2.1 2001:db8::1\n"));
	assert_non_null(strstr(t, "\nrelay_domains = a.test c.test\n"));
	assert_non_null(strstr(t, "\nmulti_instance_name = vhostmta-a\n"));
	snprintf(want, sizeof want, "\nconfig_directory = %s/a\n", real);
	assert_non_null(strstr(t, want));
	snprintf(want, sizeof want, "\nqueue_directory = %s/a/queue\n", path_in("pfstate"));
	assert_non_null(strstr(t, want));
	/* The map's inet_protocols replaces the template's line, once. */
	assert_non_null(strstr(t, "\ninet_protocols = ipv4\n"));
	assert_null(strstr(t, "inet_protocols = all"));
	assert_null(strstr(strstr(t, "inet_protocols") + 1, "inet_protocols"));
	/* Postfix's lmtp reads only lmtp_*: the identity is copied literally. */
	assert_non_null(strstr(t, "\nlmtp_bind_address = 192.0.2.1\nlmtp_lhlo_name = out.a.test\n"));
	assert_null(strstr(t, "lmtp_bind_address6"));
	assert_null(strstr(t, "$smtp_"));
	/* vhostmta's own parameters never reach Postfix. */
	assert_null(strstr(t, "smtpd_listen_port"));
	assert_null(strstr(t, "idle_exit_time"));
	assert_non_null(strstr(t, "\nmynetworks = 127.0.0.0/8\n"));
	free(t);
	t = read_file(path_in("out6/a/master.cf"));
	assert_non_null(strstr(t, "\n2525          inet  n"));
	assert_null(strstr(t, "\nsmtp          inet"));
	free(t);
	t = read_file(path_in("out6/a/transport"));
	assert_non_null(strstr(t, "\na.test\tlmtp:unix:/run/dovecot/lmtp\n"));
	assert_non_null(strstr(t, "\nc.test\tsmtp:[192.0.2.9]:2526\n"));
	assert_non_null(strstr(t, "\n# b.test: outbound only\n"));
	free(t);
	struct stat sb;
	assert_int_equal(stat(path_in("pfstate/a/queue"), &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	/* No host address table for Postfix. */
	assert_int_equal(access(path_in("out6/host-addresses"), F_OK), -1);
	map_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_parses_back),
		cmocka_unit_test(test_rerender_writes_nothing),
		cmocka_unit_test(test_changed_map),
		cmocka_unit_test(test_host_filter),
		cmocka_unit_test(test_long_value_round_trip),
		cmocka_unit_test(test_change_kinds),
		cmocka_unit_test(test_comment_only_change),
		cmocka_unit_test(test_postfix_files),
	};
	return cmocka_run_group_tests_name("render", tests, setup, teardown);
}
