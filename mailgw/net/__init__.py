"""Network plumbing shared by every listener: TLS policy, listening endpoints, session registry."""
