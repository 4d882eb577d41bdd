"""The WAN side's DHCP client (RFC 2131) on automat."""
