"""Recognise URLs that point at internal addresses, in any spelling.

The API refuses callback URLs (and fetches reference images) only on public
hosts. Hosts can be spelled in many ways that all mean loopback or a private
network: ``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``[::1]``,
``[::ffff:127.0.0.1]``, ``localhost.``. This module parses them the way socket
libraries do, so none slips through.
"""

from __future__ import annotations

import ipaddress
import socket
import unicodedata
from urllib.parse import unquote, urlsplit

_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_INTERNAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip_literal(host: str) -> IPAddress | None:
    """Parse a host as an IP address in any spelling that resolvers accept.

    Args:
        host: A URL's host, without brackets.

    Returns:
        The address, or None when the host is a name rather than an IP literal.

    Examples:
        >>> str(parse_ip_literal("0x7f000001"))
        '127.0.0.1'
        >>> parse_ip_literal("::ffff:10.0.0.1").ipv4_mapped
        IPv4Address('10.0.0.1')
        >>> parse_ip_literal("example.com") is None
        True
    """
    host = host.strip().rstrip(".")
    if not host:
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if not all(ch in "0123456789abcdefxABCDEFX." for ch in host):
        return None
    try:
        # inet_aton accepts the BSD forms: 127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_internal_ip(address: IPAddress) -> bool:
    """True for loopback, private, link-local, unspecified, reserved or multicast addresses.

    IPv4 addresses mapped or embedded in IPv6 are judged by their IPv4 part.

    Examples:
        >>> is_internal_ip(ipaddress.ip_address("::ffff:127.0.0.1"))
        True
        >>> is_internal_ip(ipaddress.ip_address("93.184.216.34"))
        False
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and int(address) >> 32 == 0 and int(address) > 1:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # ::a.b.c.d
        if embedded is not None and is_internal_ip(embedded):
            return True
    return bool(
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_NAT)
    )


_SHARED_NAT = ipaddress.IPv4Network("100.64.0.0/10")


def internal_host_reason(url: str) -> str | None:
    """Say why a URL's host is internal, or None when it looks public.

    Names are not resolved (that happens on the API's side); only names that
    are internal by definition (``localhost``, ``*.local``, ...) are refused.

    Examples:
        >>> internal_host_reason("https://[::1]/hook")
        'host ::1 is an internal address'
        >>> internal_host_reason("https://example.com/hook") is None
        True
    """
    try:
        # Browsers and many HTTP stacks (WHATWG URL) end the authority at "\\" too.
        host = urlsplit(url.replace("\\", "/")).hostname
    except ValueError:
        return "the URL cannot be parsed"
    if not host:
        return "the URL has no host"
    # WHATWG parsers percent-decode the host, and resolvers map full-width digits,
    # letters and dots to ASCII (IDNA): so do we, before judging it.
    host = unicodedata.normalize("NFKC", unquote(host)).translate(_DOTS).lower().rstrip(".")
    if host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES):
        return f"host {host} is an internal name"
    address = parse_ip_literal(host)
    if address is not None and is_internal_ip(address):
        return f"host {host} is an internal address"
    return None
