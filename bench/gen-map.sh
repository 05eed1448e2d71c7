#!/bin/sh
# gen-map.sh N: a valid map of N instances (one IPv4 address each, every
# second one also an IPv6 address) and 2N domains, on standard output.
set -eu
n=${1:-10000}
awk -v n="$n" 'BEGIN {
	print "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
	print "<map xmlns=\"urn:vhostmta:map:1\">"
	print "  <defaults deliver=\"lmtp:unix:/run/dovecot/lmtp\">"
	print "    <param name=\"mynetworks\" value=\"127.0.0.0/8 [::1]/128\"/>"
	print "    <param name=\"message_size_limit\" value=\"20480000\"/>"
	print "  </defaults>"
	for (i = 1; i <= n; i++) {
		a = int(i / 65536); b = int(i / 256) % 256; c = i % 256
		printf "  <instance name=\"c%d\" myhostname=\"mail.customer%d.test\">\n", i, i
		printf "    <address>10.%d.%d.%d</address>\n", a, b, c
		if (i % 2 == 0)
			printf "    <address>[2001:db8::%x]</address>\n", i
		printf "    <domain name=\"customer%d.test\"/>\n", i
		printf "    <domain name=\"shop.customer%d.test\" deliver=\"smtp:[192.0.2.%d]:25\"/>\n", i, i % 250 + 1
		if (i % 10 == 0)
			print "    <param name=\"smtpd_recipient_limit\" value=\"500\"/>"
		print "  </instance>"
	}
	print "</map>"
}'
