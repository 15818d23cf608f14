"""Maildir++ message store: layout, UID list, index, keywords, delivery (blocking parts run in a thread pool)."""
