"""SARIF 2.1.0 for code scanning, from summary.json's data.

What becomes a result: the findings that count.  A new one (its signature
not in the baseline) is a result at level `error` with baselineState `new`;
a baselined one is a result at level `note` with baselineState `unchanged`.
Left out: what the run's --leak-kinds does not count (still reachable under
the default definite,indirect), and the project's own buggy variants, whose
findings are expected (xfail) or informational.

Every result has a physical location: the first frame in the program's own
code, its path relative to SRCROOT (the folder the gate ran in, given in
originalUriBaseIds), or, when no frame has a source file there, the
executable; the rest of the stack are related locations.  Its
partialFingerprints carry a hash of the signature (kind and top own frames,
no addresses, PIDs or line numbers), so the same bug keeps its identity
across runs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .summary import headline

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT = "leakHarnessSignature/v1"
INFORMATION_URI = "https://valgrind.org/docs/manual/mc-manual.html"

# kind -> (short description, what it means and how to fix it)
RULES: dict[str, tuple[str, str]] = {
    "InvalidRead": ("Invalid read", "The program read memory it does not own: a freed block "
                    "(use after free), past the end of a block, or an unmapped address. Look at "
                    "where the block was freed (the related location) and make the reader hold "
                    "a reference, or stop it before the free."),
    "InvalidWrite": ("Invalid write", "The program wrote memory it does not own: a freed block, "
                     "past the end of a block, or an unmapped address. Check the size of the "
                     "block and the lifetime of the object written to."),
    "InvalidFree": ("Invalid or double free", "A block was freed twice, or something that is not "
                    "the start of a heap block was freed. Two owners think they own it: give the "
                    "object one owner, or count its references."),
    "MismatchedFree": ("Mismatched free", "A block was released with the wrong function "
                       "(malloc/delete, new/free, new[]/delete). Release it with the "
                       "counterpart of the function that allocated it."),
    "InvalidJump": ("Jump to an invalid address", "Control jumped to an address that holds no "
                    "code, often a call through a NULL or freed function pointer (an empty "
                    "callback). Check that the callback is set and still alive when called."),
    "UninitCondition": ("Conditional jump on an uninitialised value", "A branch depends on a "
                        "value that was never initialised. Run with --track-origins to see "
                        "where it comes from, and initialise it."),
    "UninitValue": ("Use of an uninitialised value", "An uninitialised value was used in a "
                    "computation that matters. Run with --track-origins and initialise it."),
    "SyscallParam": ("System call with unaddressable or uninitialised bytes", "A system call "
                     "was given a buffer that is not fully initialised or not addressable. "
                     "Initialise the buffer, or pass only the bytes that were written."),
    "Overlap": ("Overlapping source and destination", "memcpy, strcpy or a relative copied "
                "between overlapping blocks. Use memmove, or separate buffers."),
    "FishyValue": ("Implausible argument", "An allocation function got an implausible size "
                   "(often a negative number). Check the size computation."),
    "ClientCheck": ("Client check failed", "A VALGRIND_CHECK_* request in the program failed."),
    "Leak_DefinitelyLost": ("Definitely lost memory", "A block nothing points to any more: a "
                            "leak. The allocation stack shows who made it; free it on every "
                            "path, including when a connection ends or the server stops."),
    "Leak_IndirectlyLost": ("Indirectly lost memory", "A block only reachable from a lost block. "
                            "Fix the definitely lost block that holds it, and this goes too."),
    "Leak_PossiblyLost": ("Possibly lost memory", "A block only reachable through a pointer into "
                          "its middle. Often a leak; sometimes deliberate pointer arithmetic."),
    "Leak_StillReachable": ("Still reachable at exit", "A block still pointed to when the "
                            "program exited: it was never freed. Free it at shutdown (stop the "
                            "loops, close the handles, release the caches) for a clean exit."),
    "Race": ("Data race", "Two threads accessed the same memory without synchronisation, at least "
             "one of them writing. Guard the shared state with one lock, or keep it on one thread."),
    "crash": ("Crash", "The server was killed by a fatal signal (SIGSEGV, SIGABRT...). The "
              "location is the frame that faulted; fix the access there or the lifetime behind it."),
    "hang": ("Hang at stop", "The server did not exit after the stop signal and was killed. Its "
             "threads' stacks show what it was waiting for; close the listener and the "
             "connections before waiting for the sessions."),
    "startup-failure": ("Startup failure", "The server exited, or never listened on its port, "
                        "before the scenario could start. The server's output says why."),
}
GENERIC = ("Finding", "A finding of the detector; see its log for what it means.")


def _uri(path: str | None, srcroot: str) -> dict | None:
    """An artifactLocation relative to SRCROOT, or None when the file is
    not under it."""
    if not path:
        return None
    try:
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(srcroot))
    except ValueError:
        return None
    if rel.startswith(".."):
        return None
    return {"uri": Path(rel).as_posix(), "uriBaseId": "SRCROOT"}


def _location(frame: dict, srcroot: str) -> dict | None:
    artifact = _uri(frame.get("path"), srcroot)
    if artifact is None:
        return None
    return {"physicalLocation": {"artifactLocation": artifact,
                                 "region": {"startLine": frame.get("line") or 1}},
            "logicalLocations": [{"name": frame["fn"], "kind": "function"}]}


def _frame_text(frame: dict) -> str:
    if frame.get("file"):
        return f"{frame['fn']} ({frame['file']}:{frame.get('line') or '?'})"
    return f"{frame['fn']} (in {frame['obj']})" if frame.get("obj") else frame["fn"]


def _executable_location(case: dict, srcroot: str) -> dict:
    exe = case.get("executable") or (case.get("command") or ["server"])[0]
    artifact = _uri(exe, srcroot) or {"uri": Path(os.path.abspath(exe)).as_uri()}
    return {"physicalLocation": {"artifactLocation": artifact, "region": {"startLine": 1}},
            "message": {"text": f"no frame of this finding is in a source file under the "
                                f"source root: the executable {Path(exe).name}"}}


def result(case: dict, issue: dict, srcroot: str) -> dict:
    frames = issue["frames"] + [f for aux in issue.get("aux", []) for f in aux["frames"]]
    primary, related = None, []
    for frame in frames:
        location = _location(frame, srcroot)
        if location and primary is None and (frame.get("own") or not frame.get("obj")):
            primary = location
            continue
        entry = location or {"logicalLocations": [{"name": frame["fn"], "kind": "function"}]}
        entry = dict(entry, id=len(related) + 1, message={"text": _frame_text(frame)})
        related.append(entry)
    if primary is None:
        primary = _executable_location(case, srcroot)
    where = " < ".join(_frame_text(f) for f in issue["frames"][:3])
    new = issue["status"] == "new"
    out = {
        "ruleId": issue["rule"],
        "level": "error" if new else "note",
        "baselineState": "new" if new else "unchanged",
        "message": {"text": headline(issue) + (f" at {where}" if where else "")
                            + f" (case {case['case']})"},
        "locations": [primary],
        "partialFingerprints": {FINGERPRINT: hashlib.sha256(issue["signature"].encode()).hexdigest()},
        "properties": {"signature": issue["signature"], "case": case["case"],
                       "outcome": case["outcome"], "verdict": case["verdict"]},
    }
    if related:
        out["relatedLocations"] = related
    return out


def rule(kind: str) -> dict:
    short, help_text = RULES.get(kind, GENERIC)
    return {"id": kind, "name": kind.replace("_", ""),
            "shortDescription": {"text": short},
            "fullDescription": {"text": help_text},
            "help": {"text": help_text, "markdown": f"**{short}.** {help_text}"},
            "helpUri": INFORMATION_URI,
            "defaultConfiguration": {"level": "error"}}


def sarif_log(data: dict) -> dict:
    srcroot = data["srcroot"]
    results, kinds = [], []
    for case in sorted(data["cases"], key=lambda c: c["index"]):
        for issue in case["issues"]:
            if issue["status"] not in ("new", "known"):
                continue
            results.append(result(case, issue, srcroot))
            if issue["rule"] not in kinds:
                kinds.append(issue["rule"])
    rules = [rule(k) for k in kinds]
    index = {k: i for i, k in enumerate(kinds)}
    for r in results:
        r["ruleIndex"] = index[r["ruleId"]]
    return {"version": "2.1.0", "$schema": SARIF_SCHEMA,
            "runs": [{"tool": {"driver": {"name": "leak-harness", "informationUri": INFORMATION_URI,
                                          "rules": rules}},
                      "originalUriBaseIds": {"SRCROOT": {"uri": Path(srcroot).as_uri() + "/"}},
                      "results": results}]}
