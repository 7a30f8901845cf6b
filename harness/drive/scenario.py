"""Scenario files: scripted client behaviour, as data (TOML, read with tomllib).

A scenario is a list of steps played in order against one server, plus a few
settings.  Everything is validated before anything runs: an unknown key or
step, a wrong type, an out-of-range value or a connection that was never
opened gives one ScenarioError naming the file, the step and the key.
Nothing in a scenario is ever run by a shell.

The steps, their keys and their limits are declared once, in STEPS below; the
docs' step table (docs/scenarios.md) is checked against it by the tests.
"""
from __future__ import annotations

import math
import re
import signal
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..judge.verdict import LeakPolicy
from ..model import Verdict
from ..paths import SCENARIO_DIR
from .launch import TargetError, check_loopback

MAX_PAUSE = 10.0
MAX_TIMEOUT = 600.0
MAX_SEND = 4 << 30       # bytes one send step may write in all
MAX_READ = 1 << 20       # default bound of an expect that reads to a delimiter or a pattern
PROTOCOLS = "protocols"   # scenarios/protocols/: written for one protocol, not in the matrix
DRAIN_BYTES = 65536      # default bound of a drain (one read of a fuzz)
MIN_QUIET_MS = 50        # /proc counts CPU time in 10 ms ticks: a shorter quiet proves nothing
ENDINGS = ("close", "reset", "half_close", "stall_reset", "idle")


class ScenarioError(ValueError):
    """A scenario that cannot be run, with where it went wrong."""

    def __init__(self, source: str, where: str, message: str) -> None:
        self.source = source
        self.where = where
        self.message = message
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")


# -- value checks -----------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """One key of a step: its type, whether it is required, its range."""

    kind: str                      # 'int', 'float', 'str', 'bool', 'names', 'endings', 'name'
    required: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    doc: str = ""


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("str", "name"):
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("names", "endings"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise AssertionError(kind)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string",
               "name": "a connection name", "bool": "true or false",
               "names": "a list of connection names", "endings": "a list of endings"}


def _check_value(key: str, spec: Key, value: Any) -> Any:
    if not _type_ok(spec.kind, value):
        raise ValueError(f"key '{key}': expected {_TYPE_WORDS[spec.kind]}, got {value!r}")
    if spec.kind in ("int", "float"):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"key '{key}': {value} is not a finite number")
        if spec.low is not None and value < spec.low:
            raise ValueError(f"key '{key}': {value} is below the minimum {spec.low:g}")
        if spec.high is not None and value > spec.high:
            raise ValueError(f"key '{key}': {value} is above the maximum {spec.high:g}")
    if spec.choices and spec.kind == "str" and value not in spec.choices:
        raise ValueError(f"key '{key}': {value!r} is not one of {', '.join(spec.choices)}")
    if spec.kind == "endings":
        bad = [v for v in value if v not in ENDINGS]
        if bad or not value:
            raise ValueError(f"key '{key}': {bad or '[]'} not allowed; "
                             f"expected some of {', '.join(ENDINGS)}")
    if spec.kind in ("names", "name"):
        names = value if isinstance(value, list) else [value]
        for n in names:
            if not n or not n.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"key '{key}': {n!r} is not a valid connection name "
                                 "(letters, digits, '_' and '-')")
    return value


CONN = Key("name", required=True, doc="connection (or group) name")
TIMEOUT = Key("float", low=0.001, high=MAX_TIMEOUT, doc="deadline in seconds (scaled)")
MAY_FAIL = Key("bool", default=False, doc="a failure of this step is noted, not counted")

# step name -> (keys, one-line description)
STEPS: dict[str, tuple[dict[str, Key], str]] = {
    "open": ({
        "conn": Key("name", doc="name of the connection, or of the group with `count`"),
        "conns": Key("names", doc="several names at once"),
        "count": Key("int", low=1, high=10000, default=1, doc="open a group: NAME1..NAMEn"),
        "rcvbuf": Key("int", low=1, high=64 << 20, doc="SO_RCVBUF set before connecting"),
        "nodelay": Key("bool", default=False,
                       doc="TCP_NODELAY: every write leaves at once (no Nagle)"),
        "timeout": TIMEOUT, "may_fail": MAY_FAIL,
    }, "open connections, named so later steps address them"),
    "send": ({
        "conn": CONN,
        "text": Key("str", doc="text to send (UTF-8)"),
        "hex": Key("str", doc="bytes to send, as hex"),
        "size": Key("int", low=1, high=256 << 20, doc="generate this many bytes of lines"),
        "line_length": Key("int", low=0, high=1 << 20, default=64,
                           doc="with `size`: line length incl. newline (0: no newlines)"),
        "repeat": Key("int", low=1, high=1_000_000, default=1, doc="send it this many times"),
        "chunk": Key("str", choices=("all", "line", "byte"), default="all",
                     doc="one write, a line per write, or a byte per write"),
        "timeout": TIMEOUT, "may_fail": MAY_FAIL,
    }, "send text, bytes or generated lines"),
    "expect": ({
        "conn": CONN,
        "echo": Key("bool", default=False, doc="everything sent since the last expect"),
        "text": Key("str", doc="exactly this text"),
        "hex": Key("str", doc="exactly these bytes"),
        "size": Key("int", low=1, high=256 << 20, doc="this many bytes, any content"),
        "line": Key("bool", default=False, doc="one line, any content"),
        "until": Key("str", doc="read up to and including this delimiter (UTF-8 text)"),
        "prefix": Key("str", doc="what is read starts with this text"),
        "hex_prefix": Key("str", doc="what is read starts with these bytes (hex)"),
        "match": Key("str", doc="a regular expression on what is read (bytes; re.search)"),
        "max_bytes": Key("int", low=1, high=256 << 20, default=MAX_READ,
                         doc="`line`, `until`, `match`: fail past this many bytes"),
        "timeout": TIMEOUT, "may_fail": MAY_FAIL,
    }, "read a reply and check it, with a deadline"),
    "stall": ({
        "conn": CONN,
        "rcvbuf": Key("int", low=1, high=1 << 20, default=1,
                      doc="receive buffer to shrink to (the kernel's minimum applies)"),
        "may_fail": MAY_FAIL,
    }, "stop reading: shrink the receive buffer so the server's replies queue"),
    "wait_read": ({
        "conn": CONN,
        "min_queued": Key("int", low=0, high=1 << 30, default=0,
                          doc="echo servers: reply bytes that must still sit in the server"),
        "timeout": TIMEOUT, "may_fail": MAY_FAIL,
    }, "wait until the server has read all that was sent (checked in the kernel's tables)"),
    "drain": ({
        "conn": CONN,
        "max_bytes": Key("int", low=1, high=256 << 20, default=DRAIN_BYTES,
                         doc="read at most this many bytes"),
        "may_fail": MAY_FAIL,
    }, "read what has already arrived, without waiting, and discard it"),
    "half_close": ({"conn": CONN, "may_fail": MAY_FAIL},
                   "shutdown(SHUT_WR): send FIN, keep reading"),
    "close": ({"conn": CONN, "may_fail": MAY_FAIL}, "close the connection (FIN)"),
    "reset": ({"conn": CONN, "may_fail": MAY_FAIL},
              "abort the connection: SO_LINGER 0 then close, the peer sees RST"),
    "wait_closed": ({
        "conn": CONN,
        "how": Key("str", choices=("any", "eof", "reset"), default="any",
                   doc="what the server's close must look like"),
        "timeout": TIMEOUT, "may_fail": MAY_FAIL,
    }, "wait for the server to close the connection (data read meanwhile is discarded)"),
    "stop": ({}, "stop the server now (its stop signal); open connections stay open"),
    "pause": ({"seconds": Key("float", required=True, low=0.0, high=MAX_PAUSE,
                              doc=f"at most {MAX_PAUSE:g} s")},
              "a bounded pause"),
    "quiesce": ({
        "quiet_ms": Key("int", low=MIN_QUIET_MS, high=60_000, default=200,
                        doc="the server's processes used no CPU for this long"),
        "timeout": TIMEOUT, "may_fail": MAY_FAIL,
    }, "wait until the server has finished reacting: no CPU used for `quiet_ms`"),
    "storm": ({
        "count": Key("int", required=True, low=1, high=200_000, doc="connections in all"),
        "concurrency": Key("int", low=1, high=2000, default=32, doc="at most this many at once"),
        "seed": Key("int", low=0, high=2**63 - 1, default=1, doc="random seed of the endings"),
        "endings": Key("endings", default=list(ENDINGS), doc="mix of endings to draw from"),
        "lines": Key("int", low=0, high=1000, default=1,
                     doc="generated lines sent before the ending (0: connect only)"),
        "text": Key("str", doc="send this text instead of generated lines"),
        "hex": Key("str", doc="send these bytes instead of generated lines"),
        "echo": Key("bool", default=True,
                    doc="check that what was sent comes back (with `text`/`hex`: only when set)"),
        "server_may_close": Key("bool", default=False,
                                doc="the server closing or resetting a connection is not a failure"),
        "max_idle": Key("int", low=0, high=10000, default=64,
                        doc="idle connections kept open until stop, at most"),
        "stall_bytes": Key("int", low=1, high=64 << 20, default=262144,
                           doc="bytes a stall_reset ending sends without reading"),
        "timeout": TIMEOUT,
    }, "N concurrent connections, each ending in a seeded random mix of the endings"),
    "fuzz": ({
        "seed": Key("int", low=0, high=2**63 - 1, doc="replay a failure with its seed"),
        "ops": Key("int", low=1, high=1_000_000, default=200, doc="random operations"),
        "max_conns": Key("int", low=1, high=1000, default=8, doc="connections open at once"),
        "text": Key("str", doc="the payload its sends use instead of random lines"),
        "hex": Key("str", doc="the payload its sends use, as hex"),
        "junk": Key("bool", default=True, doc="also send random lines and binary junk"),
        "timeout": TIMEOUT,
    }, "seeded random operations; the seed is reported so a failure replays exactly"),
}

SETTINGS: dict[str, Key] = {
    "stop_signal": Key("str", default="SIGTERM", doc="signal that stops the server"),
    "leak_kinds": Key("str", doc="'strict', 'all' or e.g. 'definite,possible'"),
    "expect": Key("str", choices=tuple(v.label for v in Verdict), doc="expected verdict"),
    "ready_timeout": Key("float", low=0.1, high=MAX_TIMEOUT, doc="seconds to start listening"),
    "step_timeout": Key("float", low=0.001, high=MAX_TIMEOUT, doc="default step deadline"),
    "stop_timeout": Key("float", low=0.1, high=MAX_TIMEOUT, doc="seconds to exit after stop"),
    "host": Key("str", default="127.0.0.1", doc="loopback address of the server"),
}
TOP_KEYS = ("description", "settings", "steps")


@dataclass
class Step:
    do: str
    index: int                      # 1-based, as users count
    args: dict[str, Any]

    def get(self, key: str) -> Any:
        if key in self.args:
            return self.args[key]
        return STEPS[self.do][0][key].default if key in STEPS[self.do][0] else None

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.do})"


@dataclass
class Settings:
    stop_signal: int = signal.SIGTERM
    leak_policy: LeakPolicy | None = None       # None: the caller's default
    expect: Verdict | None = None
    ready_timeout: float | None = None
    step_timeout: float | None = None
    stop_timeout: float | None = None
    host: str = "127.0.0.1"


@dataclass
class Scenario:
    name: str
    source: str
    description: str = ""
    settings: Settings = field(default_factory=Settings)
    steps: list[Step] = field(default_factory=list)
    settings_raw: dict[str, Any] = field(default_factory=dict)    # as written, to write it back

    def data(self) -> dict[str, Any]:
        """The scenario as its TOML file has it (parse_scenario's input)."""
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        if self.settings_raw:
            out["settings"] = dict(self.settings_raw)
        out["steps"] = [step_data(s) for s in self.steps]
        return out


def step_data(step: Step) -> dict[str, Any]:
    return {"do": step.do, **step.args}


def parse_signal(name: str) -> int:
    upper = name.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    try:
        return int(signal.Signals[upper])
    except KeyError:
        raise ValueError(f"unknown signal {name!r} (expected a name such as SIGTERM or SIGINT)") from None


def _settings(source: str, raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise ScenarioError(source, "[settings]", "expected a table")
    out = Settings()
    for key, value in raw.items():
        spec = SETTINGS.get(key)
        where = f"[settings] key '{key}'"
        if spec is None:
            raise ScenarioError(source, "[settings]", f"unknown key '{key}' (known: {', '.join(SETTINGS)})")
        try:
            _check_value(key, spec, value)
            if key == "stop_signal":
                out.stop_signal = parse_signal(value)
            elif key == "leak_kinds":
                out.leak_policy = LeakPolicy.parse(value)
            elif key == "expect":
                out.expect = Verdict.from_label(value)
            elif key == "host":
                out.host = check_loopback(value)
            else:
                setattr(out, key, float(value))
        except (ValueError, TargetError) as exc:
            msg = str(exc)
            raise ScenarioError(source, "[settings]" if msg.startswith("key") else where, msg) from None
    return out


def _step(source: str, index: int, raw: Any, names: dict[str, list[str]]) -> Step:
    where = f"step {index}"
    if not isinstance(raw, dict):
        raise ScenarioError(source, where, "expected a table ([[steps]])")
    do = raw.get("do")
    if do is None:
        raise ScenarioError(source, where, "key 'do' missing: which step is it? "
                            f"(one of {', '.join(STEPS)})")
    if not isinstance(do, str) or do not in STEPS:
        raise ScenarioError(source, where, f"key 'do': unknown step {do!r} (known: {', '.join(STEPS)})")
    where = f"step {index} ({do})"
    keys, _ = STEPS[do]
    args = {}
    for key, value in raw.items():
        if key == "do":
            continue
        if key not in keys:
            raise ScenarioError(source, where, f"unknown key '{key}' (known: {', '.join(keys) or 'none'})")
        try:
            args[key] = _check_value(key, keys[key], value)
        except ValueError as exc:
            raise ScenarioError(source, where, str(exc)) from None
    for key, spec in keys.items():
        if spec.required and key not in args:
            raise ScenarioError(source, where, f"key '{key}' missing ({spec.doc})")
    _check_step_rules(source, where, do, args, names)
    return Step(do=do, index=index, args=args)


_PAYLOAD = ("text", "hex", "size")


def _check_step_rules(source: str, where: str, do: str, args: dict[str, Any],
                      names: dict[str, list[str]]) -> None:
    """Rules across keys, and connection names defined before use."""
    if do == "open":
        given = [args["conn"]] if "conn" in args else []
        given += args.get("conns", [])
        if not given:
            raise ScenarioError(source, where, "key 'conn' or 'conns' missing: name the connection")
        if args.get("count", 1) > 1 and ("conns" in args or "conn" not in args):
            raise ScenarioError(source, where, "key 'count': give one group name in 'conn'")
        for name in given:
            count = args.get("count", 1)
            members = [name] if count == 1 else [f"{name}{i}" for i in range(1, count + 1)]
            taken = {n for n in names} | {m for ms in names.values() for m in ms}
            clash = [n for n in [name] + members if n in taken]
            if clash:
                key = "conn" if "conn" in args and name == args["conn"] else "conns"
                raise ScenarioError(source, where, f"key '{key}': {clash[0]!r} is already open")
            names[name] = members
        return
    if do == "send":
        present = [k for k in _PAYLOAD if k in args]
        if len(present) != 1:
            raise ScenarioError(source, where, "give exactly one of 'text', 'hex', 'size'"
                                + (f" (got {', '.join(present)})" if present else ""))
        if "hex" in args:
            _check_hex(source, where, args["hex"])
        if "line_length" in args and "size" not in args:
            raise ScenarioError(source, where, "key 'line_length': only goes with 'size'")
        unit = args.get("size") or len(args.get("text", "").encode()) or len(args.get("hex", "")) // 2
        total = unit * args.get("repeat", 1)
        if total > MAX_SEND:
            raise ScenarioError(source, where, f"keys 'repeat' and '{present[0]}': {total:,} bytes "
                                f"in one step, more than the limit of {MAX_SEND >> 30} GiB")
    if do == "expect":
        _check_expect(source, where, args)
    if do in ("storm", "fuzz"):
        _check_payload(source, where, do, args)
    conn = args.get("conn")
    if conn is not None and conn not in names and not any(conn in m for m in names.values()):
        raise ScenarioError(source, where, f"key 'conn': {conn!r} was never opened "
                            f"(opened so far: {', '.join(names) or 'none'})")


def _check_hex(source: str, where: str, text: str, key: str = "hex") -> None:
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ScenarioError(source, where, f"key '{key}': {text!r} is not hex bytes") from None


_EXACT = ("echo", "text", "hex")            # the whole reply, byte for byte
_FRAMES = ("size", "line", "until")         # how much to read, any content
_CHECKS = ("prefix", "hex_prefix", "match")  # checks on what a frame read


def _check_expect(source: str, where: str, args: dict[str, Any]) -> None:
    """One way to read (an exact reply, a frame, or a check alone), plus
    checks on what a frame read."""
    given = [k for k in _EXACT + _FRAMES + _CHECKS if args.get(k) not in (None, False)]
    exact = [k for k in given if k in _EXACT]
    frames = [k for k in given if k in _FRAMES]
    checks = [k for k in given if k in _CHECKS]
    if not given:
        raise ScenarioError(source, where, "give exactly one of 'echo', 'text', 'hex', 'size', "
                            "'line', 'until', or a check alone: 'prefix', 'hex_prefix', 'match'")
    if len(exact) + len(frames) > 1:
        raise ScenarioError(source, where, "give exactly one of 'echo', 'text', 'hex', 'size', "
                            f"'line', 'until' (got {', '.join(exact + frames)})")
    if exact and checks:
        raise ScenarioError(source, where, f"key '{checks[0]}': '{exact[0]}' already says the "
                            "whole reply; checks go with 'size', 'line', 'until' or alone")
    if "prefix" in checks and "hex_prefix" in checks:
        raise ScenarioError(source, where, "give one of 'prefix', 'hex_prefix' (got both)")
    if "max_bytes" in args and not ({"line", "until", "match"} & set(given)):
        raise ScenarioError(source, where, "key 'max_bytes': only goes with 'line', 'until' "
                            "or 'match' (the reads that search)")
    for key in ("hex", "hex_prefix"):
        if key in args:
            _check_hex(source, where, args[key], key)
    for key in ("until", "prefix", "text"):
        if key in args and not args[key]:
            raise ScenarioError(source, where, f"key '{key}': empty")
    if "hex_prefix" in args and not bytes.fromhex(args["hex_prefix"]):
        raise ScenarioError(source, where, "key 'hex_prefix': empty")
    if "match" in args:
        compile_match(source, where, args["match"])


def compile_match(source: str, where: str, pattern: str) -> re.Pattern[bytes]:
    """`match` is a regular expression on bytes: the pattern's text is
    UTF-8 encoded, so '\\x00'-style escapes name any byte."""
    try:
        return re.compile(pattern.encode("utf-8"))
    except re.error as exc:
        raise ScenarioError(source, where, f"key 'match': {pattern!r} is not a regular "
                            f"expression: {exc}") from None
    except (RecursionError, OverflowError):
        raise ScenarioError(source, where, "key 'match': the pattern is too complex") from None


def _check_payload(source: str, where: str, do: str, args: dict[str, Any]) -> None:
    """storm and fuzz: a payload of text or hex bytes instead of the
    generated lines (storm) or random lines (fuzz)."""
    if "text" in args and "hex" in args:
        raise ScenarioError(source, where, "give one of 'text', 'hex' (got both)")
    if "hex" in args:
        _check_hex(source, where, args["hex"])
    payload = args.get("text", "").encode() or bytes.fromhex(args.get("hex", ""))
    if ("text" in args or "hex" in args) and not payload:
        raise ScenarioError(source, where, f"key '{'text' if 'text' in args else 'hex'}': empty "
                            "(for connections that send nothing: " +
                            ("'lines = 0')" if do == "storm" else "'junk = false' without a payload)"))
    if len(payload) > 1 << 20:
        raise ScenarioError(source, where, f"key '{'text' if 'text' in args else 'hex'}': "
                            f"{len(payload):,} bytes, more than the 1 MiB a payload may have")
    if do == "storm" and "lines" in args and ("text" in args or "hex" in args):
        raise ScenarioError(source, where, "key 'lines': goes with the generated lines, not with "
                            f"'{'text' if 'text' in args else 'hex'}'")


def parse_scenario(data: dict[str, Any], source: str, name: str) -> Scenario:
    for key in data:
        if key not in TOP_KEYS:
            raise ScenarioError(source, "", f"unknown top-level key '{key}' (known: {', '.join(TOP_KEYS)})")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ScenarioError(source, "", "key 'description': expected a string")
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(source, "", "key 'steps' missing or empty: add [[steps]] tables")
    settings = _settings(source, data.get("settings", {}))
    names: dict[str, list[str]] = {}
    steps = [_step(source, i, raw, names) for i, raw in enumerate(steps_raw, start=1)]
    return Scenario(name=name, source=source, description=desc, settings=settings, steps=steps,
                    settings_raw=dict(data.get("settings", {})))


# -- writing a scenario back as TOML ---------------------------------------------------
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters
    (DEL included) escaped, everything else as it is (UTF-8)."""
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written in a scenario")
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_text(data: dict[str, Any], header: list[str] | tuple[str, ...] = ()) -> str:
    """A scenario's data (Scenario.data()) as a TOML file that tomllib reads
    back to the same data; `header` lines become comments at the top."""
    lines = [f"# {h}".rstrip() for h in header]
    if lines:
        lines.append("")
    if "description" in data:
        lines.append(f"description = {toml_string(data['description'])}")
    if data.get("settings"):
        lines += ["", "[settings]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in data["settings"].items()]
    for step in data["steps"]:
        lines += ["", "[[steps]]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in step.items()]
    return "\n".join(lines) + "\n"


def load_scenario(ref: str, search_dir: Path = SCENARIO_DIR) -> Scenario:
    """A scenario by name (scenarios/NAME.toml, or protocols/NAME for
    scenarios/protocols/NAME.toml) or by path."""
    path = Path(ref)
    if not path.suffix and not path.exists():
        path = search_dir / f"{ref}.toml"
        if not path.exists():
            known = ", ".join(named_scenarios(search_dir) + protocol_scenarios(search_dir))
            raise ScenarioError(ref, "", f"no scenario of that name (known: {known})")
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(source, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(source, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", f"TOML syntax: {exc}") from None
    except RecursionError:
        raise ScenarioError(source, "", "nested too deeply to be a scenario") from None
    return parse_scenario(data, source, path.stem)


def named_scenarios(search_dir: Path = SCENARIO_DIR) -> list[str]:
    """The protocol-free scenarios (scenarios/*.toml): every server of the
    project's matrix plays each of them."""
    return sorted(p.stem for p in search_dir.glob("*.toml"))


def protocol_scenarios(search_dir: Path = SCENARIO_DIR) -> list[str]:
    """Scenarios written for one protocol (scenarios/protocols/*.toml), by
    the name --scenario takes: 'protocols/NAME'.  Not in the matrix."""
    return sorted(f"{PROTOCOLS}/{p.stem}" for p in (search_dir / PROTOCOLS).glob("*.toml"))


DEFAULT = parse_scenario({
    "description": "connect, send a line, read the echo, close, stop",
    "steps": [{"do": "open", "conn": "c"}, {"do": "send", "conn": "c", "text": "hello\n"},
              {"do": "expect", "conn": "c", "echo": True}, {"do": "close", "conn": "c"}],
}, "(built-in)", "default")

__all__ = ["Scenario", "Step", "Settings", "ScenarioError", "load_scenario", "parse_scenario",
           "step_data", "toml_text", "toml_string", "DRAIN_BYTES",
           "named_scenarios", "protocol_scenarios", "compile_match", "STEPS", "SETTINGS",
           "DEFAULT", "ENDINGS", "MIN_QUIET_MS", "parse_signal"]
