"""The long fuzz run: every Hypothesis property of every package with many examples, then atheris if installed.

Run:  python bench/fuzz_long.py [--examples 100000] [--atheris SECONDS] [--only PYTEST_K_EXPR] [-- PYTEST_ARGS]

1. pytest over tests/ selecting `-m "hypothesis or fuzz"` (every @given test, IMAP, SMTP, NTLM,
   config, ... and any test marked `fuzz`), with MAILGW_FUZZ_EXAMPLES=N: tests/conftest.py then
   loads the `mailgw-fuzzlong` profile, so every property runs N examples, including those whose
   @settings name a smaller max_examples. pytest's per-test timeout is lifted for this run.
2. With --atheris S (default 0: off), each harness of bench/fuzz_atheris.py (IMAP framer +
   grammar, ENVELOPE/BODYSTRUCTURE) runs S seconds under libFuzzer, corpus in
   bench/.fuzz-corpus/<target>/ (kept between runs), findings saved as crash-*/timeout-* there.

The default CI run (the README's test command) runs the same properties with the `mailgw-ci`
profile's smaller example count; this script is optional and not part of CI.
Exit status: 0 when everything passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_properties(examples: int, keyword: str, extra: list[str]) -> int:
    env = dict(os.environ, MAILGW_FUZZ_EXAMPLES=str(examples))
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "pytest", "-q", "-m", "hypothesis or fuzz", "-o", "timeout=0",
            "--hypothesis-show-statistics", *(["-k", keyword] if keyword else []), *extra,
            os.path.join(REPO, "tests")]
    print("properties:", " ".join(argv[2:]), f"(MAILGW_FUZZ_EXAMPLES={examples})", flush=True)
    started = time.monotonic()
    code = subprocess.call(argv, cwd=REPO, env=env)
    print(f"properties: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return code


def run_atheris(seconds: int) -> int:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris: not installed (pip install atheris); skipped", flush=True)
        return 0
    worst = 0
    for target in ("framer", "envelope"):
        corpus = os.path.join(REPO, "bench", ".fuzz-corpus", target)
        os.makedirs(corpus, exist_ok=True)
        argv = [sys.executable, os.path.join(REPO, "bench", "fuzz_atheris.py"), target,
                f"-max_total_time={seconds}", "-timeout=5", f"-artifact_prefix={corpus}/", corpus]
        print("atheris:", " ".join(argv[1:]), flush=True)
        code = subprocess.call(argv, cwd=REPO)
        print(f"atheris {target}: exit {code}" + (" (finding saved in " + corpus + ")" if code else ""), flush=True)
        worst = max(worst, code)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=int(os.environ.get("MAILGW_FUZZ_EXAMPLES") or 100000),
                        help="examples per property (default 100000, or $MAILGW_FUZZ_EXAMPLES)")
    parser.add_argument("--atheris", type=int, default=0, metavar="SECONDS", help="seconds per atheris harness (0: off)")
    parser.add_argument("--only", default="", metavar="EXPR", help="pytest -k expression to run some properties only")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    codes = [run_properties(args.examples, args.only, args.pytest_args)]
    if args.atheris > 0:
        codes.append(run_atheris(args.atheris))
    return 0 if not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
