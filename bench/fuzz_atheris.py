"""Coverage-guided fuzzing (atheris, libFuzzer) of the IMAP framer + grammar and the ENVELOPE/BODYSTRUCTURE parser.

Run:  python bench/fuzz_atheris.py framer|envelope [libFuzzer flags] [CORPUS_DIR ...]
e.g.  python bench/fuzz_atheris.py envelope -max_total_time=600 -timeout=5 /tmp/envelope-corpus

Needs `pip install atheris` (the `fuzz` extra). Unlike the Hypothesis properties (tests/, run by
`bench/fuzz_long.py`), libFuzzer keeps a corpus and steers by coverage. Each input must
terminate within `-timeout` seconds (default here 5: a hang is a finding, issue 12 defect 1) and
raise only the documented errors; anything else is a crash with the input saved as
`crash-*`/`timeout-*` in the working directory. Reproduce one with
`python bench/fuzz_atheris.py envelope crash-...`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["mailgw"]):
    from mailgw.imap.envelope import bodystructure, envelope  # noqa: E402
    from mailgw.imap.mime import parse_message, section_bytes  # noqa: E402
    from mailgw.imap.wire import framing  # noqa: E402
    from mailgw.imap.wire.grammar import BadTag, parse_command  # noqa: E402
    from mailgw.imap.wire.reader import ParseError  # noqa: E402
    from mailgw.imap.wire.response import encode  # noqa: E402

MAX_OUTPUT = 64  # ENVELOPE/BODYSTRUCTURE bytes per input byte: output stays proportional to input


def framer_input(data: bytes) -> None:
    """Feed `data` in chunks the first byte chooses; every event must come out, every command parse or be BAD."""
    if not data:
        return
    step, payload = data[0] % 17 + 1, data[1:] + b"\r\n"
    f = framing.Framer(max_line=4096)
    decide = 0
    pulled = 0
    for i in range(0, len(payload), step):
        f.feed(payload[i:i + step])
        while True:
            event = f.pull()
            if event is None:
                break
            pulled += 1
            # Each event consumes input: more events than bytes means a loop that does not advance.
            assert pulled <= 2 * len(payload) + 8, "framer emits events without consuming input"
            if isinstance(event, framing.LiteralOffer):
                decide += 1
                f.accept() if decide % 3 else f.reject()
            elif isinstance(event, framing.Command):
                try:
                    parse_command(event)
                except (ParseError, BadTag):
                    pass


def envelope_input(data: bytes) -> None:
    """Any bytes as a message (and as the headers of an attached message/rfc822) give bounded ENVELOPE/BODYSTRUCTURE."""
    for message in (data, b"Content-Type: message/rfc822\r\n\r\n" + data):
        root = parse_message(message)
        out = encode(envelope(root)) + encode(bodystructure(root))
        assert len(out) <= MAX_OUTPUT * (len(message) + 64), "output grows faster than input"
        section_bytes(root, (1,), "HEADER", ())


TARGETS = {"framer": framer_input, "envelope": envelope_input}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(TARGETS)} [libFuzzer flags] [CORPUS_DIR ...]")
    target = TARGETS[sys.argv[1]]
    argv = [sys.argv[0]] + sys.argv[2:]
    if not any(a.startswith("-timeout=") for a in argv):
        argv.append("-timeout=5")
    if not any(a.startswith("-rss_limit_mb=") for a in argv):
        argv.append("-rss_limit_mb=1024")
    atheris.Setup(argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
