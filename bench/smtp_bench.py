"""Submission throughput: mailgw vs Postfix in the same run (STARTTLS + AUTH PLAIN, 10 connections, 10 KB).

Both servers relay to the same capturing sink on 127.0.0.1; mailgw fsyncs before every 250
(Postfix does too: its queue files are fsynced before the 250). Usage:

    python bench/smtp_bench.py [--messages 200] [--connections 10] [--no-postfix]

Postfix (Debian's package) runs as a private instance under a temporary config directory with
Cyrus SASL (sasldb, PLAIN) on 127.0.0.1; needs root and `apt-get install postfix sasl2-bin`.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import statistics
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "smtp")]

USER, PASSWORD = "alice", "bench-pw"


# --------------------------------------------------------------------------- child processes


def run_sink() -> None:
    from twisted.internet import reactor

    from smtp_support import SinkBehaviour, SinkFactory

    port = reactor.listenTCP(0, SinkFactory(SinkBehaviour(starttls=False)), interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


def run_mailgw(state: str, sink_port: int, cert: str, key: str) -> None:
    from twisted.internet import reactor

    from mailgw.auth.memory import MemoryDirectory
    from mailgw.auth.service import AuthService
    from mailgw.smtp.client import SmarthostConfig
    from mailgw.smtp.factory import SubmissionFactory
    from mailgw.smtp.policy import SubmissionPolicy
    from mailgw.smtp.queue import RelayQueue
    from mailgw.smtp.relay import RelayRunner
    from mailgw.store.memory import MemoryStore
    from twisted.python.threadpool import ThreadPool

    from smtp_support import FileTLS

    pool = ThreadPool(2, int(os.environ.get("SMTP_BENCH_THREADS", "4")), "bench")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    queue = RelayQueue(os.path.join(state, "queue"), reactor, pool)
    directory = MemoryDirectory()
    directory.add_user(USER, PASSWORD, ["alice@example.test"])
    auth = AuthService([directory], reactor, failure_delay=0)
    policy = SubmissionPolicy(local_domains=frozenset({"example.test"}))
    factory = SubmissionFactory("bench", auth, MemoryStore(), queue, FileTLS(cert, key), "mailgw.bench", policy,
                                reactor, pool)
    runner = RelayRunner(queue, reactor, "mailgw.bench", policy.is_local, None,
                         SmarthostConfig("127.0.0.1", sink_port, "off", helo="mailgw.bench"), concurrency=4)
    if not os.environ.get("SMTP_BENCH_NO_RELAY"):
        runner.start()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=64)
    print(f"PORT {port.getHost().port}", flush=True)
    if os.environ.get("SMTP_BENCH_PROFILE"):
        import cProfile

        cProfile.runctx("reactor.run()", globals(), {"reactor": reactor}, os.environ["SMTP_BENCH_PROFILE"])
    else:
        reactor.run()


def spawn(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        raise RuntimeError(f"child {args[0]} did not start: {line!r}")
    return proc, int(line.split()[1])


# --------------------------------------------------------------------------- Postfix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postfix(base: str, sink_port: int, cert: str, key: str) -> tuple[str, int]:
    """A private Postfix instance: submission with TLS required and Cyrus SASL PLAIN, relaying to the sink."""
    if shutil.which("postfix") is None or shutil.which("saslpasswd2") is None:
        raise RuntimeError("postfix / saslpasswd2 not installed")
    conf = os.path.join(base, "pf-etc")
    spool = os.path.join(base, "pf-spool")
    data = os.path.join(base, "pf-data")
    sasl = os.path.join(conf, "sasl")
    for d in (conf, spool, data, sasl):
        os.makedirs(d, exist_ok=True)
    shutil.chown(data, "postfix", "postfix")
    os.chmod(base, 0o755)
    port = free_port()
    sasldb = os.path.join(sasl, "sasldb2")
    subprocess.run(["saslpasswd2", "-p", "-c", "-f", sasldb, "-u", "bench", USER], input=PASSWORD.encode(), check=True)
    shutil.chown(sasldb, "postfix", "postfix")
    with open(os.path.join(sasl, "smtpd.conf"), "w") as f:
        f.write(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {sasldb}\n")
    for name in ("cert.pem", "key.pem"):
        shutil.copy(cert if name == "cert.pem" else key, os.path.join(conf, name))
    main_cf = f"""
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
smtpd_tls_cert_file = {conf}/cert.pem
smtpd_tls_key_file = {conf}/key.pem
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {sasl}
smtpd_sasl_local_domain = bench
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
maillog_file = {base}/postfix.log
maillog_file_prefixes = {base}
meta_directory = /etc/postfix
default_process_limit = 100
smtp_connection_cache_on_demand = yes
"""
    with open(os.path.join(conf, "main.cf"), "w") as f:
        f.write(main_cf)
    master = open("/etc/postfix/master.cf").read()
    master = master.replace("smtp      inet  n       -       y       -       -       smtpd",
                            f"127.0.0.1:{port} inet n - n - - smtpd")
    master = "\n".join(line.replace(" y ", " n ", 1) if " unix " in line else line for line in master.splitlines())
    with open(os.path.join(conf, "master.cf"), "w") as f:
        f.write(master)
    # Postfix only runs a non-default config directory listed in the default instance's main.cf.
    default_main = "/etc/postfix/main.cf"
    lines = open(default_main).read().splitlines() if os.path.exists(default_main) else []
    lines = [ln for ln in lines if not ln.startswith("alternate_config_directories")]
    with open(default_main, "w") as f:
        f.write("\n".join(lines + [f"alternate_config_directories = {conf}"]) + "\n")
    subprocess.run(["postfix", "-c", conf, "check"], check=False, capture_output=True)
    started = subprocess.run(["postfix", "-c", conf, "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError("postfix start: " + (started.stderr or started.stdout).strip()[-500:])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return conf, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("postfix did not listen")


def stop_postfix(conf: str) -> None:
    subprocess.run(["postfix", "-c", conf, "stop"], check=False, capture_output=True)


# --------------------------------------------------------------------------- load


MESSAGE = (b"From: alice@example.test\r\nTo: far@remote.example\r\nSubject: bench\r\n\r\n"
           + (b"0123456789" * 9 + b"abcdefg\r\n") * 103)  # about 10 KB


def client(port: int, count: int, results: list[int], errors: list[str], start: threading.Barrier) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    import smtplib
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        s.ehlo("bench.client")
        s.starttls(context=ctx)
        s.ehlo("bench.client")
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode())
        if code != 235:
            raise RuntimeError(f"AUTH {code}")
        start.wait()
        ok = 0
        for _ in range(count):
            s.sendmail("alice@example.test", ["far@remote.example"], MESSAGE)
            ok += 1
        results.append(ok)
        s.quit()
    except Exception as e:  # reported, and the run fails
        errors.append(f"{type(e).__name__}: {e}")
        try:
            start.abort()
        except Exception:
            pass


def measure(port: int, connections: int, per_connection: int) -> float:
    results: list[int] = []
    errors: list[str] = []
    barrier = threading.Barrier(connections + 1)
    threads = [threading.Thread(target=client, args=(port, per_connection, results, errors, barrier))
               for _ in range(connections)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    return sum(results) / elapsed


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("sink", "mailgw"):
        return run_sink() if sys.argv[1] == "sink" else run_mailgw(*sys.argv[2:3], int(sys.argv[3]), *sys.argv[4:6]) or 0  # type: ignore[func-returns-value]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100, help="messages per connection")
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--no-postfix", action="store_true")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median of each is compared")
    args = p.parse_args()
    from smtp_support import make_certs

    base = tempfile.mkdtemp(prefix="smtp-bench-")
    certs = make_certs(base, ("localhost",))
    procs: list[subprocess.Popen] = []
    conf = None
    try:
        sink, sink_port = spawn("sink")
        procs.append(sink)
        state = os.path.join(base, "mailgw")
        os.makedirs(state)
        mg, mg_port = spawn("mailgw", state, str(sink_port), certs["cert"], certs["key"])
        procs.append(mg)
        measure(mg_port, 2, 5)  # warm-up
        load = f"{args.connections} connections x {args.messages}, STARTTLS + AUTH PLAIN, {len(MESSAGE)} octets"
        pf_port = None
        if not args.no_postfix:
            try:
                conf, pf_port = start_postfix(base, sink_port, certs["cert"], certs["key"])
                measure(pf_port, 2, 5)
            except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
                print(f"postfix: not measured ({e})")
        rates: dict[str, list[float]] = {"mailgw": [], "postfix": []}
        for _ in range(args.rounds):  # alternate, so both see the same background load
            rates["mailgw"].append(measure(mg_port, args.connections, args.messages))
            if pf_port is not None:
                rates["postfix"].append(measure(pf_port, args.connections, args.messages))
        mg_rate = statistics.median(rates["mailgw"])
        print(f"mailgw : {mg_rate:8.1f} messages/s median of {args.rounds} "
              f"({', '.join(f'{r:.0f}' for r in rates['mailgw'])}); {load}; fsync before every 250")
        if pf_port is None:
            return 0
        pf_rate = statistics.median(rates["postfix"])
        print(f"postfix: {pf_rate:8.1f} messages/s median of {args.rounds} "
              f"({', '.join(f'{r:.0f}' for r in rates['postfix'])}); smtpd_tls_security_level=encrypt, Cyrus SASL")
        print(f"ratio mailgw/postfix: {mg_rate / pf_rate:.2f}x")
        return 0
    finally:
        if conf:
            stop_postfix(conf)
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
