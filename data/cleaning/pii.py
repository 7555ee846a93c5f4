"""PII replacement, FineWeb's last step (datatrove's PIIFormatter): e-mail addresses and public IP addresses in the
text become placeholder values. It never drops a document, and unlike datatrove it is deterministic: the
placeholder is chosen by a stable hash of the replaced string, so a rerun writes byte-identical shards.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections import Counter
from typing import Any

from pydantic import Field, TypeAdapter

from data.cleaning.base import Filter, Options, step
from data.tokens.documents import Document

# example.com / example.org are reserved for documentation (RFC 2606).
EMAIL_REPLACEMENTS = ("email@example.com", "firstname.lastname@example.org")
# datatrove's placeholders: addresses that did not answer pings when its list was made.
IP_REPLACEMENTS = ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11",
                   "18.104.22.168")
# IPv6 documentation prefix (RFC 3849): never a real host, and not global, so a second pass leaves it alone.
IPV6_REPLACEMENTS = ("2001:db8::1", "2001:db8::2", "2001:db8::3")

_LOCAL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
# An RFC 5322-style address: dotted local part, then a dotted host name or a bracketed IPv4 literal. It starts
# where a run of address characters starts (datatrove's \b also tries inside one: quadratic on long runs).
_EMAIL_START = r"(?<![A-Za-z0-9!#$%&'*+/=?^_`{|}~.-])"
EMAIL = re.compile(_EMAIL_START + rf"{_LOCAL_ATOM}(?:\.{_LOCAL_ATOM})*@"
                   rf"(?:(?:{_LABEL}\.)+{_LABEL}|\[(?:{_OCTET}\.){{3}}{_OCTET}\])")
# A dotted quad, not part of a longer run of digits and dots (so "1.2.3.4.5" and "10.0.0.1.2" are versions, not
# addresses: datatrove, without these guards, would replace their first four numbers).
IPV4 = re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\.?\d)")
# IPv6 candidates: hex groups and colons starting with a global-unicast group (2000::/3: 2xxx or 3xxx), so C++'s
# "std::map" or "a::b" never match; ipaddress then validates. datatrove matches IPv4 only.
IPV6 = re.compile(r"(?<![\w:.])[23][0-9A-Fa-f]{3}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")


def _stable_pick(options: tuple[str, ...], key: str) -> str:
    return options[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(options)]


def is_public_ip(text: str) -> bool:
    """True for a globally routable IPv4/IPv6 address (not private, loopback, link-local, reserved...)."""
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


class PIIOptions(Options):
    """What the PII step replaces, and with what (FineWeb: e-mails and public IPv4 addresses; we add IPv6)."""

    emails: bool = True
    ips: bool = Field(True, description="Public IPv4 addresses.")
    ipv6: bool = Field(True, description="Public IPv6 addresses (datatrove: IPv4 only).")
    email_replacements: tuple[str, ...] = Field(EMAIL_REPLACEMENTS, min_length=1)
    ip_replacements: tuple[str, ...] = Field(IP_REPLACEMENTS, min_length=1)
    ipv6_replacements: tuple[str, ...] = Field(IPV6_REPLACEMENTS, min_length=1)


# How the step is written in a config: true (defaults), false (off) or a dict of options.
PIIStep = step(PIIOptions)
_PII_STEP = TypeAdapter(PIIStep)


class PII(Filter):
    """Replaces e-mail addresses (emails) and public IPv4 (ips) / IPv6 (ipv6) addresses with placeholders.

    Private, loopback and reserved addresses (127.0.0.1, 10.x, 192.168.x, 0.0.0.0) and version strings stay.
    Replacements are counted in self.counts ("email", "ipv4", "ipv6") and, per document, in meta["pii"].
    A placeholder is never replaced again, so running the step twice changes nothing the second time.
    """

    name = "pii"
    options_type = PIIOptions

    def __init__(self, options: PIIOptions | None = None, /, **changes: Any):
        super().__init__(options, **changes)
        self.counts: Counter = Counter()

    def reason(self, doc: Document) -> str | None:
        return None

    def replace(self, text: str) -> tuple[str, Counter]:
        """text with its PII replaced, and how many of each kind were replaced."""
        found: Counter = Counter()

        def substitute(kind: str, options: tuple[str, ...], check_ip: bool):
            def sub(match: re.Match) -> str:
                value = match.group(0)
                if value in options or (check_ip and not is_public_ip(value)):
                    return value
                found[kind] += 1
                return _stable_pick(options, value)
            return sub

        if self.emails and "@" in text:
            text = EMAIL.sub(substitute("email", self.email_replacements, False), text)
        if self.ips and "." in text:
            text = IPV4.sub(substitute("ipv4", self.ip_replacements, True), text)
        if self.ipv6 and ("::" in text or text.count(":") >= 7):
            text = IPV6.sub(substitute("ipv6", self.ipv6_replacements, True), text)
        return text, found

    def apply(self, doc: Document) -> Document:
        text, found = self.replace(doc["text"])
        if not found:
            return doc
        self.counts.update(found)
        meta = dict(doc.get("meta") or {})
        meta["pii"] = dict(sorted(found.items()))
        return {**doc, "text": text, "meta": meta}


def build_pii(value: Any = True) -> PII | None:
    """The PII step from its config value: true or {} (defaults), false / null (off: None), a dict of options or a
    PIIOptions; a bad option raises pydantic's ValidationError naming it."""
    options = _PII_STEP.validate_python(value)
    return PII(options) if options is not None else None

