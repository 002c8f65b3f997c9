"""Reading entity definitions from a file or a folder of *.json files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DefinitionInvalid, Problem

__all__ = ["load_documents"]


def load_documents(path: Path) -> list[tuple[str, Any]]:
    """(source name, parsed JSON) for a file or every *.json in a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
    elif path.exists():
        files = [path]
    else:
        raise DefinitionInvalid([Problem("", f"no such file or folder: {path}")], str(path))
    documents = []
    for file in files:
        try:
            documents.append((str(file), json.loads(file.read_text(encoding="utf-8"))))
        except json.JSONDecodeError as error:
            raise DefinitionInvalid(
                [Problem("", f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")], str(file)
            ) from None
        except UnicodeDecodeError:
            raise DefinitionInvalid([Problem("", "not UTF-8 text")], str(file)) from None
    return documents
