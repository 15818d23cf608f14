"""The message store: in-memory reference (memory.py) and Maildir++ (maildir/), no IMAP knowledge."""
