"""IBAN rules (ISO 13616): normal form, country lengths, the mod-97 check digits, display in groups of 4."""

from __future__ import annotations

import re

__all__ = ["IBAN_LENGTHS", "PATTERN", "format_iban", "iban_problem", "mask_iban", "normalise_iban"]

# Length of the IBAN per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

PATTERN = r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"
"""The normal form's shape (for the JSON Schema, OpenAPI and the table's CHECK constraint)."""

_SEPARATORS = re.compile(r"[\s\u00a0\u202f-]+")


def normalise_iban(text: str) -> str:
    """Without spaces (or hyphens), upper case: "de89 3704 0044 0532 0130 00" -> "DE89370400440532013000"."""
    return _SEPARATORS.sub("", text).upper()


def iban_problem(iban: str) -> str | None:
    """Why a normalised IBAN is not valid, or None if it is."""
    if not re.fullmatch(r"[A-Z0-9]*", iban):
        return f"{iban!r} is not a valid IBAN: only letters and digits are allowed"
    country = iban[:2]
    if len(iban) < 4 or not country.isalpha() or not iban[2:4].isdigit():
        return f"{iban!r} is not a valid IBAN: it starts with a country code and two check digits (e.g. DE89...)"
    expected = IBAN_LENGTHS.get(country)
    if expected is None:
        return f"{iban!r} is not a valid IBAN: {country} is not a country that uses IBANs"
    if len(iban) != expected:
        return f"{iban!r} is not a valid IBAN: an IBAN from {country} has {expected} characters, this one has {len(iban)}"
    rearranged = iban[4:] + iban[:4]
    number = int("".join(str(int(c, 36)) for c in rearranged))
    if number % 97 != 1:
        return f"{iban!r} is not a valid IBAN: the check digits do not match (ISO 13616 mod-97 checksum); check for a typo"
    return None


def format_iban(iban: str) -> str:
    """In groups of 4 for reading: "DE89 3704 0044 0532 0130 00"."""
    compact = normalise_iban(iban)
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def mask_iban(iban: str) -> str:
    """Country, check digits and the last 4 characters only: "DE89 **** **** **** **30 00"."""
    compact = normalise_iban(iban)
    masked = compact[:4] + "*" * max(len(compact) - 8, 0) + compact[-4:]
    return format_iban(masked)
