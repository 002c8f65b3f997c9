"""Standard field groups an entity switches on with one `x-xrm` key.

`"consent": {"channels": ["email", "phone"]}` adds, per channel, the fields
marketing needs to prove permission (GDPR Art. 7: who allowed which channel,
when, and where the consent came from):

  consent_<channel>          select granted / refused / withdrawn (empty: never asked)
  consent_<channel>_at       datetime, set automatically when the consent changes
  consent_<channel>_source   text, e.g. "web form", "trade fair 2025", "phone call"

The fields are ordinary fields (columns, filters, import, export, audit,
OpenAPI), generated from the definition rather than written into it, so the
stored document stays what the admin wrote and adding a channel later is a
plain, safe "add field" change.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONSENT_CHANNELS", "CONSENT_STATES", "consent_properties"]

CONSENT_CHANNELS: dict[str, dict[str, str]] = {
    "email": {"en": "E-mail", "de": "E-Mail"},
    "phone": {"en": "Phone", "de": "Telefon"},
    "sms": {"en": "SMS", "de": "SMS"},
    "letter": {"en": "Letter", "de": "Brief"},
    "messenger": {"en": "Messenger", "de": "Messenger"},
}

CONSENT_STATES: dict[str, dict[str, str]] = {
    "granted": {"en": "Granted", "de": "Erteilt"},
    "refused": {"en": "Refused", "de": "Abgelehnt"},
    "withdrawn": {"en": "Withdrawn", "de": "Widerrufen"},
}


def consent_properties(channels: list[str]) -> dict[str, dict[str, Any]]:
    """Field name -> property schema of the consent group, in form order."""
    properties: dict[str, dict[str, Any]] = {}
    for channel in channels:
        label = CONSENT_CHANNELS[channel]
        name = f"consent_{channel}"
        properties[name] = {
            "type": "string",
            "enum": list(CONSENT_STATES),
            "x-xrm": {
                "label": {"en": f"{label['en']} consent", "de": f"Einwilligung {label['de']}"},
                "option_labels": CONSENT_STATES,
                "help": {
                    "en": f"May we contact this person by {label['en'].lower()}? Empty: never asked.",
                    "de": f"Dürfen wir diese Person per {label['de']} kontaktieren? Leer: nie gefragt.",
                },
            },
        }
        properties[f"{name}_at"] = {
            "type": "string",
            "format": "date-time",
            "x-xrm": {
                "label": {"en": f"{label['en']} consent changed at", "de": f"Einwilligung {label['de']} geändert am"},
                "set_on_change_of": name,
            },
        }
        properties[f"{name}_source"] = {
            "type": "string",
            "maxLength": 200,
            "x-xrm": {
                "label": {"en": f"{label['en']} consent source", "de": f"Quelle der Einwilligung {label['de']}"},
                "help": {"en": "Where the consent was given, e.g. web form, trade fair, phone call",
                         "de": "Wo die Einwilligung erteilt wurde, z. B. Webformular, Messe, Telefonat"},
            },
        }
    return properties
