"""The read-only directory (LDAP)."""
