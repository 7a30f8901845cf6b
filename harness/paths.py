"""Where the project's own files are: the servers and their builds, the
named scenarios, the default report folder.  Declared once."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVERS_DIR = ROOT / "servers"
BUILD_DIR = ROOT / "build" / "servers"
ASAN_BUILD_DIR = ROOT / "build" / "asan" / "servers"
SCENARIO_DIR = ROOT / "scenarios"
REPORTS = ROOT / "reports"
