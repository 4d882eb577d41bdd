"""The stateful firewall: pure policy, kernel ruleset, NFQUEUE flow hook, service."""
