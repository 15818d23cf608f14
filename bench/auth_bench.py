"""Benchmark: password verifications per second through AuthService with LDAP search+bind.

Starts the private slapd of tests/support/ldap_fixture.py, then measures in one invocation:
  reference  - the directory's blocking search+bind, one thread, no Twisted (ldap3 cost only);
  checker    - AuthService.login() with 20 logins in flight, over the LDAP thread pool;
  checker/starttls - the same over StartTLS with CA verification (connections are reused).
Prints each rate and its ratio to the reference. Aim: checker >= 400/s.

    python bench/auth_bench.py [--count 3000] [--concurrency 20] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

from ldap_fixture import SlapdFixture  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402

from mailgw.auth.ldap import LDAPDirectory  # noqa: E402
from mailgw.auth.ratelimit import AuthLimits, Rate  # noqa: E402
from mailgw.auth.service import AuthService  # noqa: E402
from mailgw.interfaces import ClientInfo, Identity  # noqa: E402

USERS = [("alice", "S3cret!"), ("bob", "hunter2"), ("carol", "pa(ss)*\\word"), ("gina", "gina-pw")]


def make_directory(slapd: SlapdFixture, threads: int, starttls: bool) -> LDAPDirectory:
    return LDAPDirectory("ldap.bench", [slapd.url], slapd.bind_dn, slapd.bind_password, slapd.user_base, reactor,
                         starttls=starttls, ca_file=slapd.ca_file, allow_plaintext=not starttls, timeout=5,
                         pool_size=threads)


def reference(slapd: SlapdFixture, count: int) -> float:
    directory = make_directory(slapd, 1, False)
    directory._check("alice", "S3cret!")  # connect outside the timing
    start = time.perf_counter()
    for i in range(count):
        login, password = USERS[i % len(USERS)]
        assert isinstance(directory._check(login, password), Identity)
    rate = count / (time.perf_counter() - start)
    directory._drop("service")
    directory._drop("binder")
    return rate


async def through_checker(slapd: SlapdFixture, count: int, concurrency: int, threads: int, starttls: bool) -> float:
    directory = make_directory(slapd, threads, starttls)
    limits = AuthLimits(per_ip=Rate(10**9, 1), per_user_ip=Rate(10**9, 1))  # measure the checker, not the budget
    service = AuthService([directory], reactor, failure_delay=0, limits=limits)
    clients = [ClientInfo("imap", "bench", f"127.0.0.{1 + i % 200}", tls=True) for i in range(concurrency)]
    # Warm up: one connection pair per pool thread.
    await defer.gatherResults([service.login("alice", "S3cret!", clients[0]) for _ in range(threads * 4)])
    done = 0
    start = time.perf_counter()

    async def worker(n: int) -> None:
        nonlocal done
        while done < count:
            i = done
            done += 1
            login, password = USERS[i % len(USERS)]
            identity = await service.login(login, password, clients[n])
            assert identity.user == login

    await defer.gatherResults([defer.Deferred.fromCoroutine(worker(n)) for n in range(concurrency)])
    rate = count / (time.perf_counter() - start)
    directory.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    slapd = SlapdFixture(tls=True).start()
    results: dict[str, Any] = {}
    try:
        results["reference (1 thread, blocking)"] = reference(slapd, args.count // 3)

        async def run() -> None:
            results[f"checker ({args.concurrency} concurrent, {args.threads} threads)"] = await through_checker(
                slapd, args.count, args.concurrency, args.threads, False)
            results["checker over StartTLS"] = await through_checker(
                slapd, args.count, args.concurrency, args.threads, True)

        def go() -> None:
            d = defer.Deferred.fromCoroutine(run())
            d.addErrback(lambda f: f.printTraceback())
            d.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(go)
        reactor.run()
    finally:
        slapd.stop()
    ref = next(iter(results.values()))
    print(f"LDAP search+bind verifications per second ({os.cpu_count()} CPUs):")
    for name, rate in results.items():
        print(f"  {name:<42} {rate:8.0f}/s   x{rate / ref:.2f} of reference")


if __name__ == "__main__":
    main()
