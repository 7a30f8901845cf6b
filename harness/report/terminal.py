"""What a person reads in the terminal: the verdict, the few valgrind lines
that matter (headline, top frames in the program's own code, HEAP SUMMARY),
and where the full log and the server's output are."""
from __future__ import annotations

from ..judge.frames import best_stack, own_frames, shown_frames, signature
from ..logs.vglog import ProcessLog, ValgrindLog
from ..model import HeapSummary


def heap_lines(heap: HeapSummary, errors=None) -> list[str]:
    lines = []
    if heap.in_use is not None:
        line = f"in use at exit: {heap.in_use.bytes:,} bytes in {heap.in_use.blocks:,} blocks"
        if heap.allocs is not None:
            line += (f"; total heap usage: {heap.allocs:,} allocs, {heap.frees:,} frees, "
                     f"{heap.allocated_bytes:,} bytes allocated")
        lines.append(line)
    if heap.all_freed:
        lines.append("All heap blocks were freed -- no leaks are possible")
    else:
        parts = []
        for name in HeapSummary.LEAK_FIELDS[:4]:
            amount = getattr(heap, name)
            if amount is not None:
                parts.append(f"{name.replace('_', ' ')}: {amount.bytes:,} bytes in {amount.blocks:,} blocks")
        if parts:
            lines.append("LEAK SUMMARY: " + "; ".join(parts))
    if heap.suppressed is not None and heap.suppressed.bytes:
        lines.append(f"suppressed: {heap.suppressed.bytes:,} bytes in {heap.suppressed.blocks:,} "
                     "blocks (leaks matched by a suppressions file)")
    if errors is not None:
        line = f"ERROR SUMMARY: {errors.count} errors from {errors.contexts} contexts"
        if errors.suppressed:
            line += f" (suppressed: {errors.suppressed} from {errors.suppressed_contexts})"
        lines.append(line)
    return lines


def process_lines(proc: ProcessLog) -> list[str]:
    return heap_lines(proc.heap, proc.errors)


def finding_lines(log: ValgrindLog, index, per_kind: int = 1,
                  frames: int = 3) -> list[str]:
    """The first record of each finding kind: headline, top own frames, and
    the first auxiliary part (where the block was freed or allocated)."""
    out = []
    shown: dict[str, int] = {}
    for finding in log.findings():
        if shown.get(finding.kind, 0) >= per_kind:
            shown[finding.kind] += 1
            continue
        shown[finding.kind] = shown.get(finding.kind, 0) + 1
        out.append(f"{finding.kind}: {finding.what}")
        stack = shown_frames(best_stack(finding), index, frames)
        out.extend(f"    at {f.where()}" for f in stack)
        for aux in finding.aux[:2]:
            top = own_frames(aux.stack, index, 2)
            out.append(f"  {aux.what}" + (f" -- {' < '.join(f.where() for f in top)}" if top else ""))
    more = {k: n - per_kind for k, n in shown.items() if n > per_kind}
    if more:
        out.append("(and " + ", ".join(f"{n} more {k}" for k, n in more.items()) + ")")
    return out


def fatal_lines(log: ValgrindLog, index) -> list[str]:
    for proc in log.processes:
        sig = proc.fatal_signal
        if sig:
            lines = [f"Process terminating with default action of signal {sig.number} ({sig.name})"]
            if sig.fault:
                lines.append(f"  {sig.fault}")
            stack = sig.stack[:1] + own_frames(sig.stack[1:], index, 2)
            lines.extend(f"    at {f.where()}" for f in stack)
            return lines
    return []


def signatures(log: ValgrindLog, index) -> list[str]:
    return sorted({signature(f, index) for f in log.findings()})
