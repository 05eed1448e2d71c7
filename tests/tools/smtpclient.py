#!/usr/bin/env python3
"""smtpclient.py: raw-socket SMTP clients for tests/integration/instance.sh.

Each subcommand talks to a running vhostmta-instance the way a hostile or
careless client would, and prints one line per check: "ok DESCRIPTION" or
"not ok DESCRIPTION" followed by "  | detail" lines; any other line is a
note. The shell script counts the lines (tests/lib.sh's ok/bad). Exit
status 0 unless the helper itself broke (bad usage, a crash).

    smtpclient.py banner HOST PORT            prints the greeting or "refused"
    smtpclient.py rcpt HOST PORT SRC ADDRESS  prints the reply to RCPT TO:ADDRESS
    smtpclient.py smuggle HOST PORT QDIR      fake end-of-data sequences
    smtpclient.py datapipe HOST PORT QDIR     content in the DATA segment
    smtpclient.py badinput HOST PORT QDIR PID PROBE-CMD
    smtpclient.py inject HOST PORT RECORD STOPFILE CONNS
    smtpclient.py verify QDIR RECORD
    smtpclient.py incomplete QDIR             incoming/ files without END
    smtpclient.py tarpit HOST PORT PROBE-CMD  replies slowed after smtpd_soft_error_limit

PROBE-CMD is a shell command (a well-behaved swaks transaction) run while a
bad client is connected: its output must say "queued as".
"""
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time

BARE_EOL = ("550 5.5.2 Error: bare <CR> or <LF> in message content "
            "(SMTP smuggling defense): message discarded")
IMPROPER = "554 5.5.0 Error: improper use of SMTP command pipelining"
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})$")
HOSTED = "user@alpha.test"


# ---- reporting -------------------------------------------------------------

def check(cond, desc, detail=None):
    if cond:
        print("ok " + desc)
    else:
        print("not ok " + desc)
        if detail is not None:
            if not isinstance(detail, (list, tuple)):
                detail = str(detail).splitlines()
            for d in list(detail)[:40]:
                print("  | " + str(d))
    sys.stdout.flush()
    return cond


def note(text):
    print("note: " + text)
    sys.stdout.flush()


# ---- the connection --------------------------------------------------------

class Closed(Exception):
    pass


class Conn:
    """One SMTP connection; replies read line by line."""

    def __init__(self, host, port, timeout=10.0, src=None):
        self.sock = socket.create_connection(
            (host, int(port)), timeout=timeout,
            source_address=(src, 0) if src else None)
        self.buf = b""
        self.closed = False
        self.timeout = timeout

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            d = b""
        if not d:
            self.closed = True
            raise Closed("connection closed by the server")
        self.buf += d

    def line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            self._fill(deadline)
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.rstrip(b"\r").decode("latin-1")

    def reply(self, timeout=None):
        """One reply: its lines (a multi-line reply ends at "NNN ")."""
        lines = []
        while True:
            ln = self.line(timeout)
            lines.append(ln)
            if len(ln) < 4 or ln[3] != "-":
                return lines

    def cmd(self, text, timeout=None):
        self.send(text + "\r\n")
        return self.reply(timeout)

    def collect(self, quiet=0.4, limit=10.0):
        """Every line until the server is quiet for `quiet` s, closes, or
        `limit` s pass; returns the lines (self.closed tells a close)."""
        lines = []
        end = time.monotonic() + limit
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                lines.append(raw.rstrip(b"\r").decode("latin-1"))
            if self.closed:
                break
            try:
                self._fill(min(end, time.monotonic() + quiet))
            except socket.timeout:
                break
            except Closed:
                pass
        if self.buf:
            lines.append("<partial> " + self.buf.decode("latin-1"))
            self.buf = b""
        return lines

    def wait_close(self, limit=5.0):
        """Lines until the server closes (or limit): (lines, closed)."""
        lines = []
        end = time.monotonic() + limit
        while not self.closed and time.monotonic() < end:
            lines += self.collect(quiet=end - time.monotonic(), limit=end - time.monotonic())
        return lines, self.closed

    def pending(self, wait=0.2):
        """Bytes the server sent without being asked (after `wait` s)."""
        time.sleep(wait)
        self.sock.setblocking(False)
        try:
            d = self.sock.recv(65536)
        except BlockingIOError:
            d = None
        except (ConnectionResetError, BrokenPipeError):
            d = b""
        finally:
            self.sock.setblocking(True)
        if d == b"":
            self.closed = True
        return d

    def close(self, reset=False):
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def greeted(host, port, ehlo=True, **kw):
    c = Conn(host, port, **kw)
    g = c.reply()
    if not g[0].startswith("220 "):
        raise RuntimeError("greeting: %r" % g)
    if ehlo:
        r = c.cmd("EHLO client.test")
        if not r[-1].startswith("250 "):
            raise RuntimeError("EHLO: %r" % r)
    return c


def want(c, text, expected, desc):
    """Send one command; its reply must be exactly `expected` (a line)."""
    try:
        got = c.cmd(text)
    except Exception as e:  # noqa: BLE001 - report whatever broke
        return check(False, desc, "%s -> %r" % (text, e))
    return check(got == [expected], desc, "%r -> %r, expected %r" % (text, got, expected))


def files(qdir, sub):
    try:
        return sorted(n for n in os.listdir(os.path.join(qdir, sub)) if not n.startswith("."))
    except FileNotFoundError:
        return []


def queued(qdir):
    """The ids of the messages in the queue: incoming/ (new) and deferred/
    (after a failed delivery attempt: the instance delivers what it
    queues, and the tests' destinations are down). A queue file holds one
    message or several (one group commit); each message's ID record gives
    its id, the file name stands in for a first message without one. A
    file that moves from incoming/ to deferred/ during the scan makes it
    start again."""
    for _ in range(10):
        ids = queued_once(qdir)
        if ids is not None:
            return sorted(set(ids))
        time.sleep(0.05)
    return sorted(set(queued_once(qdir, strict=False)))


def queued_once(qdir, strict=True):
    ids = []
    for sub, name in [(d, n) for d in ("incoming", "deferred") for n in files(qdir, d)]:
        try:
            with open(os.path.join(qdir, sub, name), "rb") as f:
                data = f.read()
        except OSError:
            if strict:
                return None
            continue
        i, first, has_id = 0, True, False
        while i + 5 <= len(data):
            t, n = data[i], int.from_bytes(data[i + 1:i + 5], "big")
            payload = data[i + 5:i + 5 + n]
            if t == ord("V"):
                has_id = False
            elif t == ord("I"):
                ids.append(payload.decode("ascii", "replace"))
                has_id = True
            elif t == ord("E"):
                if not has_id and first:
                    ids.append(name)
                first = False
            i += 5 + n
    return sorted(ids)


def await_empty(qdir, sub, seconds=3.0):
    end = time.monotonic() + seconds
    while files(qdir, sub) and time.monotonic() < end:
        time.sleep(0.05)
    return files(qdir, sub)


def probe(cmd, desc):
    """A well-behaved transaction (swaks) while something else goes on."""
    try:
        r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
        out = r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        out = "timeout: %s" % e
    m = re.search(r"250 2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})", out)
    check(m is not None, "probe " + desc + ": a well-behaved client is queued",
          out.splitlines()[-15:])
    return 1 if m else 0


def vm(pid, key):
    """VmRSS/VmHWM of pid in kB, or None."""
    try:
        with open("/proc/%s/status" % pid) as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except OSError:
        return None
    return None


# ---- subcommands -----------------------------------------------------------

def cmd_banner(host, port, src=None):
    try:
        c = Conn(host, port, timeout=5, src=src)
    except ConnectionRefusedError:
        print("refused")
        return 3
    except OSError as e:
        print("error: %s" % e)
        return 1
    try:
        print(c.line())
    except (Closed, socket.timeout) as e:
        print("no greeting: %s" % e)
        return 2
    c.cmd("QUIT") if not c.closed else None
    return 0


def cmd_rcpt(host, port, src, address):
    """The reply to RCPT TO:ADDRESS (sent verbatim) from src."""
    c = greeted(host, port, src=src)
    r = c.cmd("MAIL FROM:<sender@b.test>")
    if r != ["250 2.1.0 Ok"]:
        print("MAIL: %r" % r)
        return 1
    print("\n".join(c.cmd("RCPT TO:" + address)))
    c.cmd("QUIT")
    return 0


def open_data(host, port):
    c = greeted(host, port)
    for text, exp in (("MAIL FROM:<a@b.test>", "250 2.1.0 Ok"),
                      ("RCPT TO:<%s>" % HOSTED, "250 2.1.5 Ok"),
                      ("DATA", "354 End data with <CR><LF>.<CR><LF>")):
        r = c.cmd(text)
        if r != [exp]:
            raise RuntimeError("%s -> %r" % (text, r))
    return c


FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n.\rX",
             b"\r\n\n.\r\n"]


def cmd_smuggle(host, port, qdir):
    before = queued(qdir)
    for fake in FAKE_ENDS:
        for split in (False, True):
            desc = "smuggling %r%s" % (fake.decode(), " (fake end in its own segment)" if split else "")
            first = b"Subject: one\r\n\r\nbody" + fake
            rest = (b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<victim@alpha.test>\r\nDATA\r\n"
                    b"Subject: two\r\n\r\nsmuggled\r\n.\r\n")
            try:
                c = open_data(host, port)
                if split:
                    c.send(first)
                    time.sleep(0.05)
                    c.send(rest)
                else:
                    c.send(first + rest)
                got = c.collect(quiet=0.4)
                if not c.closed:
                    c.send("QUIT\r\n")
                    more, _ = c.wait_close(5)
                    got += more
                c.close()
            except Exception as e:  # noqa: BLE001
                check(False, desc, repr(e))
                continue
            check(got == [BARE_EOL, "221 2.0.0 Bye"],
                  desc + ": exactly one 550, nothing queued, the session goes on",
                  ["replies after 354: %r" % got])
    left = await_empty(qdir, "tmp")
    check(left == [], "smuggling: queue tmp/ is empty", left)
    after = queued(qdir)
    check(after == before, "smuggling: nothing reached incoming/", sorted(set(after) - set(before)))
    return 0


def cmd_datapipe(host, port, qdir):
    before = queued(qdir)
    desc = "content in the same segment as DATA"
    try:
        c = greeted(host, port)
        c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<%s>\r\n" % HOSTED)
        got = c.reply() + c.reply()
        c.send("DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
        rest, closed = c.wait_close(5)
        c.close()
    except Exception as e:  # noqa: BLE001
        check(False, desc, repr(e))
        return 0
    check(got == ["250 2.1.0 Ok", "250 2.1.5 Ok"], desc + ": MAIL and RCPT pipelined after EHLO", got)
    check(rest == [IMPROPER], desc + ": 554 improper pipelining (and no 354)", rest)
    check(closed, desc + ": the server closes the connection")
    time.sleep(0.1)
    check(queued(qdir) == before, desc + ": nothing queued")
    check(await_empty(qdir, "tmp") == [], desc + ": tmp/ is empty")
    return 0


def case(desc, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        check(False, desc, repr(e))


def cmd_badinput(host, port, qdir, pid, probe_cmd):
    ours = [0]  # messages this run queued (probes and controls)
    start = queued(qdir)

    # An overlong command: 100 KB without CRLF, then CRLF: one 500, the
    # connection stays usable; a probe while the line is pending.
    def overlong():
        c = greeted(host, port)
        c.send(b"A" * (100 * 1024))
        early = c.pending(0.2)
        check(early is None, "overlong command: no reply before its CRLF", repr(early)[:200])
        ours[0] += probe(probe_cmd, "during a pending 100 KB line")
        c.send(b"\r\n")
        got = c.collect(quiet=0.5)
        check(got == ["500 5.5.2 Error: line too long"], "overlong command: exactly one 500 line too long", got)
        want(c, "NOOP", "250 2.0.0 Ok", "overlong command: the connection is still usable")
        c.close()
    case("overlong command", overlong)

    def nul():
        c = greeted(host, port)
        c.send(b"NO\x00OP\r\n")
        check(c.reply() == ["500 5.5.2 Error: NUL byte in command"], "NUL byte in a command: 500")
        c.send(b"MAIL FROM:<a\x00b@b.test>\r\n")
        got = c.reply()
        check(got == ["500 5.5.2 Error: NUL byte in command"], "NUL byte in a MAIL argument: 500", got)
        want(c, "NOOP", "250 2.0.0 Ok", "NUL byte: the connection is still usable")
        c.close()
    case("NUL byte", nul)

    # 5 MB without CRLF: memory stays bounded.
    def bigline():
        c = greeted(host, port)
        rss0 = vm(pid, "VmRSS")
        try:  # reset the peak (VmHWM) to the current RSS
            with open("/proc/%s/clear_refs" % pid, "w") as f:
                f.write("5")
            peak_ok = True
        except OSError:
            peak_ok = False
        block = b"B" * 65536
        for _ in range(80):  # 80 * 64 KB = 5 MB
            c.send(block)
        ours[0] += probe(probe_cmd, "during a 5 MB line")
        c.send(b"\r\n")
        got = c.collect(quiet=0.5, limit=30)
        rss1, hwm = vm(pid, "VmRSS"), vm(pid, "VmHWM")
        check(got == ["500 5.5.2 Error: line too long"], "5 MB without CRLF: exactly one 500 line too long", got)
        want(c, "NOOP", "250 2.0.0 Ok", "5 MB line: the connection is still usable")
        c.close()
        if rss0 is None or rss1 is None:
            check(False, "5 MB line: VmRSS of pid %s readable" % pid)
            return
        grow = rss1 - rss0
        note("5 MB line: VmRSS %d kB -> %d kB (%+d kB), peak %s kB" % (rss0, rss1, grow, hwm))
        check(grow < 20 * 1024, "5 MB line: VmRSS growth < 20 MB (%d kB)" % grow)
        if peak_ok and hwm is not None:
            check(hwm - rss0 < 20 * 1024, "5 MB line: peak RSS growth < 20 MB (%d kB)" % (hwm - rss0))
    case("5 MB line", bigline)

    # 10,000 RCPTs pipelined: every reply comes back, from the 1001st on 452.
    def rcpts():
        c = greeted(host, port)
        n = 10000
        lines = []
        err = []

        def reader():
            try:
                while len(lines) < n + 1:
                    lines.append(c.line(timeout=60))
            except Exception as e:  # noqa: BLE001
                err.append(repr(e))
        t = threading.Thread(target=reader)
        t0 = time.monotonic()
        t.start()
        payload = "MAIL FROM:<a@b.test>\r\n" + "".join(
            "RCPT TO:<u%d@alpha.test>\r\n" % i for i in range(n))
        c.sock.sendall(payload.encode())
        t.join(90)
        dt = time.monotonic() - t0
        check(len(lines) == n + 1, "10,000 pipelined RCPTs: %d replies of %d" % (len(lines), n + 1),
              err + lines[-3:])
        if len(lines) == n + 1:
            check(lines[0] == "250 2.1.0 Ok", "10,000 RCPTs: MAIL accepted", lines[:1])
            ok = [i for i, ln in enumerate(lines[1:]) if ln == "250 2.1.5 Ok"]
            full = [i for i, ln in enumerate(lines[1:]) if ln == "452 4.5.3 Error: too many recipients"]
            check(ok == list(range(1000)), "10,000 RCPTs: the first 1000 accepted",
                  "accepted %d, first other reply: %r" % (len(ok), next((ln for ln in lines[1:] if ln != "250 2.1.5 Ok"), None)))
            check(full == list(range(1000, n)), "10,000 RCPTs: the 1001st and later get 452",
                  "%d of %d got 452; reply 1001: %r" % (len(full), n - 1000, lines[1001]))
        note("10,000 RCPTs: replies in %.2f s" % dt)
        want(c, "RSET", "250 2.0.0 Ok", "10,000 RCPTs: RSET afterwards")
        want(c, "QUIT", "221 2.0.0 Bye", "10,000 RCPTs: QUIT afterwards")
        c.close()
    case("10,000 RCPTs", rcpts)

    # Commands out of order, then a proper transaction in the same session.
    def order():
        c = greeted(host, port, ehlo=False)
        want(c, "RCPT TO:<%s>" % HOSTED, "503 5.5.1 Error: need MAIL command", "order: RCPT before MAIL (no EHLO)")
        want(c, "DATA", "503 5.5.1 Error: need RCPT command", "order: DATA first")
        want(c, "EHLO", "501 5.5.4 Syntax: EHLO hostname", "order: EHLO without a name")
        c.cmd("EHLO client.test")
        want(c, "RCPT TO:<%s>" % HOSTED, "503 5.5.1 Error: need MAIL command", "order: RCPT before MAIL")
        want(c, "MAIL FROM:<a@b.test>", "250 2.1.0 Ok", "order: MAIL")
        want(c, "MAIL FROM:<a@b.test>", "503 5.5.1 Error: nested MAIL command", "order: nested MAIL")
        want(c, "DATA", "554 5.5.1 Error: no valid recipients", "order: DATA without RCPT")
        want(c, "BDAT 10 LAST", "502 5.5.1 Error: command not implemented", "order: BDAT")
        want(c, "FOO bar", "502 5.5.2 Error: command not recognized", "order: unknown command")
        want(c, "RCPT TO:<%s>" % HOSTED, "250 2.1.5 Ok", "order: RCPT after the errors")
        want(c, "DATA", "354 End data with <CR><LF>.<CR><LF>", "order: DATA")
        c.send("Subject: order\r\n\r\nbody\r\n.\r\n")
        got = c.reply()
        if check(len(got) == 1 and QUEUED.match(got[0]) is not None,
                 "order: the transaction after the errors is queued", got):
            ours[0] += 1
        want(c, "QUIT", "221 2.0.0 Bye", "order: QUIT")
        c.close()
    case("commands out of order", order)

    # Improper pipelining: each case ends with 554 and a close.
    def improper(desc, opener, burst):
        def run():
            c = greeted(host, port, ehlo=False)
            if opener:
                c.cmd(opener)
            c.send(burst)
            got, closed = c.wait_close(5)
            c.close()
            check(got == [IMPROPER], desc + ": 554 improper pipelining", got)
            check(closed, desc + ": the server closes the connection")
        case(desc, run)
    improper("pipelining before any HELO", None,
             "MAIL FROM:<a@b.test>\r\nRCPT TO:<%s>\r\n" % HOSTED)
    improper("pipelining after HELO (no PIPELINING offered)", "HELO client.test",
             "MAIL FROM:<a@b.test>\r\nRCPT TO:<%s>\r\n" % HOSTED)
    improper("input after EHLO in the same segment", None,
             "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n")
    improper("input after NOOP in the same segment", "EHLO client.test", "NOOP\r\nNOOP\r\n")
    improper("input after QUIT in the same segment", "EHLO client.test",
             "QUIT\r\nMAIL FROM:<a@b.test>\r\n")

    # A client that vanishes in the middle of DATA, with FIN or RST: no file
    # of it in tmp/ or incoming/; a probe meanwhile.
    for reset in (False, True):
        how = "RST" if reset else "close"
        def vanish(reset=reset, how=how):
            inc0 = queued(qdir)
            c = open_data(host, port)
            c.send("Subject: vanish\r\n\r\n" + ("x" * 70 + "\r\n") * 1500)  # ~108 KB
            time.sleep(0.2)
            note("vanish (%s): %d file(s) in tmp/ mid-DATA" % (how, len(files(qdir, "tmp"))))
            n = probe(probe_cmd, "while a client is mid-DATA")
            ours[0] += n
            c.close(reset=reset)
            left = await_empty(qdir, "tmp")
            check(left == [], "client vanishing mid-DATA (%s): nothing left in tmp/" % how, left)
            new = sorted(set(queued(qdir)) - set(inc0))
            check(len(new) == n, "client vanishing mid-DATA (%s): nothing of it queued" % how,
                  "new files: %r (probe queued %d)" % (new, n))
        case("client vanishing mid-DATA (%s)" % how, vanish)

    end = queued(qdir)
    check(len(end) - len(start) == ours[0],
          "bad input: the queue grew only by the well-behaved messages (%d)" % ours[0],
          "grew by %d" % (len(end) - len(start)))
    return 0


def cmd_inject(host, port, record, stopfile, conns):
    """Parallel clients sending messages in a loop; every id acknowledged
    with 250 is recorded (and flushed) at once."""
    lock = threading.Lock()
    rec = open(record, "a")
    stats = {"acked": 0, "attempts": 0, "broken": 0, "refused": 0}
    body_sizes = [300, 2000, 20000, 200000]

    def add(k, n=1):
        with lock:
            stats[k] += n

    def worker(k):
        rnd = random.Random(k)
        while not os.path.exists(stopfile):
            try:
                c = Conn(host, port, timeout=10)
            except OSError:
                add("refused")
                time.sleep(0.02)
                continue
            try:
                if not c.reply()[0].startswith("220"):
                    raise RuntimeError("greeting")
                c.cmd("EHLO inject%d.test" % k)
                while not os.path.exists(stopfile):
                    add("attempts")
                    c.send("MAIL FROM:<inject%d@b.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (k, HOSTED))
                    r = [c.reply()[-1] for _ in range(3)]
                    if r[2].split()[0] != "354":
                        raise RuntimeError("refused: %r" % r)
                    size = rnd.choice(body_sizes)
                    line = "y" * 78 + "\r\n"
                    c.send("Subject: inject %d\r\n\r\n" % k + line * (size // 80) + ".\r\n")
                    r = c.reply()[-1]
                    m = QUEUED.match(r)
                    if not m:
                        raise RuntimeError("after the dot: %r" % r)
                    with lock:
                        rec.write(m.group(1) + "\n")
                        rec.flush()
                        stats["acked"] += 1
            except (OSError, Closed, RuntimeError, IndexError):
                add("broken")
            finally:
                c.close()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(int(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    print("inject: %(acked)d acknowledged, %(attempts)d attempts, %(broken)d broken sessions, "
          "%(refused)d refused connects" % stats)
    return 0


def complete(path):
    """The file ends with a valid END record (type 'E', length 0)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 10:
                return False
            f.seek(-5, os.SEEK_END)
            return f.read(5) == b"E\x00\x00\x00\x00"
    except OSError:
        return False


def cmd_verify(qdir, record):
    with open(record) as f:
        ids = [ln.strip() for ln in f if ln.strip()]
    inc = set(queued(qdir))
    lost = [i for i in ids if i not in inc]
    broken = [d + "/" + n for d in ("incoming", "deferred") for n in files(qdir, d)
              if not complete(os.path.join(qdir, d, n))]
    corrupt = set(files(qdir, "corrupt"))
    check(len(ids) > 0, "crash test: some messages were acknowledged (%d)" % len(ids))
    check(len(set(ids)) == len(ids), "crash test: every acknowledged id is unique",
          "%d duplicates" % (len(ids) - len(set(ids))))
    check(not lost, "crash test: every acknowledged id is queued (%d lost of %d)" % (len(lost), len(ids)),
          ["lost: %s%s" % (i, " (in corrupt/)" if i in corrupt else "") for i in lost])
    check(not broken, "crash test: every queue file ends with END (%d without)" % len(broken), broken)
    print("verify: %d acknowledged, %d queued, %d in corrupt/, %d in tmp/"
          % (len(ids), len(inc), len(corrupt), len(files(qdir, "tmp"))))
    return 0


def cmd_incomplete(qdir):
    for n in files(qdir, "incoming"):
        if not complete(os.path.join(qdir, "incoming", n)):
            print(n)
    return 0


def cmd_tarpit(host, port, probe_cmd):
    """smtpd_soft_error_limit / smtpd_error_sleep_time at their defaults
    (10 errors, 1 s): the first ten errors are answered at once, every
    reply after that is one second late, and a well-behaved client is
    served while a reply is held."""
    c = greeted(host, port)
    t0 = time.monotonic()
    codes = [c.cmd("FOO%d" % i)[-1][:3] for i in range(10)]
    fast = time.monotonic() - t0
    check(codes == ["502"] * 10, "ten unknown commands: 502 each", codes)
    check(fast < 9.0, "errors 1-10 not slowed (%.2f s for ten)" % fast)
    slow = []
    for text in ("BAR1", "BAR2", "NOOP"):
        t = time.monotonic()
        c.send(text + "\r\n")
        if text == "BAR2":
            probe(probe_cmd, "while a reply to a slowed client is held")
        r = c.reply(timeout=15)
        slow.append(time.monotonic() - t)
    check(min(slow) >= 0.9, "after the soft limit every reply waits 1 s (%s s)" %
          "/".join("%.2f" % x for x in slow), r)
    check(r[-1].startswith("250"), "a good command is still answered after the delay", r)
    c.close()
    return 0


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    table = {
        "banner": (cmd_banner, (2, 3)),
        "rcpt": (cmd_rcpt, (4,)),
        "smuggle": (cmd_smuggle, (3,)),
        "datapipe": (cmd_datapipe, (3,)),
        "badinput": (cmd_badinput, (5,)),
        "inject": (cmd_inject, (5,)),
        "verify": (cmd_verify, (2,)),
        "incomplete": (cmd_incomplete, (1,)),
        "tarpit": (cmd_tarpit, (3,)),
    }
    if cmd not in table or len(args) not in table[cmd][1]:
        sys.stderr.write(__doc__)
        return 2
    return table[cmd][0](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
