"""Where the project's own files are: the servers and their builds, the
named scenarios, the default report folder.  Declared once.

From a checkout (the repository's folders next to harness/) everything is
in the repository.  An installed harness (`pip install .`) has no
servers/ or reports/ beside it: its named scenarios are the copy shipped
inside the package (harness/scenarios/), and reports go to ./reports in
the working directory."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKOUT = (ROOT / "scenarios").is_dir() and (ROOT / "harness").is_dir() and (ROOT / "servers").is_dir()
SERVERS_DIR = ROOT / "servers"
BUILD_DIR = ROOT / "build" / "servers"
ASAN_BUILD_DIR = ROOT / "build" / "asan" / "servers"
SCENARIO_DIR = ROOT / "scenarios" if CHECKOUT else Path(__file__).resolve().parent / "scenarios"
REPORTS = ROOT / "reports" if CHECKOUT else Path("reports")
