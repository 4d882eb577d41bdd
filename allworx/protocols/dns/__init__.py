"""DNS: the zone, fast answers, cache, upstreams, server, service."""
