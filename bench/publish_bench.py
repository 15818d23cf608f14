"""Benchmark of the publishing forwarder against HAProxy (mode tcp) and the direct path, same machine, same run.

Measures (1) bulk throughput through one connection (client -> proxy -> sink, upload) and
(2) new connections per second (connect, read a 3-byte greeting, EOF), for: the direct path to the
target, HAProxy with its defaults, HAProxy with `option splice-request` and `splice-response`, mailgw with splice (the
default for plain TCP), and mailgw with `splice = false` (Twisted producers/consumers). Both
HAProxy and mailgw run one thread (`nbthread 1`), as a twistd process does. Prints figures and
the ratios mailgw/HAProxy. Needs Debian's haproxy (`apt-get install -y haproxy`).

    python bench/publish_bench.py [--bulk-gib 4] [--seconds 2] [--clients 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.gateway import Gateway  # noqa: E402

BLOCK = 4 * 1024 * 1024


# --- targets (each in its own process) ------------------------------------------------------

def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _sink(sock: socket.socket) -> None:
    """Reads each connection to EOF, then answers with the byte count."""
    buf = bytearray(1024 * 1024)
    while True:
        conn, _ = sock.accept()
        with conn:
            total = 0
            while n := conn.recv_into(buf):
                total += n
            conn.sendall(str(total).encode())


def _greeter(sock: socket.socket) -> None:
    """Sends b"ok\\n" and closes each connection."""
    while True:
        conn, _ = sock.accept()
        try:
            conn.sendall(b"ok\n")
        except OSError:
            pass
        conn.close()


def start_target(serve: Callable[[socket.socket], None]) -> tuple[multiprocessing.Process, int]:
    sock = _listener()
    process = multiprocessing.Process(target=serve, args=(sock,), daemon=True)
    process.start()
    port = sock.getsockname()[1]
    sock.close()  # the child keeps its copy
    return process, port


# --- clients --------------------------------------------------------------------------------

def bulk(port: int, total: int) -> float:
    """Bytes per second uploading `total` bytes through one connection (until the sink's count arrives)."""
    block = memoryview(bytearray(BLOCK))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sent = 0
        while sent < total:
            sock.sendall(block)
            sent += BLOCK
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(64)
        elapsed = time.perf_counter() - start
    if int(answer) != sent:
        raise RuntimeError(f"sink got {answer!r}, sent {sent}")
    return sent / elapsed


def _connect_loop(port: int, seconds: float, out: "multiprocessing.Queue[int]") -> None:
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            data = b""
            while chunk := sock.recv(16):
                data += chunk
            if data != b"ok\n":
                raise RuntimeError(f"greeting {data!r}")
        done += 1
    out.put(done)


def connection_rate(port: int, seconds: float, clients: int) -> float:
    out: "multiprocessing.Queue[int]" = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_connect_loop, args=(port, seconds, out)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    total = sum(out.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


# --- proxies --------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_haproxy(workdir: str, routes: dict[str, int], splice: bool) -> tuple[subprocess.Popen, dict[str, int]]:
    """haproxy -db with one frontend per route on a free loopback port."""
    ports = {name: free_port() for name in routes}
    lines = ["global", "    nbthread 1", "    maxconn 4000", "defaults", "    mode tcp",
             "    timeout connect 10s", "    timeout client 300s", "    timeout server 300s"]
    if splice:
        lines += ["    option splice-request", "    option splice-response"]
    for name, target in routes.items():
        lines += [f"listen {name}", f"    bind 127.0.0.1:{ports[name]}", f"    server s 127.0.0.1:{target}"]
    path = os.path.join(workdir, f"haproxy-{'splice' if splice else 'plain'}.cfg")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    process = subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for port in ports.values():
            wait_port(port)
    except RuntimeError:
        process.kill()
        raise RuntimeError("haproxy did not start: " + process.communicate()[1]) from None
    return process, ports


def start_mailgw(workdir: str, routes: dict[str, int], splice: bool) -> tuple[Gateway, dict[str, int]]:
    path = os.path.join(workdir, f"mailgw-{'splice' if splice else 'plain'}.toml")
    with open(path, "w") as handle:
        handle.write(f'config_version = 1\n[server]\nstate_dir = "{workdir}/state"\n[auth]\nbackends = []\n'
                     '[log]\nlevel = "warn"\n')
        for name, target in routes.items():
            handle.write(f'[publish.{name}]\nlisten = "tcp:0:interface=127.0.0.1"\ntarget = "127.0.0.1:{target}"\n'
                         f'clients = ["any"]\nmax_connections = 20000\nmax_per_client = 20000\n'
                         f'splice = {"true" if splice else "false"}\n')
    gateway = Gateway(path, workdir).start(expect=len(routes))
    return gateway, {name: gateway.port(f"publish.{name}.listen") for name in routes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bulk-gib", type=float, default=2.0, help="GiB per bulk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all paths; the best counts")
    parser.add_argument("--seconds", type=float, default=1.5, help="duration of each connection-rate run")
    parser.add_argument("--clients", type=int, default=2, help="client processes for the connection rate")
    args = parser.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("haproxy not found: apt-get install -y haproxy")
    workdir = tempfile.mkdtemp(prefix="publish-bench-")
    total = int(args.bulk_gib * 1024 ** 3) // BLOCK * BLOCK
    paths = [("direct", None, None), ("haproxy", start_haproxy, False), ("haproxy+splice", start_haproxy, True),
             ("mailgw", start_mailgw, True), ("mailgw splice=false", start_mailgw, False)]
    results: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, _, _ in paths}
    cpu: dict[str, list[float]] = {label: [0.0, 0.0, 0.0, 0.0] for label, _, _ in paths}  # s bulk, bytes, s conn, conns
    pids: dict[str, int] = {}
    cleanups: list[Callable[[], None]] = [lambda: shutil.rmtree(workdir, ignore_errors=True)]
    ports: dict[str, dict[str, int]] = {}
    try:
        for label, starter, splice in paths:
            # Own targets per path: TIME_WAIT entries of one path never slow another.
            for serve in (_sink, _greeter):
                process, port = start_target(serve)
                cleanups.append(process.terminate)
                ports.setdefault(label, {})["bulk" if serve is _sink else "conn"] = port
            if starter is not None:
                proxy, ports[label] = starter(workdir, ports[label], splice)
                cleanups.append(proxy.stop if isinstance(proxy, Gateway) else proxy.terminate)
                pids[label] = proxy.process.pid if isinstance(proxy, Gateway) else proxy.pid
            bulk(ports[label]["bulk"], 64 * 1024 * 1024)  # warm-up
        # Interleaved rounds: load from other processes on the machine hits every path alike.
        for round_ in range(args.rounds):
            for label, _, _ in paths:
                pid = pids.get(label)
                before = cpu_seconds(pid) if pid else 0.0
                results[label][0].append(bulk(ports[label]["bulk"], total))
                middle = cpu_seconds(pid) if pid else 0.0
                results[label][1].append(connection_rate(ports[label]["conn"], args.seconds, args.clients))
                after = cpu_seconds(pid) if pid else 0.0
                cpu[label][0] += middle - before
                cpu[label][1] += total
                cpu[label][2] += after - middle
                cpu[label][3] += results[label][1][-1] * args.seconds
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
    best = {label: (max(b), max(c)) for label, (b, c) in results.items()}
    print(f"{os.cpu_count()} CPUs, {args.rounds} rounds, {args.bulk_gib:g} GiB per bulk run, "
          f"{args.clients} connecting clients x {args.seconds:g} s; best of rounds (all rounds in brackets)")
    for label, (b, c) in results.items():
        print(f"{label:20s} bulk {best[label][0] / 1e9:5.2f} GB/s [{' '.join(f'{x / 1e9:.2f}' for x in b)}]"
              f"   connections {best[label][1]:6.0f}/s [{' '.join(f'{x:.0f}' for x in c)}]")
    print("\nproxy CPU (user+system, load-independent):")
    for label in pids:
        c = cpu[label]
        print(f"{label:20s} {c[0] / (c[1] / 1e9):6.3f} CPU-s per GB   {1e6 * c[2] / max(c[3], 1):6.0f} CPU-us per connection")
    print()
    for mine in ("mailgw", "mailgw splice=false"):
        for ref in ("haproxy", "haproxy+splice"):
            print(f"{mine:19s} / {ref:14s}: bulk {best[mine][0] / best[ref][0]:.2f}x (aim >= 0.8)   "
                  f"connections/s {best[mine][1] / best[ref][1]:.2f}x (aim >= 0.5)")
    direct = best["direct"]
    print(f"{'mailgw':19s} / {'direct':14s}: bulk {best['mailgw'][0] / direct[0]:.2f}x   "
          f"connections/s {best['mailgw'][1] / direct[1]:.2f}x")


if __name__ == "__main__":
    main()
