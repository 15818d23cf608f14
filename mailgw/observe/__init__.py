"""Observability: log formats, stable security events, Prometheus metrics, systemd notification."""
