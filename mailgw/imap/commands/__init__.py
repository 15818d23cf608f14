"""IMAP command handlers, one module per command group."""
