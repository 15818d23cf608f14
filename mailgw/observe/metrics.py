"""Every Prometheus metric of mailgw, defined once (names from notes/ecosystem.md §4; bounded labels only).

Labels never carry a user name or an IP address. Protocol code imports this module and increments;
the admin HTTP endpoint serves REGISTRY.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import ProcessCollector, PlatformCollector, GCCollector

from mailgw import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

build_info = Gauge("mailgw_build_info", "mailgw version", ["version"], registry=REGISTRY)
build_info.labels(version=__version__).set(1)

connections_total = Counter("mailgw_connections", "Connections accepted", ["listener", "protocol"], registry=REGISTRY)
connections_active = Gauge("mailgw_connections_active", "Connections open now", ["listener", "protocol"], registry=REGISTRY)
tls_handshakes_total = Counter("mailgw_tls_handshakes", "TLS handshakes", ["listener", "result", "version"], registry=REGISTRY)
# result: ok | bad_credentials | unknown_user | temporary | ratelimited | aborted
auth_attempts_total = Counter("mailgw_auth_attempts", "Authentication attempts", ["protocol", "mechanism", "backend", "result"], registry=REGISTRY)
auth_backend_duration_seconds = Histogram("mailgw_auth_backend_duration_seconds", "Backend verification latency", ["backend"], registry=REGISTRY)
# kind: connect | timeout | bind | search
ldap_errors_total = Counter("mailgw_ldap_errors", "Directory errors", ["server", "kind"], registry=REGISTRY)
# status: ok | no | bad
imap_commands_total = Counter("mailgw_imap_commands", "IMAP commands completed", ["command", "status"], registry=REGISTRY)
imap_command_duration_seconds = Histogram("mailgw_imap_command_duration_seconds", "IMAP command latency", ["command"], registry=REGISTRY)
smtp_messages_total = Counter("mailgw_smtp_messages", "Messages received by submission", ["listener", "result"], registry=REGISTRY)
smtp_rejects_total = Counter("mailgw_smtp_rejects", "SMTP replies with a 4xx/5xx code", ["listener", "code"], registry=REGISTRY)
# result: sent | deferred | bounced
relay_deliveries_total = Counter("mailgw_relay_deliveries", "Relay delivery attempts", ["relay", "result"], registry=REGISTRY)
relay_queue_messages = Gauge("mailgw_relay_queue_messages", "Messages in the relay queue", registry=REGISTRY)
relay_queue_oldest_age_seconds = Gauge("mailgw_relay_queue_oldest_age_seconds", "Age of the oldest queued message", registry=REGISTRY)
# result: accepted | denied | target_failed
publish_connections_total = Counter("mailgw_publish_connections", "Connections to publishing rules", ["rule", "result"], registry=REGISTRY)
publish_connections_active = Gauge("mailgw_publish_connections_active", "Open forwarded connections", ["rule"], registry=REGISTRY)
# direction: in (client to target) | out (target to client)
publish_bytes_total = Counter("mailgw_forward_bytes", "Bytes forwarded by publishing rules", ["rule", "direction"], registry=REGISTRY)
# store: maildir | memory; result: ok | quota | temporary | failed (incremented by mailgw.smtp.local)
store_deliveries_total = Counter("mailgw_store_deliveries", "Local deliveries into the message store", ["store", "result"], registry=REGISTRY)
config_reloads_total = Counter("mailgw_config_reloads", "Configuration reloads", ["result"], registry=REGISTRY)
config_last_reload_success = Gauge("mailgw_config_last_reload_success_timestamp_seconds", "Time of the last good reload", registry=REGISTRY)
# Lateness of a 0.25 s timer (mailgw.observe.lag): the time the reactor thread was busy elsewhere.
reactor_lag_seconds = Histogram("mailgw_reactor_lag_seconds", "How late the reactor ran a periodic timer", registry=REGISTRY,
                                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
