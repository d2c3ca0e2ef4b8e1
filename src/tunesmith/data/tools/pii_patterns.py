"""Detectors for personal and secret data, one small function per type, for :mod:`.scrub`.

Every detector takes a string and returns candidate :class:`Span` s (start, end, type); it
never changes the text. :func:`find_spans` runs them all and resolves overlaps. The rules put
**precision before recall**: an ambiguous digit run (version, date, order number, price) is
left alone rather than redacted, because a training set full of false ``<PHONE>`` tokens is
damaged data too. The rules, by type:

EMAIL
    ``local@domain.tld``: local part of letters, digits and ``. _ % + -``; one or more domain
    labels (letters, digits, inner hyphens) and an alphabetic TLD of 2+ letters. Must not be
    glued to other address characters on either side. ``@mention``, ``a @ b``, ``user@host``
    (no TLD) and ``pkg@1.2.3`` are not e-mails.
PHONE
    Only these shapes: (a) international ``+CC ...`` with 8-15 digits in total (E.164);
    (b) North American ``(NXX) NXX-XXXX`` / ``NXX-NXX-XXXX`` / ``NXX.NXX.XXXX`` /
    ``NXX NXX XXXX`` (area code starting 2-9, one consistent separator, optional ``1-``
    prefix); (c) national numbers with a trunk ``0`` (``020 7946 0958``, ``01 23 45 67 89``,
    ``030-1234567``): 10-11 digits, at least one separator, all separators the same;
    (d) any 7-15 digit run (separators allowed) right after a word such as *phone*, *tel*,
    *mobile*, *cell*, *fax*, *call*, *whatsapp*. Shapes (a)-(c) right after *order*, *invoice*,
    *ref*, *account*, *id*, *ISBN*, *serial*, *tracking*, ... are identifiers, not phones.
    Bare digit runs without context, dates
    (``2024-05-01``, ``01/05/2024``), times, years, version numbers and prices never are.
CREDIT_CARD
    13-19 digits, optionally grouped by one consistent separator (space or dash) in groups
    of four (Amex/Diners ``4-6-5`` / ``4-6-4`` also), that pass the **Luhn** check *and*
    start with a card-network prefix (Visa 4, Mastercard 51-55 / 2221-2720, Amex 34/37,
    Discover 6011/644-649/65, Diners 300-305/36/38, JCB 3528-3589, UnionPay 62, Maestro
    50/56-58/63/67). A run failing Luhn is never a card. Ungrouped runs must be 13-16 digits,
    and a run next to an arithmetic operator (``*``, ``=``, ``+``, ...) is a number in code
    or maths, not a card.
IBAN
    Country code + 2 check digits + BBAN, compact or in space-separated groups, whose length
    is exactly the registered length for that country and whose **mod-97** checksum is 1.
SSN
    US ``AAA-GG-SSSS`` with dashes only (a bare 9-digit run is too ambiguous); area not
    000, 666 or 900-999; group not 00; serial not 0000.
IP_ADDRESS
    IPv4 dotted quads and IPv6 addresses accepted by :mod:`ipaddress` (so no leading zeros
    in IPv4). Not flagged: loopback and unspecified addresses (``127.0.0.1``, ``0.0.0.0``,
    ``::1``, ``::``); IPv4 quads that are more likely version numbers than hosts: netmasks
    (``255.``), ``0.x.x.x``, network addresses ending ``.0``, the reserved 240/4 block,
    quads starting below 10 with every part below 100 (``1.16.4.3``, section ``5.2.1.1``;
    this also skips well-known resolvers such as ``8.8.8.8``, which are not personal), quads
    followed by ``-`` (Debian versions ``3.6.11.1-2``), quads
    right after *version*, *v*, *release*, *build*, *python*, ``==``, ``>=`` (``4.6.2.0``,
    ``version 1.2.3.4``, ``pkg==1.2.3.4``), glued to a letter (``v1.2.3.4``) or part of a
    longer dotted number (``1.2.3.4.5``); and IPv6 candidates without a digit (``ABC::DEF``
    is more likely code than an address).
SECRET
    (1) ``-----BEGIN ... PRIVATE KEY-----`` blocks up to the matching END line (or the end
    of the string if it was truncated); (2) JWTs ``eyJ<hdr>.<payload>.<sig>``; (3) tokens
    with a known prefix: OpenAI/Anthropic ``sk-``/``sk-proj-``/``sk-ant-``, GitHub ``ghp_``
    ``gho_`` ``ghu_`` ``ghs_`` ``ghr_`` ``github_pat_``, Slack ``xox[abprs]-``, AWS key ids
    ``AKIA``/``ASIA`` + 16, Google ``AIza`` + 35, Hugging Face ``hf_``, Stripe
    ``sk_live_``/``rk_live_``, GitLab ``glpat-``; (4) high-entropy strings: a run of
    ``[A-Za-z0-9+/_-]`` (+ ``=`` padding) of 32-256 characters with lower case, upper case
    *and* digits, Shannon entropy of at least ``min(4.5, 0.8 * log2(length))`` bits per
    character, not word-like (at most half of it in camel-case words of 4+ letters), changing
    character class at 45%+ of positions (random text: ~65%; ``Wav2Vec2ForPreTraining``:
    far less) and with a separator-free piece of 10+ characters (``Qwen/Qwen3-MoE-15B-A2B``
    has none). Right after *key*, *secret*, *token*, *password*, *auth...*, *bearer*,
    *credential*, *cookie* (``"api_key": "..."``, ``token=...``) 16+ characters with two
    character classes, entropy of ``min(3.0, 0.7 * log2(length))`` and the word rule
    suffice (no all-lowercase word of 4+ letters between separators), so hex keys are
    caught there.
    Paths (a ``/``-separated run with an all-lowercase word in it) are judged part by part.
    Deliberately **not** secrets without such context: UUIDs, hex digests and git commit ids
    (no mixed case; identifiers and checksums, very common in code and tool-call data), and
    random strings shorter than 32 characters (too often ids); and never runs over 256
    characters (encoded payloads such as ``data:`` URIs, not credentials). Measured on random
    base62/base64 strings the rule catches ~94% at 32 characters, ~98% at 48+.

Overlaps are resolved by priority (the order of :data:`DETECTORS`), then by position: the
first accepted span wins and any candidate overlapping it is dropped.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from .iban_lengths import IBAN_LENGTHS

EMAIL, PHONE, CREDIT_CARD, IBAN = "EMAIL", "PHONE", "CREDIT_CARD", "IBAN"
SSN, IP_ADDRESS, SECRET = "SSN", "IP_ADDRESS", "SECRET"
TYPES = (EMAIL, PHONE, CREDIT_CARD, IBAN, SSN, IP_ADDRESS, SECRET)


class Span(NamedTuple):
    """A detected ``text[start:end]`` of type ``kind`` (one of :data:`TYPES`)."""

    start: int
    end: int
    kind: str


# ---- secrets ------------------------------------------------------------------------------

_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)
_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]{7,}\.[A-Za-z0-9_-]*")
# Token bodies must contain a digit (checked below) so hyphenated words such as
# "sk-learn-contrib-imbalanced" are not taken for keys.
_PREFIXED_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|hf_[A-Za-z0-9]{30,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r")(?![A-Za-z0-9_-])"
)
_ENTROPY_RUN = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_CAMEL_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_SEPARATORS = re.compile(r"[/+_-]")
# A value right after one of these words is taken to be a credential ("api_key": "...",
# token=..., Authorization: Bearer ...), so a weaker randomness signal suffices.
_SECRET_CONTEXT = re.compile(
    r"(?i)(?:key|secret|token|passw(?:or)?d|pwd|auth\w*|bearer|credentials?|cookie)"
    r"[\s\"':=]{0,5}$"
)
MIN_SECRET_LENGTH, MIN_CONTEXT_SECRET_LENGTH, MAX_SECRET_LENGTH = 32, 16, 256


def find_private_keys(text: str) -> list[Span]:
    """PEM private-key blocks, BEGIN line through END line (or to the end if truncated)."""
    return [Span(m.start(), m.end(), SECRET) for m in _PRIVATE_KEY.finditer(text)]


def find_jwts(text: str) -> list[Span]:
    """JSON Web Tokens: base64url ``{"``-header (``eyJ``), payload and signature."""
    return [Span(m.start(), m.end(), SECRET) for m in _JWT.finditer(text)]


def find_prefixed_tokens(text: str) -> list[Span]:
    """API keys with a vendor prefix; the body must hold a digit (real keys always do)."""
    return [
        Span(m.start(), m.end(), SECRET)
        for m in _PREFIXED_TOKEN.finditer(text)
        if any(ch.isdigit() for ch in m.group())
    ]


def find_high_entropy(text: str) -> list[Span]:
    """Random-looking tokens (see the module docstring for the exact rule)."""
    spans = []
    for m in _ENTROPY_RUN.finditer(text):
        context = bool(_SECRET_CONTEXT.search(text, max(0, m.start() - 30), m.start()))
        offset = m.start()
        for part in _path_parts(m.group()):
            if is_high_entropy_token(part, after_secret_word=context):
                spans.append(Span(offset, offset + len(part), SECRET))
            offset += len(part) + 1
    return spans


def _path_parts(token: str) -> list[str]:
    # "github.com/org/repo/blob/<hash>/file" and "Org/model-name-7b" are paths: judge their
    # parts one by one. Random base64 with '/' in it rarely holds an all-lowercase word of
    # 3+ letters between separators.
    parts = token.split("/")
    if len(parts) > 1 and any(
        len(piece) >= 3 and piece.isalpha() and piece.islower() for piece in _SEPARATORS.split(token)
    ):
        return parts
    return [token]


def is_high_entropy_token(token: str, after_secret_word: bool = False) -> bool:
    """True if ``token`` looks like a random credential (rules in the module docstring).

    ``after_secret_word``: the token follows a word such as *key*, *token*, *password*,
    which lowers the bar (16 characters, two character classes suffice).
    """
    body = token.rstrip("=")
    minimum = MIN_CONTEXT_SECRET_LENGTH if after_secret_word else MIN_SECRET_LENGTH
    if not minimum <= len(body) <= MAX_SECRET_LENGTH:
        return False
    classes = [any(c.islower() for c in body), any(c.isupper() for c in body), any(c.isdigit() for c in body)]
    # Without context, lower + upper + digit excludes hex digests, UUIDs, slugs, CONSTANTS.
    if sum(classes) < (2 if after_secret_word else 3):
        return False
    if after_secret_word:
        # Hex keys top out at 4 bits per character, so the bar is lower here; a lowercase
        # word between separators means code ("key = apply_rotary_pos_emb(...").
        return (
            shannon_entropy(body) >= min(3.0, 0.7 * math.log2(len(body)))
            and _word_fraction(body) <= 0.5
            and not any(
                len(piece) >= 4 and piece.isalpha() and piece.islower() for piece in _SEPARATORS.split(body)
            )
        )
    if shannon_entropy(body) < min(4.5, 0.8 * math.log2(len(body))):
        return False
    return (
        _word_fraction(body) <= 0.5
        and _class_changes(body) >= 0.45
        and max(len(part) for part in _SEPARATORS.split(body)) >= 10
    )


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution (0 for "")."""
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


def _class_changes(token: str) -> float:
    """Share of adjacent character pairs that change class (lower/upper/digit/other).

    Random base62/64 text changes class at about 65% of positions (5th percentile ~48%);
    identifiers such as ``Wav2Vec2ForPreTraining`` stay within a class for whole words.
    """

    def kind(ch: str) -> int:
        return 0 if ch.islower() else 1 if ch.isupper() else 2 if ch.isdigit() else 3

    changes = sum(kind(a) != kind(b) for a, b in zip(token, token[1:]))
    return changes / max(1, len(token) - 1)


def _word_fraction(token: str) -> float:
    # Identifiers and paths are made of words ("Transformer", "Encoder"); random strings
    # rarely hold letter runs of 4+ in camel-case shape (about 5% of 24-char random strings
    # exceed 0.5, an accepted loss of recall).
    words = sum(len(w) for w in _CAMEL_WORD.findall(token) if len(w) >= 4)
    return words / len(token)


# ---- e-mail -------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
)


def find_emails(text: str) -> list[Span]:
    """E-mail addresses; leading dots of the local part are left out of the span."""
    spans = []
    for m in _EMAIL.finditer(text):
        start = m.start() + len(m.group()) - len(m.group().lstrip("."))
        if text[start] != "@":
            spans.append(Span(start, m.end(), EMAIL))
    return spans


# ---- IBAN ---------------------------------------------------------------------------------

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?=[ ]?[A-Z0-9])")


def find_ibans(text: str) -> list[Span]:
    """IBANs of the registered length for their country with a valid mod-97 checksum."""
    spans = []
    for m in _IBAN_START.finditer(text):
        length = IBAN_LENGTHS.get(m.group()[:2])
        end = _iban_end(text, m.start(), length) if length else None
        if end is not None and iban_checksum_ok(text[m.start() : end].replace(" ", "")):
            spans.append(Span(m.start(), end, IBAN))
    return spans


def _iban_end(text: str, start: int, length: int) -> int | None:
    """End of ``length`` alphanumerics from ``start`` (single spaces allowed between them),
    or None if the text runs out or the IBAN would continue into more alphanumerics."""
    count, i = 0, start
    while count < length:
        if i < len(text) and text[i] == " " and count and i + 1 < len(text):
            i += 1  # one space between groups; a second space ends the candidate below
        if i >= len(text) or not (text[i].isascii() and text[i].isalnum()):
            return None
        count, i = count + 1, i + 1
    return None if i < len(text) and text[i].isalnum() else i


def iban_checksum_ok(iban: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters -> 10..35,
    and the number mod 97 must be 1."""
    rearranged = iban[4:] + iban[:4]
    if not rearranged.isalnum() or not rearranged.isascii():
        return False
    return int("".join(str(int(ch, 36)) for ch in rearranged.upper())) % 97 == 1


# ---- credit cards -------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.,/+-])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![ -]?\d)(?![\w/]|[.,]\d)")
_CARD_GROUPS = {
    (4, 4, 4, 4),
    (4, 4, 4, 4, 3),
    (4, 6, 5),
    (4, 6, 4),
    (4, 4, 4, 1),
    (4, 4, 4, 2),
    (4, 4, 4, 3),
    (4, 4, 4, 4, 1),
    (4, 4, 4, 4, 2),
    (4, 4, 5),
    (4, 4, 4, 4, 4),
}


def find_credit_cards(text: str) -> list[Span]:
    """Card numbers: network prefix, consistent 4-digit grouping (or none), Luhn-valid."""
    spans = []
    for m in _CARD.finditer(text):
        candidate = m.group()
        digits = candidate.replace(" ", "").replace("-", "")
        if (
            _card_grouping_ok(candidate)
            and _card_prefix_ok(digits)
            and luhn_ok(digits)
            and not _in_arithmetic(text, m.start(), m.end())
        ):
            spans.append(Span(m.start(), m.end(), CREDIT_CARD))
    return spans


def _in_arithmetic(text: str, start: int, end: int) -> bool:
    # Big integers in code and maths ("2447509765625*q**2") pass Luhn one time in ten.
    before, after = text[:start].rstrip()[-1:], text[end:].lstrip()[:1]
    return bool(before and before in "*^=+-/<>%") or bool(after and after in "*^=+-/<>%")


def _card_grouping_ok(candidate: str) -> bool:
    separators = {ch for ch in candidate if not ch.isdigit()}
    if not separators:
        return len(candidate) <= 16  # 17-19 digit cards exist but are rarely written bare
    if len(separators) > 1:
        return False  # "4111-1111 1111-1111" is not how anyone writes a card number
    groups = tuple(len(g) for g in candidate.split(separators.pop()))
    return groups in _CARD_GROUPS


def _card_prefix_ok(digits: str) -> bool:
    two, three, four = int(digits[:2]), int(digits[:3]), int(digits[:4])
    return (
        digits[0] == "4"
        or 51 <= two <= 55
        or 2221 <= four <= 2720
        or two in (34, 37)
        or four == 6011
        or 644 <= three <= 649
        or two == 65
        or 300 <= three <= 305
        or two in (36, 38, 62, 50, 56, 57, 58, 63, 67)
        or 3528 <= four <= 3589
    )


def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        value = int(ch) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


# ---- SSN ----------------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w.-])(\d{3})-(\d{2})-(\d{4})(?![\w-]|\.\d)")


def find_ssns(text: str) -> list[Span]:
    """US social security numbers ``AAA-GG-SSSS`` with valid area/group/serial numbers."""
    spans = []
    for m in _SSN.finditer(text):
        area, group, serial = m.groups()
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            spans.append(Span(m.start(), m.end(), SSN))
    return spans


# ---- IP addresses -------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w-]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[A-Za-z0-9]+)?(?![\w:]|\.\d)"
)


def _ipv6_shaped(candidate: str) -> bool:
    # "ABC::DEF" (code) and "5::2" (a Python slice) parse as IPv6; real addresses have a
    # digit and three groups or a full four-digit group ("fe80::1", "2001:db8::1").
    groups = [g for g in candidate.split("%")[0].split(":") if g]
    return any(ch.isdigit() for ch in candidate) and (len(groups) >= 3 or any(len(g) == 4 for g in groups))


_VERSION_CONTEXT = re.compile(
    r"(?i)(?:\b(?:version|ver|release|build|firmware|python|v)\W{0,2}|[=<>~^]=?\s*)$"
)


def find_ip_addresses(text: str) -> list[Span]:
    """IPv4 and IPv6 addresses, minus loopback / unspecified / netmask (see module doc)."""
    spans = []
    for pattern, version in ((_IPV4, 4), (_IPV6, 6)):
        for m in pattern.finditer(text):
            if _is_reportable_ip(m.group(), version) and not _VERSION_CONTEXT.search(
                text, max(0, m.start() - 12), m.start()
            ):
                spans.append(Span(m.start(), m.end(), IP_ADDRESS))
    return spans


def _is_reportable_ip(candidate: str, version: int) -> bool:
    if version == 6 and not _ipv6_shaped(candidate):
        return False
    try:
        address = ipaddress.ip_address(candidate.split("%")[0])
    except ValueError:
        return False
    if address.version != version:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    if any(a.is_loopback or a.is_unspecified for a in (address, mapped) if a is not None):
        return False
    if version == 6:
        return True
    # Version numbers look like dotted quads; these never name a host: netmasks (255.),
    # "this network" (0.), network addresses (.0) and the reserved 240/4 block.
    octets = [int(part) for part in candidate.split(".")]
    if octets[0] < 10 and max(octets) < 100:
        return False  # 1.16.4.3, 5.2.1.1: versions and section numbers, far likelier than hosts
    return octets[0] not in (0, 255) and octets[-1] != 0 and not address.is_reserved


# ---- phone numbers ------------------------------------------------------------------------

# A phone is not glued to other number-ish text, nor the middle of a longer digit grouping
# ("DE89 3704 0044 0532 0130 01" holds no phone number).
_NOT_BEFORE = r"(?<![\w+#$€£¥.,/:-])(?<!\d[ .-])"
_NOT_AFTER = r"(?![\w/%:-]|[ .,-]\d)"
_PHONE_INTL = re.compile(_NOT_BEFORE + r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}(?!\d)" + _NOT_AFTER)
_PHONE_NANP = re.compile(
    _NOT_BEFORE + r"(?:1([-. ]))?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}([-. ]))\d{3}"
    r"(?(2)\2|[-. ])\d{4}" + _NOT_AFTER
)
_PHONE_TRUNK = re.compile(_NOT_BEFORE + r"0[1-9]\d{0,4}(?:[ -]\d{2,8}){1,4}" + _NOT_AFTER)
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|cellphone|fax|call|whatsapp|sms)\b"
    r"(?:\s*(?:number|no\.?|nr\.?|#))?(?:\s*(?:is|at|on|me at|me on))?\s*[:=]?\s*"
    r"(\+?\(?\d[\d ().-]{5,22}\d)(?![\w/%:-]|[.,]\d)"
)
_DATE_OR_TIME = re.compile(
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
    r"|\d{1,2}:\d{2}"
)


# A number right after one of these words is an identifier, not a phone ("order 555-123-4567").
_ID_CONTEXT = re.compile(
    r"(?i)\b(?:order|invoice|ref|reference|account|acct|id|isbn|issn|serial|tracking|ticket"
    r"|case|transaction|customer|sku|item|part|model|build|patent)\b"
    r"(?:\W{0,3}(?:no|nr|number|num|id))?\W{0,5}$"
)


def find_phones(text: str) -> list[Span]:
    """Phone numbers in the shapes listed in the module docstring; nothing else."""
    spans = [m.span() for m in _PHONE_INTL.finditer(text) if 8 <= _digit_count(m.group()) <= 15]
    spans += [m.span() for m in _PHONE_NANP.finditer(text)]
    spans += [
        m.span()
        for m in _PHONE_TRUNK.finditer(text)
        if 10 <= _digit_count(m.group()) <= 11 and _one_separator(m.group())
    ]
    spans = [(start, end) for start, end in spans if not _ID_CONTEXT.search(text, max(0, start - 30), start)]
    spans += [
        m.span(1)
        for m in _PHONE_CONTEXT.finditer(text)
        if 7 <= _digit_count(m.group(1)) <= 15 and not _DATE_OR_TIME.search(m.group(1))
    ]
    return [Span(start, end, PHONE) for start, end in spans]


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _one_separator(text: str) -> bool:
    return len({ch for ch in text if not ch.isdigit()}) == 1


# ---- all together -------------------------------------------------------------------------

# Highest priority first: a private key or token may contain digit runs or '@', an e-mail
# may contain digits; the entropy rule is the weakest signal and runs last.
DETECTORS: tuple[Callable[[str], list[Span]], ...] = (
    find_private_keys,
    find_jwts,
    find_prefixed_tokens,
    find_emails,
    find_ibans,
    find_credit_cards,
    find_ssns,
    find_ip_addresses,
    find_phones,
    find_high_entropy,
)


def find_spans(text: str) -> list[Span]:
    """All non-overlapping findings in ``text``, sorted by start (see module docstring)."""
    accepted: list[Span] = []  # kept sorted and non-overlapping, so bisect finds neighbours
    for detect in DETECTORS:
        for span in detect(text):
            index = bisect.bisect_left(accepted, span)
            clear_before = index == 0 or accepted[index - 1].end <= span.start
            clear_after = index == len(accepted) or span.end <= accepted[index].start
            if span.end > span.start and clear_before and clear_after:
                accepted.insert(index, span)
    return accepted
