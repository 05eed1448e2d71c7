#!/usr/bin/env python3
"""hostile.py: hostile SMTP peers for tests/integration/hostile.sh.

The server side plays a next hop that misbehaves in one scripted way per
MODE, so the instance's SMTP client meets it on delivery; the client side
plays clients that hold the instance's sessions without ever finishing
them. Standard library only.

    hostile.py server MODE ADDR PORT LOG
        Serves MODE on ADDR:PORT until killed. LOG gets one line per event
        ("connect N", "< COMMAND", "message N BYTES", "close N ...");
        a message received in full is written to LOG.N.eml.
    hostile.py client slowloris HOST PORT SRC N SECONDS INTERVAL
        N sessions from SRC, each sending a valid command stream one byte
        every INTERVAL seconds, for at most SECONDS. Prints "ok"/"not ok"
        lines and notes, as tests/tools/smtpclient.py does.
    hostile.py client idle HOST PORT READY STOP SRC:N...
        N connections from each SRC, opened one after another; each reads
        the first line the server sends and then stays silent. READY gets
        one line per SRC: "SRC GREETED PER-CLIENT-421 SESSION-421 OTHER";
        the connections stay open until the file STOP exists (at most
        120 s), then close.

Server modes:
    greet554  a 554 greeting, then only QUIT is answered
    minimal   a sink whose every reply is a bare three-digit code
    lf        a sink whose replies end with a bare LF
    trunc     a two-digit reply ("25") to EHLO
    nocrlf    "250 hello" without a line end to EHLO, then silence
    long      a greeting of 100 KB without a line end, then silence
    endless   "250-x" lines to EHLO for as long as they are read
    starttls  offers STARTTLS; answers it with "220" and a fake "250" in
              one write, then plaintext where the handshake should be
    dropdata  the first session closes (RST) after some message content;
              later sessions are a normal sink
    silent    accepts and never says a word
"""
import os
import selectors
import socket
import struct
import sys
import threading
import time


def note(text):
    print("note: " + text)
    sys.stdout.flush()


def check(cond, desc, detail=None):
    print(("ok " if cond else "not ok ") + desc)
    if not cond and detail is not None:
        for d in str(detail).splitlines()[:30]:
            print("  | " + d)
    sys.stdout.flush()
    return cond


# ---- the server --------------------------------------------------------------

class Log:
    """The server's event log: whole lines, appended, thread-safe."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.n = 0

    def say(self, text):
        with self.lock:
            with open(self.path, "a") as f:
                f.write(text + "\n")

    def next_id(self):
        with self.lock:
            self.n += 1
            return self.n


class Peer:
    """One accepted connection: line reading with a generous timeout."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        sock.settimeout(60)

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        """The next line without its end, or None at EOF."""
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                return None
            self.buf += d
        l, _, self.buf = self.buf.partition(b"\n")
        return l.rstrip(b"\r").decode("latin-1")

    def wait_eof(self):
        """Silence until the client closes (or the timeout)."""
        while self.sock.recv(65536):
            pass

    def reset(self):
        """Close with RST: the connection drops, it does not end."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def sink(p, log, n, eol=b"\r\n", minimal=False, drop_after=None):
    """A receiving SMTP server; minimal: bare codes; drop_after: reset the
    connection once that many bytes of content were read."""
    def rep(code, text):
        p.send((code if minimal else code + " " + text).encode() + eol)

    rep("220", "hostile.test ESMTP")
    while True:
        cmd = p.line()
        if cmd is None:
            return
        log.say("< " + cmd[:200])
        verb = cmd[:4].upper()
        if verb == "EHLO":
            if minimal:
                rep("250", "")
            else:
                p.send(b"250-hostile.test" + eol + b"250 8BITMIME" + eol)
        elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
            rep("250", "2.0.0 Ok")
        elif verb == "QUIT":
            rep("221", "2.0.0 Bye")
            return
        elif verb == "DATA":
            rep("354", "End data with <CR><LF>.<CR><LF>")
            content, p.buf = p.buf, b""
            while b"\r\n.\r\n" not in b"\r\n" + content:
                if drop_after is not None and len(content) >= drop_after:
                    log.say("dropped %d after %d bytes of content" % (n, len(content)))
                    p.reset()
                    return
                d = p.sock.recv(65536)
                if not d:
                    log.say("eof %d in content" % n)
                    return
                content += d
            whole = b"\r\n" + content
            k = whole.index(b"\r\n.\r\n")
            msg, p.buf = whole[2:k + 2], whole[k + 5:]
            with open("%s.%d.eml" % (log.path, n), "wb") as f:
                f.write(msg)
            log.say("message %d %d" % (n, len(msg)))
            rep("250", "2.0.0 Ok: queued")
        else:
            rep("502", "5.5.2 Error: command not recognized")


def greet554(p, log, n):
    p.send(b"554 5.7.1 hostile.test no SMTP service here\r\n")
    while True:
        cmd = p.line()
        if cmd is None:
            return
        log.say("< " + cmd[:200])
        if cmd.upper() == "QUIT":
            p.send(b"221 2.0.0 Bye\r\n")
            return
        p.send(b"503 5.5.1 Error: no SMTP service here\r\n")


def trunc(p, log, n):
    p.send(b"220 hostile.test ESMTP\r\n")
    cmd = p.line()
    if cmd is not None:
        log.say("< " + cmd[:200])
        p.send(b"25\r\n")
        p.wait_eof()


def nocrlf(p, log, n):
    p.send(b"220 hostile.test ESMTP\r\n")
    cmd = p.line()
    if cmd is not None:
        log.say("< " + cmd[:200])
        p.send(b"250 hello")
        p.wait_eof()


def long_line(p, log, n):
    p.send(b"220 " + b"x" * (100 * 1024))
    p.wait_eof()


def endless(p, log, n):
    p.send(b"220 hostile.test ESMTP\r\n")
    cmd = p.line()
    if cmd is None:
        return
    log.say("< " + cmd[:200])
    sent = 0
    chunk = b"250-x\r\n" * 1024
    try:
        while sent < (1 << 30):
            p.send(chunk)
            sent += len(chunk)
    except OSError:
        pass
    log.say("endless %d sent %d bytes" % (n, sent))


def starttls(p, log, n):
    p.send(b"220 hostile.test ESMTP\r\n")
    while True:
        cmd = p.line()
        if cmd is None:
            return
        log.say("< " + cmd[:200])
        verb = cmd[:8].upper()
        if verb.startswith("EHLO"):
            p.send(b"250-hostile.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        elif verb == "STARTTLS":
            # The 220 and a reply nobody asked for, in one segment.
            p.send(b"220 2.0.0 go ahead\r\n250 2.0.0 fake reply\r\n")
            # Where the handshake belongs: what the client sends is
            # noted, the answer is plaintext.
            try:
                d = p.sock.recv(65536)
            except OSError:
                d = b""
            log.say("after STARTTLS %d: %d bytes, first %s" % (n, len(d), d[:1].hex()))
            try:
                p.send(b"250 2.0.0 plaintext where TLS should be\r\n")
            except OSError:
                return
        elif verb.startswith(("MAIL", "RCPT", "DATA")):
            log.say("PLAINTEXT MAIL TRANSACTION %d" % n)
            p.send(b"250 2.0.0 Ok\r\n")
        elif verb.startswith("QUIT"):
            p.send(b"221 2.0.0 Bye\r\n")
            return
        else:
            p.send(b"250 2.0.0 Ok\r\n")


def silent(p, log, n):
    p.wait_eof()


MODES = {
    "greet554": greet554,
    "minimal": lambda p, log, n: sink(p, log, n, minimal=True),
    "lf": lambda p, log, n: sink(p, log, n, eol=b"\n"),
    "trunc": trunc,
    "nocrlf": nocrlf,
    "long": long_line,
    "endless": endless,
    "starttls": starttls,
    "dropdata": lambda p, log, n: sink(p, log, n, drop_after=4096 if n == 1 else None),
    "silent": silent,
}


def serve(mode, addr, port, logpath):
    handler = MODES[mode]
    log = Log(logpath)
    ls = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, int(port)))
    ls.listen(128)

    def one(sock, n):
        p = Peer(sock)
        why = "closed"
        try:
            handler(p, log, n)
        except OSError as e:
            why = "error " + (e.strerror or str(e))
        finally:
            try:
                p.sock.close()
            except OSError:
                pass
        log.say("close %d %s" % (n, why))

    while True:
        sock, peer = ls.accept()
        n = log.next_id()
        log.say("connect %d from %s" % (n, peer[0]))
        threading.Thread(target=one, args=(sock, n), daemon=True).start()


# ---- the clients ------------------------------------------------------------------

STREAM = (b"EHLO slowloris.test\r\nMAIL FROM:<slow@loris.test>\r\n"
          b"RCPT TO:<user@r.test>\r\nDATA\r\n")


def first_line(s, limit):
    """The first line the server sends on s, or "" (timeout, EOF)."""
    s.settimeout(limit)
    buf = b""
    try:
        while b"\n" not in buf:
            d = s.recv(4096)
            if not d:
                break
            buf += d
    except OSError:
        pass
    return buf.partition(b"\n")[0].rstrip(b"\r").decode("latin-1")


def slowloris(host, port, src, n, seconds, interval):
    n, seconds, interval = int(n), float(seconds), float(interval)
    conns, greeted = [], 0
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=10, source_address=(src, 0))
        if first_line(s, 10).startswith("220 "):
            greeted += 1
        s.setblocking(False)
        conns.append({"s": s, "t0": time.monotonic(), "sent": 0, "end": None, "said": b""})
    check(greeted == n, "slow-loris: %d sessions from %s greeted" % (n, src),
          "%d of %d greeted" % (greeted, n))
    start = time.monotonic()
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c["s"], selectors.EVENT_READ, c)
    next_byte = start
    while time.monotonic() - start < seconds and any(c["end"] is None for c in conns):
        now = time.monotonic()
        if now >= next_byte:
            for c in conns:
                if c["end"] is None and c["sent"] < len(STREAM):
                    try:
                        c["s"].send(STREAM[c["sent"]:c["sent"] + 1])
                        c["sent"] += 1
                    except OSError:
                        c["end"] = now
            next_byte += interval
        for key, _ in sel.select(timeout=max(0.0, min(0.2, next_byte - time.monotonic()))):
            c = key.data
            try:
                d = c["s"].recv(4096)
            except OSError:
                d = b""
            if d:
                c["said"] += d
            elif c["end"] is None:
                c["end"] = time.monotonic()
                sel.unregister(c["s"])
    ended = [c for c in conns if c["end"] is not None]
    lives = sorted(c["end"] - c["t0"] for c in ended)
    said = set()
    for c in ended:
        lines = c["said"].decode("latin-1").splitlines()
        said.add(lines[-1] if lines else "(nothing)")
    note("slow-loris: %d sessions, one byte every %g s, %d ended by the server within %g s%s; "
         "bytes sent per session: %d to %d; the server's last words: %s" % (
             n, interval, len(ended), seconds,
             " (after %.1f to %.1f s)" % (lives[0], lives[-1]) if lives else "",
             min(c["sent"] for c in conns), max(c["sent"] for c in conns),
             "; ".join(sorted(said)) or "-"))
    check(len(ended) == n, "slow-loris: the server ends every session that dribbles one byte "
          "every %g s within %g s" % (interval, seconds),
          "%d of %d sessions still open after %g s (the longest sent %d bytes)" % (
              n - len(ended), n, seconds, max(c["sent"] for c in conns)))
    for c in conns:
        c["s"].close()


def idle(host, port, ready, stop, specs):
    conns, lines = [], []
    for spec in specs:
        src, _, count = spec.partition(":")
        greeted = perip = total = other = 0
        for _ in range(int(count)):
            try:
                s = socket.create_connection((host, int(port)), timeout=10,
                                             source_address=(src, 0))
            except OSError:
                other += 1
                continue
            l = first_line(s, 10)
            if l.startswith("220 "):
                greeted += 1
                conns.append(s)
                continue
            if l.startswith("421 4.7.0 Too many connections from"):
                perip += 1
            elif l.startswith("421 4.3.2 Too many sessions"):
                total += 1
            else:
                other += 1
                if other <= 3:
                    note("idle: from %s: %r" % (src, l))
            s.close()
        lines.append("%s %d %d %d %d" % (src, greeted, perip, total, other))
    with open(ready + ".new", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(ready + ".new", ready)
    deadline = time.monotonic() + 120
    while not os.path.exists(stop) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Still open (not ended by the server) at the end.
    sel = selectors.DefaultSelector()
    for s in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed = sum(1 for _ in sel.select(timeout=0))
    note("idle: %d connections held, %d of them already closed or spoken to by the server"
         % (len(conns), closed))
    for s in conns:
        s.close()


def main(argv):
    if len(argv) == 6 and argv[1] == "server" and argv[2] in MODES:
        serve(argv[2], argv[3], argv[4], argv[5])
    elif len(argv) == 9 and argv[1:3] == ["client", "slowloris"]:
        slowloris(*argv[3:])
    elif len(argv) >= 8 and argv[1:3] == ["client", "idle"]:
        idle(argv[3], argv[4], argv[5], argv[6], argv[7:])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
