"""mailgw.publish: server publishing rules (ISA 2000 style) forwarding external ports to internal servers.

`rules` decides who may connect and keeps each rule's live state; `forwarder` moves the bytes
(backpressure, half-close, timeouts); `splice` is its zero-copy path; `proxyproto` encodes PROXY headers.
"""

from .forwarder import PublishFactory
from .rules import ClientSet, PublishRule, RuleSettings, client_set_for

__all__ = ["ClientSet", "PublishFactory", "PublishRule", "RuleSettings", "client_set_for"]
