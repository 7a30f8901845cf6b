"""harness.logs.vgxml on memcheck's real XML (tests/inputs/*.xml), checked against
the text logs of the same programs, cut short, and fed what is no XML."""
from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import pytest

from harness.judge.verdict import LeakPolicy, judge
from harness.logs.vglog import LogParseError, parse_text
from harness.logs.vgxml import parse_xml
from harness.model import Amount, Verdict

INPUTS = Path(__file__).resolve().parent / "inputs"


def xml_of(name: str) -> bytes:
    return (INPUTS / name).read_bytes()


def frames(stack) -> list[tuple]:
    return [(f.fn, f.file, f.line, f.obj) for f in stack]


def without_pid(findings) -> list:
    return [dataclasses.replace(f, pid=None) for f in findings]


PAIRS = ["leaks", "invalid-free", "invalid-jump"]


@pytest.mark.parametrize("name", PAIRS)
def test_same_findings_as_the_text_log(name) -> None:
    """Kind, headline, every frame (fn, file, line, obj), aux parts with their
    stacks, bytes, blocks and the direct/indirect split."""
    xml = parse_xml(xml_of(f"{name}.xml"))
    text = parse_text((INPUTS / f"{name}.log").read_text())
    assert without_pid(xml.findings()) == without_pid(text.findings())
    assert xml.findings()


@pytest.mark.parametrize("name", PAIRS)
def test_same_fatal_signal_as_the_text_log(name) -> None:
    xml = parse_xml(xml_of(f"{name}.xml")).main.fatal_signal
    text = parse_text((INPUTS / f"{name}.log").read_text()).main.fatal_signal
    assert xml == text


def test_invalid_jump_kinds_stack_and_fatal_signal() -> None:
    log = parse_xml(xml_of("invalid-jump.xml"))
    [finding] = log.findings()
    assert finding.kind == "InvalidJump"
    assert frames(finding.stack) == [("???", None, None, None), ("main", "kinds.c", 111, None)]
    assert [a.what for a in finding.aux] == [
        "Address 0x0 is not stack'd, malloc'd or (recently) free'd"]
    fatal = log.main.fatal_signal
    assert (fatal.number, fatal.name, fatal.address) == (11, "SIGSEGV", "0x0")
    assert fatal.fault == "Bad permissions for mapped region at address 0x0"
    assert frames(fatal.stack) == [("???", None, None, None), ("main", "kinds.c", 111, None)]
    assert (log.main.errors.count, log.main.errors.contexts) == (1, 1)


def test_invalid_free_aux_parts() -> None:
    [finding] = parse_xml(xml_of("invalid-free.xml")).findings()
    assert finding.kind == "InvalidFree"
    assert [a.what for a in finding.aux] == [
        "Address 0x4a42040 is 0 bytes inside a block of size 16 free'd", "Block was alloc'd at"]
    assert [f.line for f in finding.aux[0].stack] == [None, 49, 110]
    assert [f.line for f in finding.aux[1].stack] == [None, 48, 110]
    assert finding.aux[1].stack[0].obj == "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so"


def test_leaks_loss_records() -> None:
    log = parse_xml(xml_of("leaks.xml"))
    got = [(f.kind, f.bytes, f.blocks, f.direct_bytes, f.indirect_bytes) for f in log.findings()]
    assert got == [("Leak_PossiblyLost", 64, 1, None, None),
                   ("Leak_IndirectlyLost", 64, 2, None, None),
                   ("Leak_DefinitelyLost", 96, 1, 32, 64),
                   ("Leak_StillReachable", 100, 1, None, None)]
    assert all(f.pid == 2943 for f in log.findings())


def test_leak_totals_rebuilt_from_loss_records_match_the_leak_summary() -> None:
    """3.19's XML has no LEAK SUMMARY: the totals come from the loss records,
    definitely lost counting only the direct bytes, like the text's summary."""
    xml = parse_xml(xml_of("leaks.xml")).main.heap
    text = parse_text((INPUTS / "leaks.log").read_text()).main.heap
    fields = ("definitely_lost", "indirectly_lost", "possibly_lost", "still_reachable")
    assert [getattr(xml, f) for f in fields] == [getattr(text, f) for f in fields] == \
        [Amount(32, 1), Amount(64, 2), Amount(64, 1), Amount(100, 1)]
    assert xml.suppressed is None and xml.in_use is None


def test_header_and_completeness() -> None:
    log = parse_xml(xml_of("leaks.xml"))
    proc = log.main
    assert (proc.pid, proc.parent_pid, proc.tool) == (2943, 2919, "memcheck")
    assert proc.command == "../../build/progs/kinds leaks"
    assert log.complete and proc.notes == []
    # <errorcounts> lists no leak: the XML's error count leaves loss records out
    assert (proc.errors.count, proc.errors.contexts) == (0, 0)


def test_file_object_and_bytes_give_the_same() -> None:
    with (INPUTS / "invalid-free.xml").open("rb") as f:
        from_file = parse_xml(f)
    assert from_file.findings() == parse_xml(xml_of("invalid-free.xml")).findings()
    assert parse_xml(bytearray(xml_of("invalid-free.xml"))).findings() == from_file.findings()


@pytest.mark.parametrize("name, policy, verdict", [
    ("leaks.xml", "strict", Verdict.LEAK),
    ("leaks.xml", "definite", Verdict.LEAK),
    ("invalid-free.xml", "strict", Verdict.MEMORY_ERROR),
    ("invalid-jump.xml", "strict", Verdict.CRASH),
], ids=["leaks-strict", "leaks-definite", "invalid-free", "invalid-jump"])
def test_judged_like_the_text_log(name, policy, verdict) -> None:
    log = parse_xml(xml_of(name))
    text = parse_text((INPUTS / name.replace(".xml", ".log")).read_text())
    p = LeakPolicy.parse(policy)
    assert judge(log, None, p).verdict is judge(text, None, p).verdict is verdict


# -- cut short --------------------------------------------------------------------
def _cut_after(name: str, marker: bytes, nth: int = 1) -> bytes:
    data = xml_of(name)
    at = -1
    for _ in range(nth):
        at = data.index(marker, at + 1)
    return data[:at + len(marker)]


@pytest.mark.parametrize("name, marker, nth, kept", [
    pytest.param("leaks.xml", b"<state>RUNNING</state>", 1, 0, id="after-RUNNING"),
    pytest.param("leaks.xml", b"<state>FINISHED</state>", 1, 0,
                 id="after-FINISHED-before-the-loss-records"),
    pytest.param("leaks.xml", b"<leakedbytes>64</leaked", 2, 1, id="inside-a-loss-record"),
    pytest.param("leaks.xml", b"</error>", 3, 3, id="after-three-loss-records"),
    pytest.param("leaks.xml", b"</suppcounts>", 1, 4, id="before-the-root-closes"),
    pytest.param("invalid-free.xml", b"<fn>invalid_fr", 1, 0, id="inside-a-frame"),
    pytest.param("invalid-free.xml", b"<count>1</count>", 1, 1, id="inside-errorcounts"),
    pytest.param("invalid-jump.xml", b"<signame>SIGSEGV</signame>", 1, 1,
                 id="inside-fatal-signal"),
])
def test_truncated_xml_is_incomplete_and_never_clean(name, marker, nth, kept) -> None:
    log = parse_xml(_cut_after(name, marker, nth))
    assert not log.complete
    assert log.main.errors is None
    assert len(log.findings()) == kept
    assert log.main.notes and log.main.notes[0].startswith("XML cut short: ")
    for policy in (LeakPolicy(), LeakPolicy.parse("definite")):
        judgement = judge(log, None, policy)
        assert judgement.verdict is not Verdict.CLEAN
        assert any("cut short" in r for r in judgement.reasons)


def test_fatal_signal_is_not_read_from_a_half_written_element() -> None:
    log = parse_xml(_cut_after("invalid-jump.xml", b"<signame>SIGSEGV</signame>"))
    assert log.main.fatal_signal is None
    assert [f.kind for f in log.findings()] == ["InvalidJump"]


@pytest.mark.parametrize("name", ["leaks.xml", "invalid-free.xml", "invalid-jump.xml"])
def test_cut_at_every_byte(name) -> None:
    data = xml_of(name).rstrip()
    root = data.index(b"<valgrindoutput>") + len(b"<valgrindoutput>")
    for cut in range(0, len(data), 3):
        if cut < root:
            with pytest.raises(LogParseError):
                parse_xml(data[:cut])
            continue
        log = parse_xml(data[:cut])
        assert not log.complete, cut
        assert judge(log, None, LeakPolicy.parse("definite")).verdict is not Verdict.CLEAN, cut
    assert parse_xml(data).complete


# -- what is no valgrind XML ---------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    pytest.param(b"", r"^not valgrind XML: no element found", id="empty"),
    pytest.param(b"  \n\n", r"^not valgrind XML", id="whitespace"),
    pytest.param(b"hello, world\n", r"^not valgrind XML: syntax error", id="plain-text"),
    pytest.param((INPUTS / "clean.log").read_bytes(), r"^not valgrind XML", id="text-log"),
    pytest.param(random.Random(7).randbytes(2048), r"^not valgrind XML", id="binary-junk"),
    pytest.param(b"\x00\xff\xfe<valgrindoutput>", r"^not valgrind XML", id="nul-bytes"),
    pytest.param(b"<?xml version='1.0'?>\n<html><body>hi</body></html>\n",
                 r"^not valgrind XML: no <valgrindoutput> element$", id="other-xml"),
    pytest.param(b"<?xml version=\"1.0\"?>\n\n<valgrind", r"^not valgrind XML",
                 id="cut-before-the-root"),
])
def test_not_valgrind_xml(data, message) -> None:
    with pytest.raises(LogParseError, match=message):
        parse_xml(data)


@pytest.mark.parametrize("old, new", [
    pytest.param(b"<pid>2944</pid>", b"<pid>abc</pid>", id="pid"),
    pytest.param(b"<ppid>2919</ppid>", b"<ppid>-</ppid>", id="ppid"),
    pytest.param(b"<count>1</count>", b"<count>one</count>", id="count"),
])
def test_malformed_numbers_raise_log_parse_error(old, new) -> None:
    data = xml_of("invalid-free.xml")
    assert old in data
    with pytest.raises(LogParseError, match=r"^malformed valgrind XML: "):
        parse_xml(data.replace(old, new))


@pytest.mark.parametrize("old, new", [
    pytest.param(b"<leakedbytes>100</leakedbytes>", b"<leakedbytes>lots</leakedbytes>",
                 id="leakedbytes"),
    pytest.param(b"<leakedblocks>2</leakedblocks>", b"<leakedblocks>x</leakedblocks>",
                 id="leakedblocks"),
])
def test_malformed_leak_numbers_raise_log_parse_error(old, new) -> None:
    data = xml_of("leaks.xml")
    assert old in data
    with pytest.raises(LogParseError, match=r"^malformed valgrind XML: "):
        parse_xml(data.replace(old, new))


def test_malformed_signal_number_raises_log_parse_error() -> None:
    data = xml_of("invalid-jump.xml").replace(b"<signo>11</signo>", b"<signo>eleven</signo>")
    with pytest.raises(LogParseError, match=r"^malformed valgrind XML: "):
        parse_xml(data)


def test_mutated_xml_raises_nothing_but_log_parse_error() -> None:
    rnd = random.Random(99)
    sources = [xml_of(n) for n in ("leaks.xml", "invalid-free.xml", "invalid-jump.xml")]
    for _ in range(600):
        data = bytearray(rnd.choice(sources))
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            log = parse_xml(io.BytesIO(bytes(data)))
        except LogParseError:
            continue
        assert len(log.processes) == 1
