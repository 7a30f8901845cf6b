"""Each scenario step does what it says ON THE WIRE.

The server is a small Python one (tests/pyserver.py) that records what it
observes per connection; the client is harness.drive.clients.Player, driven
directly.  Every wait is an event with a deadline (Condition.wait_for).
"""
from __future__ import annotations

import fcntl
import re
import signal
import socket
import struct
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

import pyserver
from harness.drive.clients import _unread, kernel_queues, play, tcp_state
from harness.drive.scenario import parse_scenario

T = 5.0         # deadline of any wait for the server to observe something


def scenario(*steps: dict, **settings):
    data = {"steps": list(steps)}
    if settings:
        data["settings"] = settings
    return parse_scenario(data, "test", "test")


class StopCounter:
    """The stop function: counts calls; may first wait for a condition so a
    test can hold the client at a known point (the stop step as a barrier)."""

    def __init__(self, before=None) -> None:
        self.calls = 0
        self.before = before

    def __call__(self) -> None:
        self.calls += 1
        if self.before is not None:
            assert self.before(), "the barrier's condition did not hold in time"


def run(srv: pyserver.PyServer, *steps: dict, stop=None, step_timeout: float = T,
        keep_open: bool = False):
    stop = stop or StopCounter()
    result, player = play(scenario(*steps), "127.0.0.1", srv.port, stop, step_timeout)
    if not keep_open:
        player.close_all()
    return result, player, stop


def only(srv: pyserver.PyServer) -> pyserver.Seen:
    assert srv.wait_for(lambda: len(srv.accepted) >= 1, T)
    assert len(srv.accepted) == 1, f"{len(srv.accepted)} connections accepted, expected 1"
    return srv.accepted[0]


def ended(srv: pyserver.PyServer, seen: pyserver.Seen) -> str:
    assert srv.wait_for(lambda: seen.end is not None, T), "the server saw no end"
    return seen.end


# -- close, reset, half_close ------------------------------------------------------
def test_reset_is_seen_as_econnreset_not_eof():
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "bye\n"},
                           {"do": "reset", "conn": "c"}, keep_open=True)
        assert result.failures == []
        seen = only(srv)
        assert ended(srv, seen) == "reset"
        assert seen.data == b"bye\n"


def test_close_is_seen_as_eof():
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "bye\n"},
                           {"do": "close", "conn": "c"}, keep_open=True)
        assert result.failures == []
        seen = only(srv)
        assert ended(srv, seen) == "eof"
        assert seen.data == b"bye\n"


def test_close_with_unread_reply_is_still_a_fin():
    """The echo sits unread in the client's receive queue when it closes:
    the kernel would turn that close into an RST; the step must not."""
    with pyserver.PyServer(pyserver.echo) as srv:
        def echoed() -> bool:
            return srv.wait_for(lambda: srv.accepted and srv.accepted[0].sent >= 7, T)
        result, _, stop = run(srv, {"do": "open", "conn": "c"},
                              {"do": "send", "conn": "c", "text": "unread\n"},
                              {"do": "stop"},                 # barrier: the echo was sent
                              {"do": "close", "conn": "c"},
                              stop=StopCounter(echoed), keep_open=True)
        assert result.failures == [] and stop.calls == 1
        seen = only(srv)
        assert ended(srv, seen) == "eof"


def test_half_close_is_eof_and_the_client_still_receives():
    with pyserver.PyServer(pyserver.echo_after_eof) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "a line\nand a partial one"},
                           {"do": "half_close", "conn": "c"},
                           {"do": "expect", "conn": "c", "echo": True},
                           {"do": "wait_closed", "conn": "c", "how": "eof"})
        assert result.failures == []
        seen = only(srv)
        assert ended(srv, seen) == "eof"
        # the server saw the EOF first, then still sent (and the client got it)
        assert seen.events.index("eof") < seen.events.index("sent")
        assert seen.sent == len(b"a line\nand a partial one")


def test_using_a_closed_connection_fails_clearly():
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"}, {"do": "close", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "late\n"})
        assert result.failures == ["step 3 (send): connection 'c' was closed by an earlier step"]


# -- send ----------------------------------------------------------------------------
@pytest.fixture
def quick_thread_switches():
    """Client and server threads share one GIL: let a thread woken by the
    kernel run at once, so the server reads while the client still sends."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("chunk", ["byte", "all"])
def test_send_chunk_byte_arrives_in_many_segments(chunk, quick_thread_switches):
    text = "".join(chr(ord("a") + i % 26) for i in range(2000)) + "\n"
    with pyserver.PyServer(pyserver.record) as srv:
        # barrier: the server has accepted and waits in recv before the bytes flow
        barrier = StopCounter(lambda: srv.wait_for(lambda: len(srv.accepted) == 1, T))
        result, _, _ = run(srv, {"do": "open", "conn": "c"}, {"do": "stop"},
                           {"do": "send", "conn": "c", "text": text, "chunk": chunk},
                           {"do": "close", "conn": "c"}, stop=barrier)
        assert result.failures == []
        seen = only(srv)
        assert ended(srv, seen) == "eof"
        assert seen.data == text.encode()
        segments = srv.data_segments_in(seen)    # counted by the kernel: no timing in it
        if chunk == "byte":
            assert segments > 1 and seen.recvs > 1, (segments, seen.recvs)
        else:
            assert segments == 1, segments


@pytest.mark.parametrize("size,line_length", [(1000, 10), (1001, 64), (500, 0), (300, 1)])
def test_send_generated_lines(size, line_length):
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "size": size, "line_length": line_length,
                            "chunk": "line"},
                           {"do": "close", "conn": "c"})
        assert result.failures == []
        seen = only(srv)
        assert ended(srv, seen) == "eof"
        data = seen.data
        assert len(data) == size
        if line_length == 0:
            assert b"\n" not in data
            return
        lines = data.split(b"\n")
        whole, last = lines[:-1], lines[-1]
        assert all(len(line) + 1 == line_length for line in whole)
        assert len(whole) == size // line_length
        assert len(last) == size % line_length


def test_send_repeat_and_hex():
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "ab\n", "repeat": 3},
                           {"do": "send", "conn": "c", "hex": "00ff7f0a"},
                           {"do": "close", "conn": "c"})
        assert result.failures == []
        seen = only(srv)
        assert ended(srv, seen) == "eof"
        assert seen.data == b"ab\nab\nab\n\x00\xff\x7f\n"


# -- expect ----------------------------------------------------------------------------
def test_expect_forms_succeed_against_an_echo():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(
            srv, {"do": "open", "conn": "c"},
            {"do": "send", "conn": "c", "text": "hello\n"},
            {"do": "expect", "conn": "c", "echo": True},
            {"do": "send", "conn": "c", "text": "exact\n"},
            {"do": "expect", "conn": "c", "text": "exact\n"},
            {"do": "send", "conn": "c", "hex": "00ff10"},
            {"do": "expect", "conn": "c", "hex": "00ff10"},
            {"do": "send", "conn": "c", "size": 100000, "line_length": 100},
            {"do": "expect", "conn": "c", "size": 100000},
            {"do": "send", "conn": "c", "text": "one\ntwo\n"},
            {"do": "expect", "conn": "c", "line": True},
            {"do": "expect", "conn": "c", "text": "two\n"},
            {"do": "close", "conn": "c"})
        assert result.failures == []


def test_expect_mismatch_names_the_step_and_skips_the_rest():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, stop = run(srv, {"do": "open", "conn": "c"},
                              {"do": "send", "conn": "c", "text": "hello\n"},
                              {"do": "expect", "conn": "c", "text": "help!\n"},
                              {"do": "stop"})
        assert len(result.failures) == 1
        msg = result.failures[0]
        assert msg.startswith("step 3 (expect): c: reply differs at byte 3"), msg
        assert stop.calls == 0, "the steps after a failure must be skipped"


def test_expect_hex_mismatch():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "hex": "0102"},
                           {"do": "expect", "conn": "c", "hex": "0103"})
        assert result.failures and result.failures[0].startswith("step 3 (expect): c: reply differs")


@pytest.mark.parametrize("expect", [{"size": 100}, {"line": True}, {"text": "hi\nmore"}])
def test_expect_times_out_with_the_step_named(expect):
    with pyserver.PyServer(pyserver.echo) as srv:
        t0 = time.monotonic()
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "hi"},
                           {"do": "expect", "conn": "c", "timeout": 0.3, **expect})
        took = time.monotonic() - t0
        assert len(result.failures) == 1
        assert result.failures[0].startswith("step 3 (expect): c: timed out"), result.failures
        assert 0.3 <= took < 3


def test_expect_sees_the_server_close():
    with pyserver.PyServer(pyserver.close_at_once) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "expect", "conn": "c", "line": True})
        assert result.failures and "step 2 (expect): c: the server closed the connection" \
            in result.failures[0]


# -- stall + wait_read ------------------------------------------------------------------
def test_stall_and_wait_read_measure_what_the_server_holds():
    size = 6 << 20
    with pyserver.PyServer(pyserver.queued_echo) as srv:
        result, player, _ = run(srv, {"do": "open", "conn": "c", "rcvbuf": 4096},
                                {"do": "stall", "conn": "c"},
                                {"do": "send", "conn": "c", "size": size, "line_length": 128},
                                {"do": "wait_read", "conn": "c", "min_queued": 65536},
                                keep_open=True, step_timeout=15)
        try:
            assert result.failures == []
            seen = only(srv)
            note = next(n for n in result.notes if n.startswith("step 4 (wait_read) c:"))
            assert "client unsent 0, server unread 0" in note, note
            held = int(re.search(r"held by the server (\d+)", note).group(1))
            assert held >= 65536
            # the server read it all and is stuck writing: its queue is final
            assert srv.wait_for(lambda: len(seen.data) == size and seen.blocked, T)
            with srv.cond:
                pending = seen.pending
            # what the server holds = what was sent - what sits in kernel buffers
            conn = player.conns["c"]
            inq = struct.unpack("i", fcntl.ioctl(conn.sock, termios.FIONREAD, b"\0" * 4))[0]
            tx, rx = kernel_queues(srv.port, conn.client_port)
            assert (rx, size - inq - tx) == (0, pending)
            # the note's figure was read when the counts had settled; a server
            # still moving replies into its socket then can only have less now
            assert 65536 <= pending <= held, (note, pending)
        finally:
            player.close_all()


def test_wait_read_fails_when_the_server_stops_reading():
    with pyserver.PyServer(pyserver.read_then_stop(10)) as srv:
        t0 = time.monotonic()
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "size": 65536},
                           {"do": "wait_read", "conn": "c", "timeout": 0.5})
        took = time.monotonic() - t0
        assert len(result.failures) == 1
        msg = result.failures[0]
        assert msg.startswith("step 3 (wait_read): c: the server did not read everything "
                              "within 0.5s"), msg
        assert re.search(r"server unread [1-9]\d*", msg), msg
        assert 0.5 <= took < 3


@pytest.mark.parametrize("reply", [b"", b"r" * 3000], ids=["silent", "replied"])
def test_send_fails_when_the_server_stops_reading_and_says_its_window_is_shut(reply):
    """A server that reads nothing more: the send stops taking bytes and the
    step fails after its timeout, naming the kernel's view: the server's
    window shut, and the bytes the server's socket holds unread.  With a
    reply waiting in the client's kernel, the client still reads nothing:
    the server's unread bytes say it is the server, not TCP, standing
    still (Player._unstick)."""
    with pyserver.PyServer(pyserver.read_then_stop(10, reply)) as srv:
        t0 = time.monotonic()
        result, player, _ = run(srv, {"do": "open", "conn": "c"},
                                {"do": "send", "conn": "c", "size": 64 << 20, "timeout": 2},
                                keep_open=True)
        try:
            took = time.monotonic() - t0
            conn = player.conns["c"]
            state = tcp_state(conn.sock)
            waiting = _unread(conn.sock)
        finally:
            player.close_all()
        assert (conn.received, conn.standstills, waiting) == (0, 0, len(reply))
        assert not [n for n in result.notes if "stood still" in n], result.notes
        assert len(result.failures) == 1
        msg = result.failures[0]
        assert re.match(r"step 2 \(send\): c: the server stopped taking data \(\d+ bytes sent, "
                        r"none taken for 2s; ", msg), msg
        assert re.search(r"window is shut( \(\d+ window probes unanswered\))?, server unread [1-9]",
                         msg) and state.shut and state.window == 0, msg
        assert 2 <= took < 10


# -- wait_closed ----------------------------------------------------------------------------
@pytest.mark.parametrize("handler,how", [(pyserver.close_on_data, "eof"),
                                         (pyserver.reset_on_data, "reset"),
                                         (pyserver.close_on_data, "any"),
                                         (pyserver.reset_on_data, "any")])
def test_wait_closed(handler, how):
    with pyserver.PyServer(handler) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "x"},
                           {"do": "wait_closed", "conn": "c", "how": how})
        assert result.failures == []


@pytest.mark.parametrize("handler,how,saw", [(pyserver.close_on_data, "reset", "eof"),
                                             (pyserver.reset_on_data, "eof", "reset")])
def test_wait_closed_wrong_kind(handler, how, saw):
    with pyserver.PyServer(handler) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "x"},
                           {"do": "wait_closed", "conn": "c", "how": how})
        assert result.failures == [f"step 3 (wait_closed): c: the server closed with {saw}, "
                                   f"expected {how}"]


def test_wait_closed_times_out_when_the_server_never_closes():
    with pyserver.PyServer(pyserver.hold) as srv:
        t0 = time.monotonic()
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "wait_closed", "conn": "c", "timeout": 0.3})
        took = time.monotonic() - t0
        assert result.failures == ["step 2 (wait_closed): c: the server did not close the "
                                   "connection within 0.3s"]
        assert 0.3 <= took < 3


# -- stop, pause -----------------------------------------------------------------------------
def test_stop_is_called_once_and_later_steps_run():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, stop = run(srv, {"do": "open", "conn": "c"}, {"do": "stop"},
                              {"do": "send", "conn": "c", "text": "after the stop\n"},
                              {"do": "expect", "conn": "c", "echo": True},
                              {"do": "close", "conn": "c"})
        assert result.failures == []
        assert stop.calls == 1
        assert result.stopped


def test_pause_is_bounded():
    with pyserver.PyServer(pyserver.record) as srv:
        t0 = time.monotonic()
        result, _, _ = run(srv, {"do": "pause", "seconds": 0.2})
        took = time.monotonic() - t0
        assert result.failures == []
        assert 0.2 <= took < 2


# -- open -------------------------------------------------------------------------------------
def test_open_group_whole_and_members_and_rcvbuf():
    with pyserver.PyServer(pyserver.record) as srv:
        result, player, _ = run(srv, {"do": "open", "conn": "g", "count": 3, "rcvbuf": 4096},
                                {"do": "send", "conn": "g", "text": "all\n"},
                                {"do": "send", "conn": "g2", "text": "only two\n"},
                                keep_open=True)
        try:
            assert result.failures == []
            assert sorted(player.conns) == ["g1", "g2", "g3"]
            with socket.socket() as plain:
                default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            ports = {}
            for name in ("g1", "g2", "g3"):
                sock = player.conns[name].sock
                rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                assert rcvbuf <= 2 * 4096 < default, (name, rcvbuf, default)
                ports[name] = sock.getsockname()[1]
        finally:
            player.close_all()
        assert srv.wait_for(lambda: len(srv.accepted) == 3 and srv.ended() == 3, T)
        assert len(srv.accepted) == 3
        got = {name: srv.by_port(port) for name, port in ports.items()}
        assert got["g1"].data == b"all\n"
        assert got["g2"].data == b"all\nonly two\n"
        assert got["g3"].data == b"all\n"
        assert all(s.end == "eof" for s in got.values())


def test_open_nodelay_sets_tcp_nodelay():
    with pyserver.PyServer(pyserver.record) as srv:
        result, player, _ = run(srv, {"do": "open", "conns": ["fast", "plain"]},
                                keep_open=True)
        assert result.failures == []
        player.close_all()
        result, player, _ = run(srv, {"do": "open", "conn": "fast", "nodelay": True},
                                {"do": "open", "conn": "plain"}, keep_open=True)
        try:
            assert result.failures == []
            flag = {n: player.conns[n].sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                    for n in ("fast", "plain")}
        finally:
            player.close_all()
        assert flag["fast"] != 0 and flag["plain"] == 0


# -- drain ------------------------------------------------------------------------------------
def test_drain_reads_what_arrived_without_waiting_and_at_most_max_bytes():
    for drains, want in (([4], 4), ([4, None, None], 10)):
        with pyserver.PyServer(pyserver.echo) as srv:
            # The stop step is a barrier: the server has written the echo,
            # which loopback has already put in the client's receive queue.
            barrier = StopCounter(lambda: srv.wait_for(lambda: srv.accepted and
                                                       srv.accepted[0].sent >= 10, T))
            steps = [{"do": "drain", "conn": "c"} | ({"max_bytes": n} if n else {})
                     for n in drains]
            result, player, _ = run(srv, {"do": "open", "conn": "c"},
                                    {"do": "send", "conn": "c", "text": "0123456789"},
                                    {"do": "stop"}, *steps, stop=barrier, keep_open=True)
            try:
                assert result.failures == []
                assert player.conns["c"].received == want
            finally:
                player.close_all()
            seen = only(srv)
            assert ended(srv, seen) == "eof"    # a close after a drain is still a FIN


def test_drain_of_a_connection_the_server_closed_is_a_note_not_a_failure():
    with pyserver.PyServer(pyserver.close_at_once) as srv:
        barrier = StopCounter(lambda: srv.wait_for(lambda: srv.accepted and
                                                   srv.accepted[0].closed, T))
        result, _, _ = run(srv, {"do": "open", "conn": "c"}, {"do": "stop"},
                           {"do": "drain", "conn": "c"}, stop=barrier)
        assert result.failures == []
        assert "step 3 (drain) c: the server closed the connection" in result.notes


def test_open_refused_is_a_step_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]       # bound, not listening: connect is refused
        result, _ = play(scenario({"do": "open", "conn": "c"}), "127.0.0.1", port,
                         StopCounter(), 2.0)
    assert result.failures == ["step 1 (open): ECONNREFUSED: Connection refused"]


# -- storm ------------------------------------------------------------------------------------
def storm_step(**keys) -> dict:
    return {"do": "storm", **keys}


def test_storm_count_and_concurrency():
    count, concurrency = 60, 8
    with pyserver.PyServer(pyserver.echo) as srv:
        result, player, _ = run(srv, storm_step(count=count, concurrency=concurrency, seed=3,
                                                endings=["close", "reset", "half_close",
                                                         "stall_reset"],
                                                stall_bytes=65536))
        assert result.failures == []
        stats = result.stats["step 1 (storm)"]
        assert stats["count"] == count and stats["failed"] == 0
        assert sum(stats["endings"].values()) == count
        assert srv.wait_for(lambda: srv.ended() == count, T), \
            f"{srv.ended()} of {len(srv.accepted)} ended"
        assert len(srv.accepted) == count
        assert 2 <= srv.max_open <= concurrency, srv.max_open
        # each connection's ending, as the server saw it
        ends = sorted(s.end for s in srv.accepted)
        assert set(ends) <= {"eof", "reset"}


def test_storm_endings_follow_the_seed():
    def endings(seed: int) -> dict:
        with pyserver.PyServer(pyserver.echo) as srv:
            result, _, _ = run(srv, storm_step(count=30, concurrency=8, seed=seed,
                                               stall_bytes=65536, max_idle=64))
            assert result.failures == []
            stats = result.stats["step 1 (storm)"]
            assert stats["failed"] == 0 and sum(stats["endings"].values()) == 30
            return stats["endings"]
    first, again, other = endings(11), endings(11), endings(12)
    assert first == again
    assert first != other


def test_storm_idle_connections_stay_open_until_close_all():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, player, _ = run(srv, storm_step(count=4, concurrency=4, endings=["idle"]),
                                keep_open=True)
        try:
            assert result.failures == []
            assert result.stats["step 1 (storm)"]["endings"] == {"idle": 4}
            assert len(player.idle) == 4
            assert srv.wait_for(lambda: len(srv.accepted) == 4
                                and all(s.sent > 0 for s in srv.accepted), T)
            for seen in srv.accepted:
                assert seen.end is None
                assert srv.tcp_state(seen) == pyserver.TCP_ESTABLISHED
        finally:
            player.close_all()
        assert srv.wait_for(lambda: srv.ended() == 4, T)
        assert [s.end for s in srv.accepted] == ["eof"] * 4


def test_storm_without_echo_does_not_wait_for_replies():
    with pyserver.PyServer(pyserver.record) as srv:
        t0 = time.monotonic()
        result, _, _ = run(srv, storm_step(count=10, concurrency=4, echo=False,
                                           endings=["close"], timeout=2.0))
        assert result.failures == []
        assert time.monotonic() - t0 < 1.5
        assert srv.wait_for(lambda: srv.ended() == 10, T)
        assert all(s.data.startswith(b"storm ") and s.end == "eof" for s in srv.accepted)


# -- fuzz ---------------------------------------------------------------------------------------
def fuzz_run(seed: int | None, ops: int = 150):
    """The server reads everything and never sends or closes first, so the
    client's operations alone decide what happens on the wire."""
    step = {"do": "fuzz", "ops": ops, "max_conns": 4}
    if seed is not None:
        step["seed"] = seed
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, step)
        assert result.failures == []
        assert srv.wait_for(srv.settled, T)
        with srv.cond:
            seen = [(s.data, s.end) for s in srv.accepted]
    return result, seen


def test_fuzz_reports_its_seed_and_replays_exactly():
    first, seen1 = fuzz_run(4242)
    again, seen2 = fuzz_run(4242)
    other, seen3 = fuzz_run(4243)
    assert "step 1 (fuzz): seed 4242 (replay with seed = 4242)" in first.notes
    assert len(seen1) > 1
    assert [len(d) for d, _ in seen1] == [len(d) for d, _ in seen2]
    assert seen1 == seen2
    assert seen1 != seen3


def test_fuzz_without_a_seed_reports_the_one_it_drew():
    result, _ = fuzz_run(None, ops=20)
    notes = [n for n in result.notes if n.startswith("step 1 (fuzz): seed ")]
    assert len(notes) == 1
    seed = int(re.search(r"seed (\d+)", notes[0]).group(1))
    assert f"replay with seed = {seed}" in notes[0]


# -- expect: prefix, until, match -------------------------------------------------------
def test_expect_until_prefix_and_match_read_a_reply_of_any_length():
    reply = "HTTP/1.1 200 OK\r\nServer: any/1.2.3\r\nContent-Length: 4\r\n\r\nbody+PONG\r\nrest"
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(
            srv, {"do": "open", "conn": "c"},
            {"do": "send", "conn": "c", "text": reply},
            {"do": "expect", "conn": "c", "until": "\r\n\r\n", "prefix": "HTTP/1.1 200 OK\r\n",
             "match": r"\r\nContent-Length: \d+\r\n"},
            {"do": "expect", "conn": "c", "hex_prefix": "626f6479"},      # 'body', alone
            {"do": "expect", "conn": "c", "match": r"\+PONG\r\n"},        # alone: read until found
            {"do": "expect", "conn": "c", "text": "rest"},
            {"do": "close", "conn": "c"})
        assert result.failures == []


def test_expect_until_reads_only_through_the_first_delimiter():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "a;b;c"},
                           {"do": "expect", "conn": "c", "until": ";", "match": r"\Aa;\Z"},
                           {"do": "expect", "conn": "c", "until": ";", "prefix": "b"},
                           {"do": "expect", "conn": "c", "text": "c"})
        assert result.failures == []


@pytest.mark.parametrize("check,message", [
    ({"prefix": "HTTP/1.1 404"}, "step 3 (expect): c: reply does not start with b'HTTP/1.1 404': "
                                 "differs at byte 9: got b'200 OK\\r\\n\\r\\n', expected b'404'"),
    ({"hex_prefix": "48545450"}, None),
    ({"match": r"Content-Length"}, "step 3 (expect): c: reply does not match 'Content-Length': "
                                   "got b'HTTP/1.1 200 OK\\r\\n\\r\\n'"),
])
def test_expect_checks_name_the_step(check, message):
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "HTTP/1.1 200 OK\r\n\r\n"},
                           {"do": "expect", "conn": "c", "until": "\r\n\r\n", **check})
        assert result.failures == ([message] if message else [])


@pytest.mark.parametrize("expect,what", [
    ({"until": "\r\n\r\n", "max_bytes": 50}, "no delimiter b'\\r\\n\\r\\n' within the first 50 bytes"),
    ({"line": True, "max_bytes": 64}, "no end of line within the first 64 bytes"),
    ({"match": "END", "max_bytes": 80}, "nothing matching b'END' within the first 80 bytes"),
])
def test_expect_reads_at_most_max_bytes(expect, what):
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "size": 4096, "line_length": 0},
                           {"do": "expect", "conn": "c", **expect})
        assert len(result.failures) == 1
        assert result.failures[0].startswith(f"step 3 (expect): c: {what} (max_bytes)"), result.failures


def test_expect_until_times_out_saying_what_arrived():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(srv, {"do": "open", "conn": "c"},
                           {"do": "send", "conn": "c", "text": "HTTP/1.1 200 OK\r\n"},
                           {"do": "expect", "conn": "c", "until": "\r\n\r\n", "timeout": 0.3})
        assert result.failures == ["step 3 (expect): c: timed out; waiting for delimiter "
                                   "b'\\r\\n\\r\\n': got 17 bytes b'HTTP/1.1 200 OK\\r\\n'"]


# -- quiesce ----------------------------------------------------------------------------------
@pytest.fixture
def cpu_server(tmp_path):
    """tests/cpu_server.py under the harness's keeper, natively: a real
    process whose CPU time the quiesce step reads."""
    from harness.drive.launch import Server, Target, ValgrindOptions
    script = Path(__file__).with_name("cpu_server.py")
    target = Target(argv=[sys.executable, str(script), "{port}"], port_mode="substitute")
    server = Server(target, tmp_path / "run", ValgrindOptions(enabled=False))
    server.start()
    try:
        assert server.wait_ready(T), server.not_ready
        yield server
    finally:
        server.stop(signal.SIGTERM, T)
        server.kill()


def play_against(server, *steps, keep_open=True):
    result, player = play(scenario(*steps), "127.0.0.1", server.port,
                          lambda: server.stop(signal.SIGTERM, T), T, server)
    if not keep_open:
        player.close_all()
    return result, player


def test_quiesce_waits_until_the_server_stops_using_cpu(cpu_server):
    result, player = play_against(
        cpu_server, {"do": "open", "conn": "c"},
        {"do": "send", "conn": "c", "text": "burn 0.5\n"},
        {"do": "expect", "conn": "c", "text": "burning\n"},     # the burn has started
        {"do": "quiesce", "quiet_ms": 100})
    try:
        assert result.failures == []
        note = next(n for n in result.notes if n.startswith("step 4 (quiesce): quiet for 100 ms"))
        assert "CPU ticks in all" in note
        # The server wrote 'done' when the burn ended, before it went quiet:
        # it is already in the client's receive queue.
        sock = player.conns["c"].sock
        assert sock.recv(64, socket.MSG_DONTWAIT) == b"done\n"
    finally:
        player.close_all()


def test_quiesce_fails_when_the_server_never_settles(cpu_server):
    result, player = play_against(
        cpu_server, {"do": "open", "conn": "c"},
        {"do": "send", "conn": "c", "text": "burn 30\n"},
        {"do": "expect", "conn": "c", "text": "burning\n"},
        {"do": "quiesce", "quiet_ms": 100, "timeout": 0.5})
    player.close_all()
    assert result.failures == ["step 4 (quiesce): the server was still busy after 0.5s (it never "
                               "spent 100 ms without using CPU)"]


def test_quiesce_on_a_server_that_has_exited_is_quiet(cpu_server):
    result, player = play_against(cpu_server, {"do": "stop"}, {"do": "quiesce"})
    player.close_all()
    assert result.failures == []
    assert "step 2 (quiesce): the server has exited" in result.notes


def test_quiesce_without_a_server_process_fails_clearly():
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, {"do": "quiesce"})
    assert result.failures == ["step 1 (quiesce): no server process to watch (quiesce needs the "
                               "harness's server)"]


# -- storm and fuzz payloads ---------------------------------------------------------------
def test_storm_sends_its_payload_and_does_not_expect_an_echo():
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, storm_step(count=12, concurrency=4, text="PING\r\n",
                                           endings=["close", "reset"]))
        assert result.failures == []
        assert srv.wait_for(lambda: srv.ended() == 12, T)
        assert [s.data for s in srv.accepted] == [b"PING\r\n"] * 12


def test_storm_hex_payload_with_echo():
    with pyserver.PyServer(pyserver.echo) as srv:
        result, _, _ = run(srv, storm_step(count=10, concurrency=4, hex="c000", echo=True,
                                           endings=["close"]))
        assert result.failures == []
        assert result.stats["step 1 (storm)"]["endings"] == {"close": 10}
        assert srv.wait_for(lambda: srv.ended() == 10, T)
        assert all(s.data == b"\xc0\x00" and s.sent == 2 for s in srv.accepted)


def test_storm_connect_only_sends_nothing():
    with pyserver.PyServer(pyserver.record) as srv:
        result, _, _ = run(srv, storm_step(count=20, concurrency=5, lines=0, seed=11,
                                           endings=["close", "reset"]))
        assert result.failures == []
        assert srv.wait_for(lambda: srv.ended() == 20, T)
        assert {s.data for s in srv.accepted} == {b""}
        ends = sorted(s.end for s in srv.accepted)
        assert set(ends) == {"eof", "reset"}, ends


@pytest.mark.parametrize("may_close", [False, True])
def test_storm_server_may_close(may_close):
    with pyserver.PyServer(pyserver.close_on_data) as srv:
        result, _, _ = run(srv, storm_step(count=6, concurrency=3, text="HELLO\r\n", echo=True,
                                           endings=["close"], server_may_close=may_close))
        stats = result.stats["step 1 (storm)"]
        if may_close:
            assert result.failures == []
            assert stats["endings"] == {"server_closed": 6}
        else:
            assert stats["failed"] == 6
            assert re.match(r"step 1 \(storm\): 6 of 6 connections failed: #\d \(close, read\): "
                            r"(ECONNABORTED: the server closed before echoing|ECONNRESET)",
                            result.failures[0]), result.failures


def fuzz_payload_run(seed: int, handler=pyserver.record, **keys):
    step = {"do": "fuzz", "seed": seed, "ops": 120, "max_conns": 3, **keys}
    with pyserver.PyServer(handler) as srv:
        result, _, _ = run(srv, step)
        assert srv.wait_for(srv.settled, T)
        with srv.cond:
            seen = [(s.data, s.end) for s in srv.accepted]
    return result, seen


def test_fuzz_sends_only_its_payload_without_junk():
    payload = b"*1\r\n$4\r\nPING\r\n"
    result, seen = fuzz_payload_run(77, hex=payload.hex(), junk=False)
    assert result.failures == []
    data = b"".join(d for d, _ in seen)
    assert data and data == payload * (len(data) // len(payload))
    again, seen2 = fuzz_payload_run(77, hex=payload.hex(), junk=False)
    assert seen2 == seen


def test_fuzz_connect_only():
    result, seen = fuzz_payload_run(78, junk=False)
    assert result.failures == []
    assert len(seen) > 1 and {d for d, _ in seen} == {b""}


def test_no_thread_left_behind():
    """Every PyServer used above joined its threads (a leaked thread would
    mean a handler never saw its end)."""
    left = [t.name for t in threading.enumerate() if t.name.startswith("pyserver-")]
    assert left == []
