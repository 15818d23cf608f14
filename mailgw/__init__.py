"""mailgw: a secure mail gateway (IMAP4/IMAPS virtual servers, TLS SMTP relay, port publishing) on Twisted."""

__version__ = "0.1.0"
