from twisted.application.service import ServiceMaker

allworx = ServiceMaker(
    "allworx", "allworx.tap",
    "The small office server: router, firewall, DHCP, DNS, mail, phones, directory.",
    "allworx")
