"""The fast parsers give the very same results as the parsers before issue 13
(frozen in tests/oracle/): every field of every process, every finding with
its stacks, every summary and note, or the same refusal, on every recorded
log, on big logs made from them (past the findings budget, several PIDs
interleaved line by line, CRLF) and on hypothesis's mutations of them."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biglogs import copies, interleave, repeat_records, repeat_xml_errors, with_pid
from harness.logs import vglog, vgxml
from harness.logs.source import log_texts
from oracle import vglog_v1, vgxml_v1, without_addresses

INPUTS = Path(__file__).parent / "inputs"
TEXT_LOGS = sorted(p.name for p in INPUTS.iterdir() if p.suffix in (".log", ".txt"))
XML_LOGS = sorted(p.name for p in INPUTS.glob("*.xml"))
BUDGETS = [5000, 0, 1, 3]


def outcome(parse, *args, **kwargs):
    """Everything a parse gives, as plain data; or the refusal."""
    try:
        log = parse(*args, **kwargs)
    except Exception as exc:   # both parsers' LogParseError, or anything else
        return ("raised", type(exc).__name__, str(exc))
    return {"main": log.main.pid, "complete": log.complete, "tool": log.tool,
            "processes": [without_addresses(dataclasses.asdict(p)) | {"complete": p.complete}
                          for p in log.processes]}


def texts_of(text: str, size: int) -> list[str]:
    """The text in pieces of whole lines, each about `size` long (what
    source.log_texts gives the parser): split at '\n' only."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size) + 1 or len(text)
        pieces.append(text[start:end])
        start = end
    return pieces


def same_text(text: str, max_findings: int = 5000) -> None:
    old = outcome(vglog_v1.parse_text, text, max_findings)
    assert outcome(vglog.parse_text, text, max_findings) == old
    for lines in (text.splitlines(keepends=True), text.splitlines(), io.StringIO(text)):
        old = outcome(vglog_v1.parse_lines, lines, max_findings)
        if isinstance(lines, io.StringIO):
            lines.seek(0)
        assert outcome(vglog.parse_lines, lines, max_findings) == old
    # parse_texts reads lines split at '\n' only, as a file object's are.
    old = outcome(vglog_v1.parse_lines, io.StringIO(text), max_findings)
    for size in (1, 200, 1 << 16):
        assert outcome(vglog.parse_texts, texts_of(text, size), max_findings) == old, size


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", TEXT_LOGS)
def test_every_recorded_text_log(name: str, budget: int) -> None:
    same_text((INPUTS / name).read_text(), budget)


@pytest.mark.parametrize("name", TEXT_LOGS)
def test_every_recorded_text_log_from_its_file(name: str) -> None:
    """From the file as the harness reads it (source.log_texts, parse_texts),
    and as a file object's lines."""
    with open(INPUTS / name, encoding="utf-8", errors="replace") as f:
        old = outcome(vglog_v1.parse_lines, f)
    with open(INPUTS / name, encoding="utf-8", errors="replace") as f:
        assert outcome(vglog.parse_lines, f) == old
    assert outcome(vglog.parse_texts, log_texts(INPUTS / name)) == old
    assert not isinstance(old, tuple) or name == "vgdb-hang.txt"


@pytest.mark.parametrize("name", ["leaks.log", "invalid-read.log", "show-error-list.log",
                                  "thread-errors.log"])
def test_crlf_line_endings(name: str) -> None:
    same_text((INPUTS / name).read_text().replace("\n", "\r\n"))


def test_odd_lines_no_log_writes_but_a_parser_may_be_given() -> None:
    """Lines with newlines inside, tabs, NEL endings, prefixes without their
    space, other prefixes, Unicode digits in a PID."""
    head = "==7== Memcheck, a memory error detector\n==7== Command: x\n==7== \n"
    for odd in ["==7== Invalid read of size 4\n==7==    at 0x1: f (a.c:1)\n",
                "==7== Invalid read of size 4\n \n==7==    at 0x1: f (a.c:1)\n",
                "==7==Invalid read of size 4\n==7==\tat 0x1: f (a.c:1)\n==7==  begin\n",
                "==7==  ERROR SUMMARY: 1 errors from 1 contexts (suppressed: 0 from 0)\n",
                "==7== \x85at 0x1: f (a.c:1)\x85\n==7== \x0c\n--7-- note\n**7** warn\n",
                "==٧== Invalid read of size 4\n==7==    by 0x2: g (in /lib/x.so)\n==7== end \n"]:
        text = head + odd + "==7== ERROR SUMMARY: 1 errors from 1 contexts (suppressed: 0 from 0)\n"
        same_text(text)
        same_text(text, 0)
        lines = [head, odd, odd + "==7== x\n \n", "==7== begin\r\n", odd]
        for budget in (0, 5000):
            assert (outcome(vglog.parse_lines, lines, budget)
                    == outcome(vglog_v1.parse_lines, lines, budget))


def big_logs() -> dict[str, str]:
    """Past the findings budget in one process, and several processes
    interleaved line by line sharing one budget."""
    text = {name: (INPUTS / name).read_text() for name in TEXT_LOGS}
    mixed = ["invalid-read-nomarkers.log", "show-error-list.log", "incremental-leak-check.log",
             "thread-errors.log", "sigterm-stop.log", "fork-leak.log", "helgrind-race.log"]
    return {
        "leaks-x1300": repeat_records(text["leaks.log"], 1300),
        "invalid-read-x1300": repeat_records(text["invalid-read-nomarkers.log"], 1300),
        "interleaved": interleave([with_pid(repeat_records(text[n], 300), 50000 + i)
                                   for i, n in enumerate(mixed)]),
        "copies": copies(repeat_records(text["incremental-leak-check.log"], 400), 4),
    }


@pytest.mark.parametrize("budget", [5000, 100])
def test_big_logs(budget: int) -> None:
    past = []
    for name, text in big_logs().items():
        old = outcome(vglog_v1.parse_text, text, budget)
        if sum(p["dropped_findings"] for p in old["processes"]):
            past.append(name)
        assert outcome(vglog.parse_text, text, budget) == old, name
        assert outcome(vglog.parse_lines, io.StringIO(text), budget) == old, name
        assert outcome(vglog.parse_texts, texts_of(text, 1 << 16), budget) == old, name
    assert len(past) == (4 if budget == 100 else 3), past    # the budget is really exceeded


# -- XML -----------------------------------------------------------------------
def with_budget(old: dict, budget: int) -> dict:
    """The frozen XML parser's result as it is with a findings budget: the
    first `budget` findings kept, the rest counted; summaries unchanged."""
    if isinstance(old, tuple):
        return old
    [proc] = old["processes"]
    kept = proc["findings"][:budget]
    return old | {"processes": [proc | {"findings": kept,
                                        "dropped_findings": len(proc["findings"]) - len(kept)}]}


def same_xml(data: bytes, budget: int | None = None) -> None:
    old = outcome(vgxml_v1.parse_xml, data)
    if budget is None:
        assert outcome(vgxml.parse_xml, data) == with_budget(old, 5000)
        assert outcome(vgxml.parse_xml, io.BytesIO(data)) == with_budget(old, 5000)
    else:
        assert outcome(vgxml.parse_xml, data, max_findings=budget) == with_budget(old, budget)


@pytest.mark.parametrize("budget", [None, 0, 1, 2])
@pytest.mark.parametrize("name", XML_LOGS)
def test_every_recorded_xml_log(name: str, budget: int | None) -> None:
    same_xml((INPUTS / name).read_bytes(), budget)


@pytest.mark.parametrize("name", XML_LOGS)
def test_xml_cut_anywhere(name: str) -> None:
    data = (INPUTS / name).read_bytes()
    for cut in range(0, len(data), 37):
        same_xml(data[:cut])
        same_xml(data[:cut], 1)


def test_big_xml_past_the_budget() -> None:
    data = repeat_xml_errors((INPUTS / "leaks.xml").read_bytes(), 1300)
    old = outcome(vgxml_v1.parse_xml, data)
    assert len(old["processes"][0]["findings"]) > 5000
    assert outcome(vgxml.parse_xml, data, max_findings=10**9) == old
    same_xml(data)


# -- hypothesis: mutated real logs ---------------------------------------------
LOGS = {name: (INPUTS / name).read_text() for name in TEXT_LOGS}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
budgets = st.sampled_from([0, 1, 2, 5, 5000])


@FUZZ
@given(name=st.sampled_from(TEXT_LOGS), cut=st.floats(0, 1), budget=budgets)
def test_same_on_truncated_logs(name: str, cut: float, budget: int) -> None:
    text = LOGS[name]
    same_text(text[:int(len(text) * cut)], budget)


@FUZZ
@given(name=st.sampled_from(TEXT_LOGS), seed=st.randoms(use_true_random=False), budget=budgets)
def test_same_on_shuffled_lines(name: str, seed, budget: int) -> None:
    lines = LOGS[name].splitlines(keepends=True)
    seed.shuffle(lines)
    same_text("".join(lines), budget)


@FUZZ
@given(name=st.sampled_from(TEXT_LOGS), data=st.data(), budget=budgets)
def test_same_on_corrupted_bytes(name: str, data, budget: int) -> None:
    text = bytearray(LOGS[name].encode())
    for _ in range(data.draw(st.integers(1, 30))):
        i = data.draw(st.integers(0, len(text) - 1))
        text[i] = data.draw(st.integers(0, 255))
    same_text(text.decode(errors="replace"), budget)


@FUZZ
@given(name=st.sampled_from(TEXT_LOGS), data=st.data(), budget=budgets)
def test_same_on_dropped_and_repeated_lines(name: str, data, budget: int) -> None:
    lines = LOGS[name].splitlines(keepends=True)
    keep = [line * data.draw(st.integers(0, 2)) for line in lines]
    same_text("".join(keep), budget)


@FUZZ
@given(st.text(max_size=2000), budgets)
def test_same_on_arbitrary_text(text: str, budget: int) -> None:
    same_text(text, budget)


prefixed = st.lists(st.tuples(st.sampled_from(["==1== ", "==1==", "==22== ", "--1-- ", ""]),
                              st.text(st.sampled_from(list(" \t\rabegindIvt0x:(.)S\n\x85")),
                                      max_size=30)), max_size=40)


@FUZZ
@given(prefixed, budgets)
def test_same_on_prefixed_junk(parts, budget: int) -> None:
    same_text("".join(p + t + "\n" for p, t in parts), budget)


@FUZZ
@given(name=st.sampled_from(XML_LOGS), data=st.data(), budget=st.sampled_from([0, 1, 5000]))
def test_same_on_corrupted_xml(name: str, data, budget: int) -> None:
    xml = bytearray((INPUTS / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 10))):
        i = data.draw(st.integers(0, len(xml) - 1))
        xml[i] = data.draw(st.integers(0, 255))
    same_xml(bytes(xml), budget)


XML_TAGS = ["valgrindoutput", "error", "pid", "ppid", "tool", "line", "state", "pair", "count",
            "fatal_signal", "stack", "frame", "fn", "file", "obj", "kind", "what", "xwhat",
            "leakedbytes", "leakedblocks", "text", "auxwhat", "xauxwhat", "origin", "signo",
            "signame", "event", "siaddr", "status", "errorcounts", "other"]
XML_TEXTS = ["", " ", "12", " 7 ", "x1", "FINISHED", "Command: ./a b", "Leak_DefinitelyLost",
             "Leak_PossiblyLost", "InvalidRead", "64 (16 direct, 48 indirect) bytes", "(, direct, 1 indirect)",
             "SIGSEGV", "0x0", "main", "a.c"]
elements = st.recursive(
    st.tuples(st.sampled_from(XML_TAGS), st.sampled_from(XML_TEXTS), st.just([])),
    lambda inner: st.tuples(st.sampled_from(XML_TAGS), st.sampled_from(XML_TEXTS),
                            st.lists(inner, max_size=5)),
    max_leaves=40)


def xml_of(elem) -> str:
    tag, text, children = elem
    return f"<{tag}>{text}{''.join(map(xml_of, children))}</{tag}>"


@FUZZ
@given(elements, st.floats(0, 1), st.sampled_from([0, 1, 5000]))
def test_same_on_any_tree_of_valgrinds_tags(tree, cut: float, budget: int) -> None:
    """Any nesting of the elements the parser reads, whole or cut short."""
    doc = ('<?xml version="1.0"?>\n' + xml_of(tree)).encode()
    same_xml(doc, budget)
    same_xml(doc[:int(len(doc) * cut)], budget)
