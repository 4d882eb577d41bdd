"""SNTP server."""
