"""Writing a JSON document to a file or stdout."""
from __future__ import annotations

import json
from typing import TextIO


def dump(data: dict, out: TextIO) -> None:
    json.dump(data, out, indent=2)
    out.write("\n")
