"""mailgw's own IMAP4rev1 engine: wire layer, session state machine, commands, factory."""
