"""The credential checker shared by IMAP, SMTP and admin: SASL mechanisms, backends, throttling.

Public surface (what assemble.py and tests use):

- `service.AuthService` — the IAuthService every protocol asks.
- `memory.MemoryDirectory` — in-memory IDirectory for tests and labs.
- `local.LocalDirectory` — the users file (argon2id/bcrypt, NT hashes).
- `ldap.LDAPDirectory` — search-then-bind against LDAP with ldap3.
- `ntlm.DirectoryNTLMVerifier`, `winbind.WinbindNTLMVerifier` — NTLMv2 verification.
- `ratelimit.AuthLimits`, `ratelimit.Rate` — failure budgets.
"""
