"""Refresh the catalogs after changing UI strings: extract, merge into de, report what lacks a translation.

    .venv/bin/python webui/locale/translate.py

Then add the German for every message it lists, in webui/locale/de/LC_MESSAGES/messages.po or
the .po file of its UI area (tests/test_webui.py fails while one is missing).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "webui" / "locale"


def main() -> int:
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run([str(pybabel), "extract", "-F", "webui/babel.cfg", "-k", "_", "-k", "gettext", "-k", "ngettext:1,2",
                    "--no-location", "--omit-header", "-o", str(LOCALE / "messages.pot"), "."], cwd=ROOT, check=True)
    po = LOCALE / "de" / "LC_MESSAGES" / "messages.po"
    subprocess.run([str(pybabel), "update", "--no-fuzzy-matching", "--omit-header", "-i", str(LOCALE / "messages.pot"),
                    "-o", str(po), "-l", "de"], cwd=ROOT, check=True)
    from babel.messages.pofile import read_po

    from xrm.webui.i18n import read_catalog

    translated = read_catalog("de")  # messages.po and the per-area files
    with po.open("rb") as handle:
        missing = [m.id for m in read_po(handle) if m.id and not translated.get(m.id)]
    for message in missing:
        print("needs German:", message)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
