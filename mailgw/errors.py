"""Errors that carry their meaning: SMTP code, enhanced code, IMAP response code, public text, temporary or not."""

from __future__ import annotations


class ConfigError(Exception):
    """One or more configuration problems; each line names the dotted key and the problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class MailError(Exception):
    """Base of errors shown to a client. `public` is the only text a client ever sees."""

    smtp_code = 451
    enhanced = "4.3.0"
    imap_code = "UNAVAILABLE"  # RFC 5530 response code, without brackets
    public = "Temporary failure"
    temporary = True

    def __init__(self, public: str | None = None, detail: str = "") -> None:
        if public is not None:
            self.public = public
        self.detail = detail  # for logs only
        super().__init__(detail or self.public)

    def smtp_reply(self) -> bytes:
        return f"{self.smtp_code} {self.enhanced} {self.public}\r\n".encode()


# --- authentication ------------------------------------------------------------------------


class AuthFailed(MailError):
    """Wrong credentials, unknown user, malformed exchange: the one reply that enumerates nothing."""

    smtp_code = 535
    enhanced = "5.7.8"
    imap_code = "AUTHENTICATIONFAILED"
    public = "Authentication failed."
    temporary = False

    def __init__(self, reason: str = "bad_password", public: str | None = None) -> None:
        self.reason = reason  # bad_password | unknown_user | malformed | ntlm_v1_refused | ... (logs only)
        super().__init__(public, reason)


class AuthUnavailable(MailError):
    """The directory is down, timed out, or ambiguous: never reported as a bad password."""

    smtp_code = 454
    enhanced = "4.7.0"
    imap_code = "UNAVAILABLE"
    public = "Temporary authentication failure"
    temporary = True


class AuthThrottled(AuthFailed):
    """Over the failure budget: answered exactly like a failure, without asking any backend."""

    def __init__(self) -> None:
        super().__init__("ratelimited")


class TLSRequired(AuthFailed):
    """A credential offered before TLS where the listener requires TLS (RFC 3207 530, RFC 5530 PRIVACYREQUIRED)."""

    smtp_code = 530
    enhanced = "5.7.0"
    imap_code = "PRIVACYREQUIRED"
    public = "Must issue a STARTTLS command first"

    def __init__(self) -> None:
        super().__init__("tls_required")


class UnknownMechanism(AuthFailed):
    """A SASL mechanism the service does not offer on this listener (RFC 4954 504 5.5.4)."""

    smtp_code = 504
    enhanced = "5.5.4"
    imap_code = ""
    public = "Unrecognized authentication type"

    def __init__(self) -> None:
        super().__init__("unknown_mechanism")


class AuthAborted(MailError):
    """The client cancelled the SASL exchange with '*'."""

    smtp_code = 501
    enhanced = "5.0.0"
    imap_code = ""
    public = "Authentication aborted"
    temporary = False


class SASLProtocolError(MailError):
    """A response that is not valid base64 or not valid for the mechanism's framing."""

    smtp_code = 501
    enhanced = "5.5.2"
    imap_code = ""
    public = "Invalid base64"
    temporary = False


# --- store ---------------------------------------------------------------------------------


class StoreError(MailError):
    """Base of store errors."""


class NoSuchMailbox(StoreError):
    smtp_code = 550
    enhanced = "5.1.1"
    imap_code = "NONEXISTENT"
    public = "Mailbox doesn't exist"
    temporary = False


class MailboxExists(StoreError):
    smtp_code = 550
    enhanced = "5.2.0"
    imap_code = "ALREADYEXISTS"
    public = "Mailbox already exists"
    temporary = False


class InvalidMailboxName(StoreError):
    smtp_code = 550
    enhanced = "5.1.3"
    imap_code = "CANNOT"
    public = "Invalid mailbox name"
    temporary = False


class QuotaExceeded(StoreError):
    smtp_code = 552
    enhanced = "5.2.2"
    imap_code = "OVERQUOTA"
    public = "Quota exceeded"
    temporary = False


class StorageUnavailable(StoreError):
    """Disk full, I/O error: temporary, nothing half-written is visible."""

    smtp_code = 451
    enhanced = "4.3.0"
    imap_code = "UNAVAILABLE"
    public = "Error: queue file write error"
    temporary = True


class ReadOnlyFolder(StoreError):
    smtp_code = 550
    enhanced = "5.2.0"
    imap_code = "READ-ONLY"
    public = "Mailbox is read-only"
    temporary = False


class MessageExpunged(StoreError):
    """The message is no longer in the folder (expunged by another session or program)."""

    smtp_code = 550
    enhanced = "5.2.0"
    imap_code = "EXPUNGEISSUED"  # RFC 5530
    public = "Message has been expunged"
    temporary = False


# --- certificates (mailgwctl cert / ca) -----------------------------------------------------


class CertificateRefused(Exception):
    """A certificate request, issue or install refused; str() is one line naming the problem."""
