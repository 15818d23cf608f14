"""Stand-in for Samba's `ntlm_auth --helper-protocol=ntlm-server-1`, answering byte for byte like Samba 4.17
(including the extra "." line after a failure and the NT_STATUS description texts).

Verifies NTLMv2 with NT hashes from the FAKE_NTLM_USERS env var (`user:hexhash,...`), the way a DC
would. FAKE_NTLM_MODE: "ok" (default), "crash" (exit on the first request), "hang" (never answer),
"offline" (answer like winbindd being unreachable). Appends one line per request to FAKE_NTLM_LOG.
"""

import base64
import hmac
import os
import sys

users = dict(item.split(":") for item in os.environ.get("FAKE_NTLM_USERS", "").split(",") if item)
mode = os.environ.get("FAKE_NTLM_MODE", "ok")


def reply(*lines):
    sys.stdout.write("\n".join(lines) + "\n.\n")
    sys.stdout.flush()


request = {}
for raw in sys.stdin:
    line = raw.rstrip("\n")
    if line != ".":
        if ":: " in line:
            k, _, v = line.partition(":: ")
            request[k] = base64.b64decode(v).decode()
        else:
            k, _, v = line.partition(": ")
            request[k] = v
        continue
    if os.environ.get("FAKE_NTLM_LOG"):
        with open(os.environ["FAKE_NTLM_LOG"], "a") as f:
            f.write(f"{os.getpid()} {request.get('Username')}\n")
    if mode == "crash":
        sys.exit(3)
    if mode == "hang":
        continue
    if mode == "offline":
        reply("Authenticated: No", "Authentication-Error: Reading winbind reply failed!", ".")
        request = {}
        continue
    user, domain = request.get("Username", ""), request.get("NT-Domain", "")
    challenge = bytes.fromhex(request.get("LANMAN-Challenge", ""))
    nt = bytes.fromhex(request.get("NT-Response", ""))
    key = users.get(user.lower())
    if key is None or len(nt) < 48:
        reply("Authenticated: No", "Authentication-Error: The specified account does not exist.", ".")
    else:
        rk = hmac.new(bytes.fromhex(key), (user.upper() + domain).encode("utf-16-le"), "md5").digest()
        proof = hmac.new(rk, challenge + nt[16:], "md5").digest()
        if hmac.compare_digest(proof, nt[:16]):
            reply("Authenticated: Yes", "User-Session-Key: " + hmac.new(rk, proof, "md5").hexdigest().upper())
        else:
            reply("Authenticated: No", "Authentication-Error: When trying to update a password, this return status "
                  "indicates that the value provided as the current password is not correct.", ".")
    request = {}
