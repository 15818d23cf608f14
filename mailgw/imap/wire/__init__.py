"""IMAP wire layer: framing, parsing and serialising; bytes in, values out, no I/O."""
