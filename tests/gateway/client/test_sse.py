"""The client's server-sent event parser: only complete events come out, so a stream cut
mid-event and resumed with Last-Event-ID neither loses nor repeats one."""

from __future__ import annotations

from gateway.client.sse import parse_events


def test_complete_events_with_ids_and_names():
    lines = ["id: ftevent-1", "event: fine_tuning.job.event", 'data: {"a": 1}', "", ": ping", ""]
    [event] = parse_events(lines)
    assert (event.id, event.event, event.json()) == ("ftevent-1", "fine_tuning.job.event", {"a": 1})


def test_an_event_cut_off_before_its_blank_line_is_never_seen():
    lines = ["id: 1", "data: one", "", "id: 2", "data: tw"]
    assert [e.data for e in parse_events(lines)] == ["one"]


def test_multi_line_data_and_the_id_carrying_over():
    lines = ["id: 7", "data: a", "data: b", "", "data: c", ""]
    events = list(parse_events(lines))
    assert [(e.id, e.data) for e in events] == [("7", "a\nb"), ("7", "c")]
    assert [e.event for e in events] == ["message", "message"]
