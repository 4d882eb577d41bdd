"""Links, addresses, routes and the ledger of what was changed."""
