"""mailgw submission relay: ESMTP server (587/465), durable queue, smarthost client, bounces."""
