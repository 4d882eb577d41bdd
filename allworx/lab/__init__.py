"""
The virtual office in network namespaces: its layout (`topology`), how it runs
things (`processes`), the ISP, internet host and DHCP clients (`peers`), the
office itself (`namespaces.Lab`), `allworx lab` (`cli`) and `make run` (`demo`).
The test fixtures built on it are in `allworx.tests.lab.fixtures`.
"""
