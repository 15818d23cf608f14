"""IMAP benchmark: mailgw against Dovecot (dovecot-imapd) over copies of the same generated Maildir.

Run: python bench/imap_bench.py [--messages 10000] [--mailbox realistic|small] [--idle 1000] [--logins 200]
The default mailbox is realistic (bench/mailbox_gen.py: 2-200 KB, mean about 30 KB, plain,
alternative and mixed MIME with attachments); `--mailbox small` is the old all-small one.
Needs Debian's dovecot-imapd (apt-get install -y dovecot-imapd; started privately here, never as a
system service) and isync for the mbsync step. Prints each figure for both servers and the
mailgw/Dovecot ratio (time ratios: < 1 means mailgw is faster; memory: < 1 means mailgw uses less).
"""

from __future__ import annotations

import argparse
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "imap"))
from imap_live import certificate  # noqa: E402

sys.path.insert(0, HERE)
import mailbox_gen  # noqa: E402

PASSWORD = "S3cret!pw"

DOVECOT_CONF = """
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
mail_location = maildir:{maildir}
first_valid_uid = 1
mail_max_userip_connections = 100000
default_process_limit = 5000
default_client_limit = 5000
default_vsz_limit = 0
service imap-login {{
  inet_listener imap {{
    port = {p1}
  }}
  inet_listener imaps {{
    port = {p2}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 2
}}
service imap {{
  process_limit = 5000
}}
service anvil {{
  client_limit = 20000
}}
service auth {{
  client_limit = 20000
}}
"""


def message(i: int) -> bytes:
    body = b"".join(b"Line %d of message %d, some text to make it look like mail.\r\n" % (j, i)
                    for j in range(5 + i % 60))
    return (b"From: Sender %d <sender%d@example.test>\r\nTo: Alice <alice@example.test>\r\n"
            b"Cc: team@example.test\r\nSubject: Benchmark message number %d\r\n"
            b"Date: Thu, 03 Dec 2026 10:%02d:00 +0000\r\nMessage-ID: <%d.bench@example.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" % (i, i, i, i % 60, i) + body)


def make_maildir(path: str, count: int, realistic: bool = True) -> int:
    """Write the mailbox; returns its size in octets."""
    return mailbox_gen.make_maildir(path, count, mailbox_gen.message if realistic else message)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_tree(pid: int) -> int:
    """Proportional set size (bytes; shared pages split between sharers) of a process tree, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Server:
    name = ""
    pid = 0
    tls_port = 0

    def stop(self) -> None:
        raise NotImplementedError


class Mailgw(Server):
    name = "mailgw"

    def __init__(self, root: str) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "imap_bench_server.py"), root, PASSWORD],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        _, plain, tls = line.split()
        self.plain_port, self.tls_port, self.pid = int(plain), int(tls), self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


class Dovecot(Server):
    name = "dovecot"

    def __init__(self, base: str, maildir: str) -> None:
        cert, key = certificate()
        nobody = pwd.getpwnam("nobody")
        self.base = base
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", maildir, os.path.join(base, "home")],
                       check=True)
        self.plain_port, self.tls_port = free_port(), free_port()
        conf = os.path.join(base, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(d=base, cert=cert, key=key, password=PASSWORD, uid=nobody.pw_uid,
                                        gid=nobody.pw_gid, maildir=maildir, p1=self.plain_port, p2=self.tls_port))
        self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", conf])
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start; see " + os.path.join(base, "dovecot.log"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def ctx() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificate()[0])


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float]:
    """(first run, best of `repeat`): the first run builds Dovecot's index cache and mailgw's ENVELOPE cache."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times[0], min(times)


def login(server: Server) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", server.tls_port, ssl_context=ctx())
    c.login("alice", PASSWORD)
    return c


def fetch_index(server: Server, count: int) -> tuple[float, float]:
    c = login(server)
    c.select("INBOX")

    def run() -> None:
        typ, data = c.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")
        assert typ == "OK" and len(data) == count, (typ, len(data))

    t = timed(run)
    c.logout()
    return t


def fetch_bodies(server: Server, count: int) -> tuple[float, float]:
    c = login(server)
    c.select("INBOX", readonly=True)

    def run() -> None:
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK" and sum(1 for d in data if isinstance(d, tuple)) == count

    t = timed(run)
    c.logout()
    return t


def login_rate(server: Server, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        c = login(server)
        c.logout()
    return n / (time.perf_counter() - t0)


def idle_memory(server: Server, n: int) -> tuple[int, int]:
    """(baseline RSS, RSS with n sessions in IDLE) of the server's process tree."""
    base = rss_tree(server.pid)
    socks = []
    context = ctx()
    for i in range(n):
        raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=30)
        s = context.wrap_socket(raw, server_hostname="localhost")
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"a LOGIN alice %s\r\n" % PASSWORD.encode())
        while not f.readline().startswith(b"a "):
            pass
        s.sendall(b"b SELECT INBOX\r\n")
        while not f.readline().startswith(b"b "):
            pass
        s.sendall(b"c IDLE\r\n")
        while not f.readline().startswith(b"+"):
            pass
        socks.append((s, f))
    time.sleep(1.0)
    used = rss_tree(server.pid)
    for s, f in socks:
        try:
            s.sendall(b"DONE\r\nd LOGOUT\r\n")
            s.close()
        except OSError:
            pass
    return base, used


def mbsync_time(server: Server, workdir: str) -> float:
    root = tempfile.mkdtemp(dir=workdir, prefix=f"mbsync-{server.name}-")
    conf = os.path.join(root, "rc")
    with open(conf, "w") as f:
        f.write(f"IMAPAccount a\nHost 127.0.0.1\nPort {server.tls_port}\nUser alice\nPass {PASSWORD}\n"
                f"SSLType IMAPS\nCertificateFile {certificate()[0]}\n\nIMAPStore r\nAccount a\n\n"
                f"MaildirStore l\nPath {root}/\nInbox {root}/INBOX\n\nChannel c\nFar :r:\nNear :l:\n"
                f"Patterns INBOX\nCreate Near\nSyncState *\n")
    t0 = time.perf_counter()
    subprocess.run(["mbsync", "-q", "-c", conf, "c"], check=True, timeout=600)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--mailbox", choices=("realistic", "small"), default="realistic")
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--logins", type=int, default=200)
    ap.add_argument("--no-mbsync", action="store_true")
    ap.add_argument("--only", default="index,bodies,logins,mbsync,idle",
                    help="comma-separated phases to run (index, bodies, logins, mbsync, idle)")
    args = ap.parse_args()
    phases = set(args.only.split(","))
    if not os.path.exists("/usr/sbin/dovecot"):
        sys.exit("dovecot-imapd is not installed (apt-get install -y dovecot-imapd)")
    os.environ["MAILGW_IMAP_TEST_CERT"] = ":".join(certificate())
    work = tempfile.mkdtemp(prefix="mailgw-imap-bench-")
    os.chmod(work, 0o755)
    total = make_maildir(os.path.join(work, "mailgw", "alice"), args.messages, args.mailbox == "realistic")
    shutil.copytree(os.path.join(work, "mailgw", "alice"), os.path.join(work, "dovecot-mail", "alice"))
    servers: list[Server] = [Mailgw(os.path.join(work, "mailgw")),
                             Dovecot(os.path.join(work, "dovecot"), os.path.join(work, "dovecot-mail", "alice"))]
    results: dict[str, dict[str, float]] = {s.name: {} for s in servers}
    try:
        for s in servers:
            r = results[s.name]
            if "index" in phases:
                r["fetch_index_cold_s"], r["fetch_index_s"] = fetch_index(s, args.messages)
            if "bodies" in phases:
                r["fetch_bodies_cold_s"], r["fetch_bodies_s"] = fetch_bodies(s, args.messages)
                r["bodies_mb_per_s"] = total / 2**20 / r["fetch_bodies_s"]
            if "logins" in phases:
                r["logins_per_s"] = login_rate(s, args.logins)
            if "mbsync" in phases and not args.no_mbsync and shutil.which("mbsync"):
                r["mbsync_full_s"] = mbsync_time(s, work)
            if "idle" in phases:
                base, used = idle_memory(s, args.idle)
                r["idle_pss_base_mb"] = base / 2**20
                r["idle_pss_mb"] = used / 2**20
                r["idle_kb_per_conn"] = (used - base) / 1024 / max(args.idle, 1)
    finally:
        for s in servers:
            s.stop()
    print(f"IMAP benchmark: {args.messages} {args.mailbox} messages ({total / 2**20:.0f} MB), {args.logins} TLS logins, "
          f"{args.idle} IDLE sessions (Maildir store for both; fetches: first run and best of 3)")
    print(f"{'metric':<22}{'mailgw':>14}{'dovecot':>14}{'mailgw/dovecot':>16}")
    for key in results["mailgw"]:
        a, b = results["mailgw"][key], results["dovecot"].get(key, float("nan"))
        print(f"{key:<22}{a:>14.3f}{b:>14.3f}{(a / b if b else float('nan')):>16.2f}")
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
