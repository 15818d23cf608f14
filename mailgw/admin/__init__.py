"""Admin surfaces: mailgwctl, the SSH manhole, the HTTP health and metrics endpoint."""
