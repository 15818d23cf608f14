"""The command names mailgw implements (bounded metric labels)."""

KNOWN_COMMANDS = frozenset({
    "CAPABILITY", "NOOP", "LOGOUT", "ID", "ENABLE", "STARTTLS", "LOGIN", "AUTHENTICATE", "IDLE", "SELECT",
    "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND",
    "NAMESPACE", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "FETCH", "STORE", "SEARCH", "COPY", "MOVE",
})
