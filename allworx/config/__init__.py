# -*- test-case-name: allworx.tests.core.test_config -*-
"""
tap.conf as a validated model, in three layers (each imports only the ones
before it):

- `values`: the readers and writers of single values (sizes, durations,
  addresses, MACs, ports, call targets, ...);
- `telephony`: those of the phone system's values for outside lines (E.164
  numbers, a provider's address, opening hours, call forwarding);
- `vpn`: those of sites and remote access (WireGuard keys, networks,
  extension ranges) and the checks between [vpn], [site] and [device];
- `model`: the frozen attrs section models, `Config` and its derived facts;
- `checks`: loading (`load_config`, `parse_config`), the errors with section,
  key and line, and the checks between keys and sections.

The public names of all three are here too: `from allworx.config import X`.
"""

from allworx.config.values import (
    FetchAccount, check_value_text, format_bool, format_fetch_urls, format_forward_target, format_hostport,
    format_ports_list, format_range, format_sip_digest, format_words, parse_bool,
    parse_choice, parse_cidr, parse_digits, parse_domain, parse_duration, parse_email,
    parse_fetch_urls, parse_forward_target, parse_fqdn, parse_hostname, parse_hostport,
    parse_int, parse_ip, parse_ip_list, parse_mac, parse_mx_list, parse_optional,
    parse_password_hash, parse_pin, parse_pool_range, parse_port, parse_port_range,
    parse_ports_list, parse_sip_digest_key, parse_size, parse_words,
    TARGET_NAME, Target, format_target, parse_target)
from allworx.config.telephony import (
    E164, EMERGENCY, Hours, format_call_forward, format_hours, format_national_prefix,
    format_sip_hostport, is_e164, parse_call_forward, parse_e164, parse_e164_list,
    parse_extension_list, parse_hours, parse_national_prefix, parse_secret,
    parse_sip_hostport, parse_sip_user)
from allworx.config.model import (
    BUILTIN_NAMES, RECORD_NAME, RECORD_PLURALS, RECORD_SECTIONS, REQUIRED, SECURITY_MODES,
    SETTINGS_SECTIONS, WAN_MODES, Alias, Attendant, Config, DhcpSettings, DnsSettings, Forward,
    Group, Host, LanSettings, LdapSettings, MailSettings, NtpSettings, Number, Pop3Settings,
    Record, SecuritySettings, SipSettings, SystemSettings, Trunk, User, WanSettings,
    WebSettings, VpnSettings, Site, Device, format_value, key, keys_of, resolve_pool)
from allworx.config.vpn import (
    format_endpoint, format_extension_ranges, format_networks, in_range, parse_endpoint,
    parse_extension_ranges, parse_interface_name, parse_networks, parse_wg_key)
from allworx.config.checks import (
    ConfigError, ConfigErrors, config_from_document, load_config, parse_config)

__all__ = [
    "FetchAccount", "check_value_text", "format_bool", "format_fetch_urls", "format_forward_target",
    "format_hostport", "format_ports_list", "format_range", "format_sip_digest",
    "format_words", "parse_bool", "parse_choice", "parse_cidr", "parse_digits",
    "parse_domain", "parse_duration", "parse_email", "parse_fetch_urls",
    "parse_forward_target", "parse_fqdn", "parse_hostname", "parse_hostport", "parse_int",
    "parse_ip", "parse_ip_list", "parse_mac", "parse_mx_list", "parse_optional",
    "parse_password_hash", "parse_pin", "parse_pool_range", "parse_port", "parse_port_range",
    "parse_ports_list", "parse_sip_digest_key", "parse_size", "parse_words",
    "TARGET_NAME", "Target", "format_target", "parse_target",
    "E164", "EMERGENCY", "Hours", "format_call_forward", "format_hours", "format_national_prefix",
    "format_sip_hostport", "is_e164", "parse_call_forward", "parse_e164", "parse_e164_list",
    "parse_extension_list", "parse_hours", "parse_national_prefix", "parse_secret",
    "parse_sip_hostport", "parse_sip_user",
    "BUILTIN_NAMES", "RECORD_NAME", "RECORD_PLURALS", "RECORD_SECTIONS", "REQUIRED",
    "SECURITY_MODES", "SETTINGS_SECTIONS", "WAN_MODES", "Alias", "Attendant", "Config",
    "DhcpSettings", "DnsSettings", "Forward", "Group", "Host", "LanSettings", "LdapSettings",
    "MailSettings", "NtpSettings", "Number", "Pop3Settings", "Record", "SecuritySettings",
    "SipSettings", "SystemSettings", "Trunk", "User", "WanSettings", "WebSettings",
    "VpnSettings", "Site", "Device", "format_value", "key", "keys_of", "resolve_pool",
    "format_endpoint", "format_extension_ranges", "format_networks", "in_range",
    "parse_endpoint", "parse_extension_ranges", "parse_interface_name", "parse_networks",
    "parse_wg_key",
    "ConfigError", "ConfigErrors", "config_from_document", "load_config", "parse_config",
]
