"""Maildir++ message store: layout, UID list, index, keywords, delivery (blocking parts run in a thread pool)."""

from mailgw.store.maildir.account import MaildirAccount, MaildirStore

__all__ = ["MaildirAccount", "MaildirStore"]
