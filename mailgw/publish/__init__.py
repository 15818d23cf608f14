"""mailgw.publish."""
