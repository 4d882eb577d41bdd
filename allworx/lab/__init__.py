"""The virtual office in network namespaces, its hosts, the demo and the test fixtures."""
