"""The project's own servers: servers/NAME/ with a manifest.toml.

A bug pattern folder holds buggy.c and fixed.c and a manifest saying what the
buggy variant must show (verdict, finding kind, the function and file the
finding must point at) and which scenario triggers it.  A single-variant
server (servers/echo/) has one program, NAME.c, and a manifest without an
expectation for a buggy variant.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..model import DETECTORS, Verdict
from ..paths import ASAN_BUILD_DIR, BUILD_DIR, SERVERS_DIR


_PATTERN_KEYS = {"pattern", "title", "seed", "seed_story", "mechanism", "trigger", "client",
                 "fix", "signature", "detectors", "scenarios", "buggy", "fixed", "unsupported"}
_EXPECT_KEYS = {"verdict", "kind", "function", "file", "native"}


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class Expectation:
    verdict: Verdict
    kind: str | None = None          # finding kind that must be present
    function: str | None = None      # a frame of the finding must be in this function
    file: str | None = None          # ... in this file (the pair's own source)
    native: str | None = None        # how it fails without valgrind, e.g. 'SIGABRT'


@dataclass
class Pattern:
    name: str
    directory: Path
    title: str = ""
    seed: str = ""
    seed_story: str = ""
    mechanism: str = ""
    trigger: str = "echo"
    client: str = ""
    fix: str = ""
    signature: str = ""
    detectors: list[str] = field(default_factory=lambda: ["memcheck"])
    scenarios: list[str] | None = None       # None: every named scenario
    unsupported: dict[str, str] = field(default_factory=dict)   # detector -> why it cannot run this
    expect: dict[str, Expectation] = field(default_factory=dict)
    # variant -> detector -> expectation, from [buggy.asan] style tables
    detector_expect: dict[str, dict[str, Expectation]] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        if (self.directory / "buggy.c").exists():
            return ["buggy", "fixed"]
        return ["main"]

    @property
    def is_pair(self) -> bool:
        return self.variants == ["buggy", "fixed"]

    @property
    def source_dirs(self) -> list[str]:
        """Where the program's own sources are: its folder and servers/common."""
        return [str(self.directory), str(self.directory.parent / "common")]

    def binary(self, variant: str, build_dir: Path | None = None, detector: str = "memcheck") -> Path:
        """The built program; the asan detector runs the sanitizer tree."""
        if build_dir is None:
            build_dir = ASAN_BUILD_DIR if detector == "asan" else BUILD_DIR
        if variant not in self.variants:
            raise ManifestError(f"pattern {self.name!r} has no variant {variant!r} "
                                f"(it has: {', '.join(self.variants)})")
        stem = self.name if variant == "main" else variant
        return build_dir / self.name / stem

    @property
    def native_failure(self) -> str | None:
        """How the buggy variant fails without any detector ('SIGABRT'...)."""
        buggy = self.expect.get("buggy")
        return buggy.native if buggy else None

    def source(self, variant: str) -> Path:
        stem = self.name if variant == "main" else variant
        return self.directory / f"{stem}.c"

    def expectation(self, variant: str, detector: str = "memcheck") -> Expectation | None:
        """What `variant` must show under `detector`: clean for a fixed
        variant; for a buggy one its [buggy.DETECTOR] table, else [buggy] for
        a detector the manifest names in `detectors`, else None (that detector
        is not expected to see this bug)."""
        if variant != "buggy":
            return self.expect.get(variant, Expectation(Verdict.CLEAN))
        special = self.detector_expect.get(variant, {}).get(detector)
        if special is not None:
            return special
        if detector in self.detectors:
            return self.expect.get(variant)
        return None


def _expectation(path: Path, key: str, raw: object) -> Expectation:
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: [{key}]: expected a table")
    unknown = set(raw) - _EXPECT_KEYS - set(DETECTORS)
    if unknown:
        raise ManifestError(f"{path}: [{key}]: unknown key {sorted(unknown)[0]!r} "
                            f"(known: {', '.join(sorted(_EXPECT_KEYS))})")
    try:
        verdict = Verdict.from_label(str(raw.get("verdict", "clean")))
    except ValueError as exc:
        raise ManifestError(f"{path}: [{key}] key 'verdict': {exc}") from None
    return Expectation(verdict=verdict, kind=raw.get("kind"), function=raw.get("function"),
                       file=raw.get("file"), native=raw.get("native"))


def load_pattern(directory: Path) -> Pattern:
    path = directory / "manifest.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: TOML syntax: {exc}") from None
    unknown = set(data) - _PATTERN_KEYS
    if unknown:
        raise ManifestError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    if data.get("pattern") != directory.name:
        raise ManifestError(f"{path}: key 'pattern' must be the folder's name {directory.name!r}")
    pattern = Pattern(name=directory.name, directory=directory)
    for key in ("title", "seed", "seed_story", "mechanism", "trigger", "client", "fix", "signature"):
        if key in data:
            if not isinstance(data[key], str):
                raise ManifestError(f"{path}: key {key!r}: expected a string")
            setattr(pattern, key, data[key])
    for key in ("detectors", "scenarios"):
        if key in data:
            if not (isinstance(data[key], list) and all(isinstance(x, str) for x in data[key])):
                raise ManifestError(f"{path}: key {key!r}: expected a list of strings")
            setattr(pattern, key, list(data[key]))
    for variant in ("buggy", "fixed"):
        if variant in data:
            pattern.expect[variant] = _expectation(path, variant, data[variant])
            for detector in DETECTORS:
                if detector in data[variant]:
                    pattern.detector_expect.setdefault(variant, {})[detector] = _expectation(
                        path, f"{variant}.{detector}", data[variant][detector])
    unsupported = data.get("unsupported", {})
    if not isinstance(unsupported, dict) or not all(isinstance(v, str) for v in unsupported.values()):
        raise ManifestError(f"{path}: [unsupported]: expected detector = \"why\" pairs")
    pattern.unsupported = dict(unsupported)
    unknown_detectors = [d for d in list(pattern.detectors) + list(unsupported) if d not in DETECTORS]
    if unknown_detectors:
        raise ManifestError(f"{path}: key 'detectors': unknown detector {unknown_detectors[0]!r} "
                            f"(known: {', '.join(DETECTORS)})")
    if pattern.is_pair and "buggy" not in pattern.expect:
        raise ManifestError(f"{path}: a buggy/fixed pair needs a [buggy] table")
    return pattern


def all_patterns(servers_dir: Path = SERVERS_DIR) -> list[Pattern]:
    return [load_pattern(d) for d in sorted(servers_dir.iterdir())
            if (d / "manifest.toml").exists()]


def find_pattern(name: str, servers_dir: Path = SERVERS_DIR) -> Pattern:
    directory = servers_dir / name
    if not (directory / "manifest.toml").exists():
        known = ", ".join(p.name for p in all_patterns(servers_dir))
        raise ManifestError(f"no server named {name!r} (known: {known})")
    return load_pattern(directory)
