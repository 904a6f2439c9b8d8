"""The simulators' in-memory axis: records kept out of the garbage collector's sight, receipts due in order."""

from __future__ import annotations

import gc
from datetime import datetime
from pathlib import Path

import pytest

from docbus.simulators.common import AxisState, ReceivedPacket, SimulatorConfig
from docbus.simulators.receipts import PacketHeader, Party
from docbus.simulators.shelf import Shelf

HEADER = PacketHeader(
    is_status=False,
    sender=Party("000.00.00.G22", (("OrganName", "Văn phòng Chính phủ"),)),
    receivers=(Party("000.00.00.H41"), Party("000.00.00.H14", (("Email", "caobang@gov.vn"),))),
    document_id="000.00.00.G22,2026/11/27,1",
    code="1/VPCP",
    promulgation_date="2026/11/27",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_shelf_gives_back_the_records_it_was_given() -> None:
    shelf: Shelf[ReceivedPacket] = Shelf(ReceivedPacket.row, ReceivedPacket.from_row)
    packet = ReceivedPacket("d1", "edoc", HEADER, "key", b"<edXML/>", datetime(2026, 11, 27))
    shelf["d1"] = packet
    assert "d1" in shelf and "d2" not in shelf and len(shelf) == 1
    back = shelf["d1"]
    assert back == packet and type(back) is ReceivedPacket
    assert type(back.header) is PacketHeader and type(back.header.receivers[1]) is Party
    assert back.header.receivers[1].details == (("Email", "caobang@gov.vn"),)
    assert shelf.get("d2") is None and list(shelf.values()) == [packet]
    shelf["d2"] = packet._replace(doc_id="d2")
    assert shelf.oldest() == "d1"
    shelf.discard("d1")
    shelf.discard("d1")  # gone already: nothing to do
    assert shelf.oldest() == "d2" and "d1" not in shelf and len(shelf) == 1
    shelf.clear()
    assert len(shelf) == 0 and shelf.get("d1") is None


def test_stored_rows_leave_the_collectors_sight_where_named_tuples_would_not() -> None:
    packet = ReceivedPacket("d1", "edoc", HEADER, "key", b"<edXML/>", datetime(2026, 11, 27))
    row = packet.row()
    assert type(row) is tuple and type(row[2]) is tuple and type(row[2][2][0]) is tuple
    for _ in range(6):  # a full collection untracks one level of nesting, innermost first
        gc.collect()
    assert not gc.is_tracked(row)  # walked by no later collection
    assert gc.is_tracked(packet)  # a named tuple is an object of a class: tracked for life
    assert ReceivedPacket.from_row(row) == packet


@pytest.fixture
def axis() -> tuple[AxisState, Clock]:
    clock = Clock()
    return AxisState(SimulatorConfig(receipt_delays=(1.0, 2.0, 3.0)), clock=clock), clock


@pytest.fixture
def document(samples_dir: Path) -> bytes:
    return (samples_dir / "edoc_new.edxml").read_bytes()


def test_receipts_come_due_in_order_and_leave_when_finished(axis: tuple[AxisState, Clock], document: bytes) -> None:
    state, clock = axis
    packet, duplicate = state.accept(document, "edoc", "k1")
    assert not duplicate
    receivers = len(packet.header.receivers)
    assert len(state.receipts) == 3 * receivers and state.waiting() == []

    clock.now += 1.0
    first = state.waiting()
    assert [r.status_code for r in first] == ["01"] * receivers
    assert [r.sequence for r in first] == sorted(r.sequence for r in first)
    assert all(state.transport_status(r) == "pending" for r in first)
    assert [r.reporter for r in first] == list(packet.header.receivers)
    assert all(r.original == packet.header and r.answers == packet.doc_id for r in first)

    clock.now += 5.0
    due = state.waiting()
    assert [r.status_code for r in due] == ["01"] * receivers + ["03"] * receivers + ["06"] * receivers
    assert [(r.due, r.sequence) for r in due] == sorted((r.due, r.sequence) for r in due)

    state.set_transport_status(due[0], "processing")
    state.set_transport_status(due[1], "done")
    state.set_transport_status(due[-1], "fail")
    left = state.waiting()
    assert due[0] in left and due[1] not in left and due[-1] not in left and len(left) == len(due) - 2
    assert state.transport_status(due[0]) == "processing" and state.transport_status(due[-1]) == "fail"
    assert b"<edXML:StatusCode>" in state.receipt_packet(due[0])
    assert state.receipt_packet(due[0]) is state.receipt_packet(due[0])  # written once

    state.set_transport_status(due[-1], "processing")  # asked for again: back on the list, in its place
    assert state.waiting()[-1] == due[-1]


def test_a_repeated_key_is_counted_and_a_reset_forgets_everything(
    axis: tuple[AxisState, Clock], document: bytes
) -> None:
    state, clock = axis
    packet, _ = state.accept(document, "edoc", "k1")
    again, duplicate = state.accept(b"ignored: the key is known", "edoc", "k1")
    assert duplicate and again == packet and state.duplicates(packet) == 1
    assert state.received[packet.doc_id] == packet
    clock.now += 10
    assert state.waiting()
    state.reset()
    assert len(state.received) == 0 and len(state.receipts) == 0 and state.waiting() == []
    fresh, duplicate = state.accept(document, "edoc", "k1")
    assert not duplicate and state.duplicates(fresh) == 0


def test_past_its_limit_a_simulator_forgets_the_oldest_packets_with_their_receipts(document: bytes) -> None:
    clock = Clock()
    state = AxisState(SimulatorConfig(receipt_delays=(1.0, 2.0, 3.0), keep_packets=3), clock=clock)
    first = [state.accept(document, "edoc", f"k{n}")[0] for n in (1, 2, 3)]
    per_packet = 3 * len(first[0].header.receivers)
    clock.now += 5  # every receipt of the first three is due
    due_before = state.waiting()
    assert len(due_before) == 3 * per_packet
    state.set_transport_status(due_before[0], "processing")
    assert state.receipt_packet(due_before[0])

    later = [state.accept(document, "edoc", f"k{n}")[0] for n in (4, 5)]
    kept = [first[2], *later]
    assert [p.doc_id for p in state.received.values()] == [p.doc_id for p in kept]
    assert len(state.receipts) == 3 * per_packet
    assert {r.answers for r in state.receipts.values()} == {p.doc_id for p in kept}
    # The forgotten packets' receipts are neither listed nor fetchable; the kept ones' come due as before.
    assert state.receipt(due_before[0].doc_id) is None
    assert {r.answers for r in state.waiting()} == {first[2].doc_id}
    clock.now += 5
    assert {r.answers for r in state.waiting()} == {p.doc_id for p in kept}
    # A forgotten key is new again; a kept one is still a duplicate.
    again, duplicate = state.accept(document, "edoc", "k1")
    assert not duplicate and again.doc_id != first[0].doc_id
    assert state.accept(document, "edoc", "k5") == (later[1], True)


def test_a_simulator_must_keep_at_least_one_packet() -> None:
    with pytest.raises(ValueError, match="keep_packets"):
        SimulatorConfig(keep_packets=0)
