"""`report merge DIR... --out DIR`: the report folders of a gate's shards
(`--shard I/N`, one per CI job) as one report, the one the unsharded gate
would have written: every case's record is read back from the shards'
summary.json, its run folder copied, and the reports rendered again.

Refused, with the folder named: a folder that is not a report, shards of
different gates (another command, other options or scenarios), the same
shard or case twice, a shard missing."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from .summary import SCHEMA, assemble

CASE_KEYS = ("case", "index", "outcome", "verdict", "signatures", "files", "issues", "findings",
             "detector", "variant", "message", "reasons", "seconds", "scenario")


class MergeError(ValueError):
    pass


def read_report(folder: Path) -> dict:
    """A report folder's summary.json, checked enough to merge."""
    if not folder.is_dir():
        raise MergeError(f"{folder}: not a folder")
    path = folder / "summary.json"
    if not path.is_file():
        raise MergeError(f"{folder}: not a report folder (no summary.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MergeError(f"{path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MergeError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MergeError(f"{path}: not a leak-harness summary (expected schema {SCHEMA!r})")
    gate = data.get("gate")
    if not isinstance(gate, dict) or not {"key", "command", "shard", "total"} <= set(gate):
        raise MergeError(f"{path}: has no 'gate' (written by an older harness): run the gate again")
    if not isinstance(data.get("cases"), list):
        raise MergeError(f"{path}: key 'cases' missing or not a list")
    for i, case in enumerate(data["cases"], start=1):
        missing = [k for k in CASE_KEYS if not isinstance(case, dict) or k not in case]
        if missing:
            raise MergeError(f"{path}: case #{i}: key {missing[0]!r} missing")
    for key, kind in (("patterns", dict), ("baseline", dict), ("srcroot", str)):
        if not isinstance(data.get(key), kind):
            raise MergeError(f"{path}: key {key!r} missing or not a {kind.__name__}")
    return data


def _shard(spec: str | None, where: Path) -> tuple[int, int] | None:
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise MergeError(f"{where}: shard {spec!r} is not I/N") from None
    return i, n


def _copy_regular(src: Path, dst: Path) -> None:
    """A run folder's regular files (never a FIFO a run left behind)."""
    for dirpath, _, filenames in os.walk(src):
        target = dst / os.path.relpath(dirpath, src)
        target.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            path = Path(dirpath) / name
            if stat.S_ISREG(path.lstat().st_mode):
                shutil.copy2(path, target / name)


def _rebase(value, old: str, new: Path):
    if isinstance(value, str) and old and value.startswith(old.rstrip("/") + "/"):
        return str(new / os.path.relpath(value, old))
    return value


def merge(folders: list[Path], out: Path) -> dict:
    """The merged summary; run folders copied into `out`.  Writes nothing
    else (write.write_data renders the reports)."""
    if not folders:
        raise MergeError("report merge: name at least one report folder")
    reports = [(f, read_report(f)) for f in folders]
    out_real = out.resolve()
    for folder, _ in reports:
        if folder.resolve() == out_real:
            raise MergeError(f"--out {out}: is one of the folders to merge; name a new folder")
    first_dir, first = reports[0]
    seen_shards: dict[int, Path] = {}
    seen_cases: dict[str, Path] = {}
    counts = set()
    for folder, data in reports:
        gate = data["gate"]
        if (gate["command"], gate["key"]) != (first["gate"]["command"], first["gate"]["key"]):
            raise MergeError(f"{folder}: a report of another gate than {first_dir} ({gate['command']} "
                             f"with other options or scenarios): only shards of one gate merge")
        spec = _shard(gate["shard"], folder)
        counts.add(spec[1] if spec else None)
        if spec:
            if spec[0] in seen_shards:
                raise MergeError(f"{folder}: shard {gate['shard']} is also {seen_shards[spec[0]]}")
            seen_shards[spec[0]] = folder
        for case in data["cases"]:
            if case["case"] in seen_cases:
                raise MergeError(f"{folder}: case {case['case']!r} is also in {seen_cases[case['case']]}")
            seen_cases[case["case"]] = folder
    if len(counts) > 1:
        raise MergeError(f"{first_dir}: shards of different splits ({', '.join(str(n) for n in counts)})")
    total = first["gate"]["total"]
    if len(seen_cases) != total:
        n = counts.pop()
        missing = [f"{i}/{n}" for i in range(1, (n or 0) + 1) if i not in seen_shards]
        raise MergeError(f"the shards hold {len(seen_cases)} of the gate's {total} cases"
                         + (f": shard {', '.join(missing)} missing" if missing else ""))

    out.mkdir(parents=True, exist_ok=True)
    cases, patterns, baseline = [], {}, {}
    for folder, data in reports:
        patterns.update(data["patterns"])
        baseline.update(data["baseline"])
        old = data.get("report_dir") or str(folder.resolve())
        for case in data["cases"]:
            run_dir = case["files"].get("run_dir")
            if run_dir and (folder / run_dir).is_dir():
                _copy_regular(folder / run_dir, out / run_dir)
            case = dict(case)
            for key in ("log", "stdout", "stderr"):
                case[key] = _rebase(case.get(key), old, out_real)
            case["logs"] = [_rebase(p, old, out_real) for p in case.get("logs") or []]
            cases.append(case)
    cases.sort(key=lambda c: c["index"])
    gate = {"command": first["gate"]["command"], "key": first["gate"]["key"], "shard": None,
            "total": total, "merged": [d["gate"]["shard"] for _, d in reports]}
    data = assemble(cases, patterns, baseline, gate, first["srcroot"])
    data["report_dir"] = str(out_real)
    return data
