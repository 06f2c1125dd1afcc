"""zmqwamp.wamp.router: what a CALL or a SUBSCRIBE does (the URI, the filter, the hook within the call's deadline, the
forwarder or the hub, the ERROR for what the ZeroMQ side refused, the call metrics), and what a reload takes away
(issue 13, item 17; issue 21, item 9): every open subscription, and every SUBSCRIBE in flight, asked again under the
new rules, and revoked (WAMP subscription revocation: UNSUBSCRIBED with request 0) if denied.  Sessions speak JSON
on FakeChannels with the core of zmqwamp.testing (tests/unit/wamp/conftest.py: a hook the test steers per authid).
SIGHUP against a real bridge: tests/e2e/test_revocation.py.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from zmqwamp.testing import events, fired, joined, make_world, new_session, publish, received, send
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver
from zmqwamp.upstream.errors import BackendUnavailable, CallTimedOut
from zmqwamp.wamp.errors import LIMIT_EXCEEDED

from hang_bridge import HANGING
from memory import PUB, REP, REVOCABLE, SlowNames, configure, revoked, run_replays, subscribed
from minws import ERROR, RESULT, UNSUBSCRIBED

PLAIN = {"subscriber": {}, "caller": {}}  # a client that did not announce subscription_revocation


# -- CALL --------------------------------------------------------------------------------------------------------------


def test_call_is_forwarded_and_answered(world):
    """CALL -> one zmq request with the encoded frames and default timeout -> RESULT with decoded frames."""
    session, transport = joined(world)
    send(session, 48, 7, {}, REP, ["hello", {"n": 1}])
    address, frames, timeout, d = world.forwarder.requests[-1]
    assert (address, frames, timeout) == (REP, [b"hello", b'{"n":1}'], 10.0)
    d.callback([b"got this hello", b"5"])
    assert received(transport) == [[50, 7, {}, ["got this hello", 5]]]


def test_call_timeout_option_is_milliseconds_and_capped(world):
    """A CALL's timeout option is milliseconds, capped at max_call_timeout."""
    session, _ = joined(world)
    send(session, 48, 1, {"timeout": 1500}, REP, ["x"])
    send(session, 48, 2, {"timeout": 10_000_000}, REP, ["x"])
    assert [r[2] for r in world.forwarder.requests] == [1.5, 60.0]


def test_timeout_becomes_canceled_error(world):
    """A request that timed out is ERROR wamp.error.canceled saying it timed out."""
    session, transport = joined(world)
    send(session, 48, 3, {}, REP, ["x"])
    world.forwarder.requests[-1][3].errback(CallTimedOut("no reply from x within 1s"))
    [error] = received(transport)
    assert error[:5] == [8, 48, 3, {}, "wamp.error.canceled"]
    assert "timed out" in error[5][0]


def test_refused_send_becomes_backend_unavailable(world):
    """A send the ZeroMQ side refused is ERROR zmqwamp.error.backend_unavailable, counted as unavailable."""
    session, transport = joined(world)
    send(session, 48, 5, {}, REP, ["x"])
    world.forwarder.requests[-1][3].errback(BackendUnavailable(f"cannot send to {REP}: Resource temporarily unavailable"))
    [error] = received(transport)
    assert error[:5] == [8, 48, 5, {}, "zmqwamp.error.backend_unavailable"]
    assert world.metrics.calls.labels(REP, "unavailable")._value.get() == 1


def test_denied_call_never_reaches_zmq(world):
    """A CALL the hook denies is ERROR wamp.error.not_authorized, and nothing is sent."""
    session, transport = joined(world)
    send(session, 48, 4, {}, "tcp://10.0.0.1:1", ["x"])
    assert world.forwarder.requests == []
    assert received(transport)[0][:5] == [8, 48, 4, {}, "wamp.error.not_authorized"]


def test_call_arguments_limit(world):
    """A CALL with more than max_call_arguments arguments (each a ZeroMQ frame) is refused before anything is sent."""
    world.router.max_call_arguments = 3
    session, transport = joined(world)
    send(session, 48, 1, {}, REP, ["a", "b", "c", "d"])
    send(session, 48, 2, {}, REP, ["a", "b", "c"])
    [error] = received(transport)
    assert error[:5] == [8, 48, 1, {}, LIMIT_EXCEEDED] and error[5][0].startswith("max_call_arguments: 4 arguments, at most 3")
    assert [r[1] for r in world.forwarder.requests] == [[b"a", b"b", b"c"]]


def test_calls_are_labelled_only_with_opened_endpoints_and_at_most_so_many(world):
    """zmqwamp_calls_total names aliases and endpoints with a connection open, at most max_endpoint_labels
    of them; calls that opened nothing (a missing ipc socket) and the rest count under 'other'."""
    from zmqwamp.upstream.endpoints import Endpoint as E

    world.router.max_endpoint_labels = 2
    started = 0.0
    for i in range(50):
        world.router._count_call(E(f"ipc:///missing/{i}.sock"), "unavailable", started)
    for port in (1, 2, 3):
        world.forwarder.request(f"tcp://127.0.0.1:{port}", [], 1)  # now open
        world.router._count_call(E(f"tcp://127.0.0.1:{port}"), "ok", started)
    world.router._count_call(E("tcp://10.0.0.1:1", alias="echo"), "ok", started)
    labels = {s.labels["endpoint"] for s in world.metrics.calls.collect()[0].samples if s.name.endswith("_total")}
    assert labels == {"other", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "echo"}
    assert world.metrics.registry.get_sample_value("zmqwamp_calls_total", {"endpoint": "other", "outcome": "unavailable"}) == 50


# -- the hook's deadline -----------------------------------------------------------------------------------------------


def hanging_world(world):
    """``world`` with a hook that never answers for one endpoint."""
    pending = []

    def authorize(session, action, endpoint, options):
        if endpoint.address == HANGING:
            d = Deferred()
            pending.append(d)
            return d
        return True

    world.router.authorize = authorize
    session, transport = new_session(world)
    send(session, 1, "zmqwamp", {"roles": {"caller": {}}})
    transport.sent.clear()
    return session, transport, pending


def test_authorization_deadline_in_memory(world):
    """The hook's Deferred gets the call's timeout (CALL option, else call_timeout) on the router's clock, and is cancelled."""
    clock = world.clock
    session, transport, pending = hanging_world(world)
    send(session, 48, 1, {"timeout": 2000}, HANGING, ["x"])
    send(session, 32, 2, {}, HANGING)
    clock.advance(1.9)
    assert received(transport) == []
    clock.advance(0.2)
    assert received(transport) == [
        [ERROR, 48, 1, {}, "wamp.error.canceled", [f"call timed out: no authorization decision for '{HANGING}' within 2s"]]
    ]
    clock.advance(8)
    assert received(transport)[-1][:5] == [ERROR, 32, 2, {}, "wamp.error.timeout"]  # call_timeout 10 s
    assert all(d.called for d in pending)  # cancelled, so a hook with a canceller can stop its work
    assert session.calls_in_flight == 0 and session._subscribing == 0


def test_an_answer_in_time_is_used_and_cancels_the_deadline(world):
    """A hook that answers in time is obeyed and its deadline timer is cancelled."""
    clock = world.clock
    session, transport, pending = hanging_world(world)
    send(session, 48, 1, {}, HANGING, ["x"])
    pending[0].callback(True)
    assert clock.getDelayedCalls() == [] and len(world.forwarder.requests) == 1
    world.forwarder.requests[0][3].callback([b"ok"])
    assert received(transport) == [[RESULT, 1, {}, ["ok"]]]


# -- SUBSCRIBE: the filter, the recovery options, host names -----------------------------------------------------------


def subscribe_reply(session, transport, request, topic, options):
    send(session, 32, request, options, topic)
    return received(transport)[-1]


@pytest.mark.parametrize("options", [{"_filter": "hugo"}, {"filter": "hugo"}])
def test_filter_option_spellings(world, options):
    """`_filter` (WAMP's spelling for a custom option) and `filter` (autobahn-js habit) both narrow."""
    session, transport = joined(world)
    reply = subscribe_reply(session, transport, 1, PUB, options)
    assert reply[0] == 33
    (sub,) = world.hub.subscriptions()
    assert sub.filter == b"hugo"


@pytest.mark.parametrize(
    "topic, options",
    [
        (PUB, {"_filter": "hugo", "filter": "otto"}),
        (PUB + "?filter=hugo", {"_filter": "otto"}),
        (PUB + "?filter=hugo", {"filter": "otto"}),
    ],
)
def test_filters_that_disagree_are_an_error(world, topic, options):
    """Never a silently wider (or different) subscription: ERROR invalid_argument naming both places."""
    session, transport = joined(world)
    reply = subscribe_reply(session, transport, 1, topic, options)
    assert reply[:5] == [8, 32, 1, {}, "wamp.error.invalid_argument"]
    assert "different values" in reply[5][0]
    assert world.hub.subscriptions() == []


def test_filters_that_agree_are_one(world):
    """The same filter in the URI and both options is one filter: SUBSCRIBED."""
    session, transport = joined(world)
    assert subscribe_reply(session, transport, 1, PUB + "?filter=hugo", {"_filter": "hugo", "filter": "hugo"})[0] == 33


def test_filter_must_be_a_string(world):
    """A filter option that is not a string or bytes is ERROR wamp.error.invalid_argument."""
    session, transport = joined(world)
    send(session, 32, 1, {"filter": 5}, PUB)
    assert received(transport)[0][:5] == [8, 32, 1, {}, "wamp.error.invalid_argument"]


def test_filter_length_is_capped_for_the_option_and_the_uri(world):
    """A filter longer than max_filter_length gets ERROR limit_exceeded naming it; nothing is subscribed."""
    world.router.max_filter_length = 4
    session, transport = joined(world)
    send(session, 32, 1, {"filter": "x" * 5}, PUB)
    send(session, 32, 2, {}, PUB + "?filter=" + "%41" * 5)
    send(session, 32, 3, {"filter": "x" * 4}, PUB)
    replies = received(transport)
    for error in replies[:2]:
        assert error[:5] == [8, 32, error[2], {}, "zmqwamp.error.limit_exceeded"] and error[5][0].startswith("max_filter_length: ")
    assert replies[2][0] == 33 and world.hub.subscription_count() == 1
    assert world.metrics.registry.get_sample_value("zmqwamp_limit_exceeded_total", {"limit": "max_filter_length"}) == 2


@pytest.mark.parametrize(
    "options",
    [
        {"_since": "12"},
        {"_since": -1},
        {"_since": True},
        {"_since": 1.5},
        {"_since": 2**53 + 1},
        {"_since": 1, "_epoch": 7},
        {"_since": 1, "_epoch": "e" * 65},
    ],
)
def test_a_malformed_since_or_epoch_is_an_invalid_argument_error(world, options):
    """A _since that is not a publication id, or an _epoch that is not a short string, is ERROR invalid_argument; the session goes on."""
    configure(world, Endpoint(PUB, kind="sub", alias="ticks", history=5, history_bytes=100_000, keep_open=True))
    session, channel = joined(world)
    send(session, 32, 7, options, "ticks")
    (error,) = received(channel)
    assert error[:5] == [8, 32, 7, {}, "wamp.error.invalid_argument"]
    channel.sent.clear()
    send(session, 32, 8, {}, "ticks")  # the session goes on
    assert received(channel)[0][:2] == [33, 8]


def test_subscribe_to_a_host_name_waits_for_it_to_resolve(world):
    """SUBSCRIBED comes once the name resolved (both sessions that asked meanwhile share the subscription);
    a name that does not resolve fails the SUBSCRIBE with backend_unavailable and leaves nothing open."""
    from zmqwamp.upstream.resolver import NameNotResolved

    names = world.hub.sockets.names = SlowNames()
    world.router.authorize = lambda session, action, endpoint, options: True
    (a, ta), (b, tb) = joined(world), joined(world)
    send(a, 32, 1, {}, "tcp://feed.example:9000")
    send(b, 32, 1, {}, "tcp://feed.example:9000")
    assert received(ta) == [] and received(tb) == []
    [feed] = names.pending  # one look-up for both
    feed.callback("tcp://127.0.0.1:9000")
    assert received(ta)[0][0] == 33 and received(tb)[0][0] == 33 and received(ta)[0][2] == received(tb)[0][2]
    assert [e.address for e in world.hub._connections["tcp://feed.example:9000"].endpoints] == ["tcp://127.0.0.1:9000"]

    send(a, 32, 2, {}, "tcp://nope.example:9000")
    names.pending[1].errback(NameNotResolved("host name 'nope.example' did not resolve: unknown"))
    error = received(ta)[-1]
    assert error[:5] == [8, 32, 2, {}, "zmqwamp.error.backend_unavailable"] and "did not resolve" in error[5][0]
    assert world.hub.addresses == ["tcp://feed.example:9000"] and world.hub.subscription_count() == 1


# -- start and reload: the aliases, and what the new rules take away ---------------------------------------------------


def test_router_start_sets_up_the_configured_aliases():
    """Router.start (the bridge calls it once the reactor runs): the aliases' histories and keep_open connections."""
    kept = Endpoint(PUB, kind="sub", alias="ticks", history=5, keep_open=True)
    world = make_world(resolver=EndpointResolver({"ticks": kept}))
    try:
        assert world.hub.addresses == [] and list(world.hub.history_held()) == []
        world.router.start()
        assert world.hub.addresses == [PUB] and [name for name, *_ in world.hub.history_held()] == ["ticks"]
    finally:
        world.close()


def test_router_reload_takes_the_new_aliases_in_one_call(world):
    """Router.reload(aliases): the resolver knows the new aliases, their histories and keep_open connections are set
    up, a new policy generation begins and open subscriptions are asked again (an alias moved elsewhere is revoked)."""
    alice, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    sid = subscribed(alice, transport, "ticks")
    generation = world.router.policy_generation
    moved = Endpoint("tcp://127.0.0.1:9001", kind="sub", alias="ticks", history=5, keep_open=True)
    assert fired(world.router.reload({"ticks": moved})) == 1
    assert received(transport)[-1][:2] == [UNSUBSCRIBED, 0] and received(transport)[-1][2]["subscription"] == sid
    assert world.router.resolver.resolve("ticks").endpoint == moved
    assert world.hub.addresses == [moved.address]  # kept open at once; the old one closed with its last subscriber
    assert [name for name, *_ in world.hub.history_held()] == ["ticks"]
    assert world.router.policy_generation == generation + 1


def test_a_reload_revokes_what_the_hook_now_denies(world):
    """alice's subscription is revoked (UNSUBSCRIBED 0 with the id and reason) and gets no more EVENTs;
    bob's, on the same subscription, goes on; counted and the hub keeps the zmq subscription for bob."""
    alice, a_transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    bob, b_transport = joined(world, roles=REVOCABLE, authid="bob", ticket="any-ticket")
    sid = subscribed(alice, a_transport)
    assert subscribed(bob, b_transport) == sid
    world.test["allowed"]["alice"] = False
    assert fired(world.router.recheck_subscriptions()) == 1
    assert received(a_transport)[-1] == [UNSUBSCRIBED, 0, {"subscription": sid, "reason": "wamp.error.not_authorized"}]
    sent_before = len(a_transport.sent)
    publish(world, PUB, b"tick")
    assert len(a_transport.sent) == sent_before
    assert len(events(b_transport)) == 1
    assert revoked(world.metrics, "subscription") == 1
    send(alice, 34, 8, sid)  # the client did not hear (or raced): its UNSUBSCRIBE is an ordinary error
    assert received(a_transport)[-1][:5] == [8, 34, 8, {}, "wamp.error.no_such_subscription"]


def test_a_client_that_did_not_announce_revocation_just_stops_getting_events(world):
    """WAMP forbids UNSUBSCRIBED 0 to a subscriber that did not announce subscription_revocation."""
    alice, transport = joined(world, roles=PLAIN, authid="alice", ticket="any-ticket")
    subscribed(alice, transport)
    sent_before = len(transport.sent)
    world.test["allowed"]["alice"] = False
    assert fired(world.router.recheck_subscriptions()) == 1
    publish(world, PUB, b"tick")
    assert len(transport.sent) == sent_before
    assert alice.is_open and world.hub.subscription_count() == 0


def test_a_deferred_answer_is_waited_for(world):
    """The hook may answer with a Deferred: the subscription goes when it fires with False, not before."""
    alice, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    subscribed(alice, transport)
    answer = Deferred()
    world.test["allowed"]["alice"] = answer
    result = world.router.recheck_subscriptions()
    publish(world, PUB, b"tick")
    assert len(events(transport)) == 1
    answer.callback(False)
    assert fired(result) == 1
    publish(world, PUB, b"tick")
    assert len(events(transport)) == 1


def test_a_failing_hook_revokes(world):
    """Deny by default: a hook that raises (or fails its Deferred) on re-check revokes the subscription."""
    alice, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    subscribed(alice, transport)
    world.router.authorize = lambda *a: 1 / 0
    assert fired(world.router.recheck_subscriptions()) == 1
    assert received(transport)[-1][0] == UNSUBSCRIBED


def test_a_session_that_left_meanwhile_is_left_alone(world):
    """A session that closes while its re-check is pending is not sent anything and counts as nothing revoked."""
    alice, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    subscribed(alice, transport)
    answer = Deferred()
    world.test["allowed"]["alice"] = answer
    result = world.router.recheck_subscriptions()
    send(alice, 6, {}, "wamp.close.goodbye_and_out")
    sent_before = len(transport.sent)
    answer.callback(False)
    assert fired(result) == 0 and len(transport.sent) == sent_before


def test_a_removed_alias_is_revoked(world):
    """A subscription to an alias that the reload removed (or pointed elsewhere) is revoked."""
    alice, transport = joined(world, roles=REVOCABLE, authid="alice", ticket="any-ticket")
    sid = subscribed(alice, transport, "ticks")
    assert fired(world.router.recheck_subscriptions()) == 0
    world.router.resolver.aliases = {"ticks": Endpoint("tcp://127.0.0.1:9001", kind="sub", alias="ticks")}
    assert fired(world.router.recheck_subscriptions()) == 1
    assert received(transport)[-1][2]["subscription"] == sid


# -- a reload while a SUBSCRIBE is in flight (issue 21, item 9) --------------------------------------------------------


def slow_hook(world) -> list[Deferred]:
    """An authorization hook that answers when the test says (a Deferred per question)."""
    asked: list[Deferred] = []
    rules = {"allow": True}

    def authorize(session, action, endpoint, options):
        if rules["allow"] is None:
            d: Deferred = Deferred()
            asked.append(d)
            return d
        return rules["allow"]

    world.router.authorize = authorize
    world.test["rules"] = rules
    return asked


def test_a_subscribe_whose_hook_answers_after_a_reload_is_asked_again_under_the_new_rules(world):
    """A SUBSCRIBE whose hook answers yes after a reload that denies it is asked again: ERROR not_authorized, nothing left open."""
    asked = slow_hook(world)
    world.test["rules"]["allow"] = None  # the hook takes its time
    session, channel = joined(world)
    send(session, 32, 1, {}, PUB)
    assert received(channel) == [] and len(asked) == 1
    world.test["rules"]["allow"] = False  # SIGHUP: the new rules deny it
    world.router.recheck_subscriptions()
    asked[0].callback(True)  # the old rules' answer comes in late
    (reply,) = received(channel)
    assert reply[:5] == [8, 32, 1, {}, "wamp.error.not_authorized"]
    assert world.hub.subscription_count() == 0 and world.hub.addresses == []
    publish(world, PUB, b"x")
    assert received(channel) == [reply]  # no EVENT


def test_a_subscribe_in_flight_across_a_reload_that_still_allows_it_is_answered(world):
    """A SUBSCRIBE in flight across a reload is asked again and, still allowed, gets SUBSCRIBED."""
    asked = slow_hook(world)
    world.test["rules"]["allow"] = None
    session, channel = joined(world)
    send(session, 32, 1, {}, PUB)
    world.router.recheck_subscriptions()  # a reload; the hook is asked again, and again takes its time
    asked[0].callback(True)
    assert received(channel) == [] and len(asked) == 2
    asked[1].callback(True)
    assert received(channel)[0][:2] == [33, 1]


def test_a_subscribe_waiting_for_its_host_name_across_a_reload_that_denies_it_is_refused(world):
    """The issue's case: the name still resolving when SIGHUP re-checked the subscriptions."""
    names = world.hub.sockets.names = SlowNames()
    rules = {"allow": True}
    world.router.authorize = lambda *a: rules["allow"]
    session, channel = joined(world)
    send(session, 32, 1, {"get_retained": True}, "tcp://pubhost:9000")
    rules["allow"] = False
    world.router.recheck_subscriptions()
    names.pending[0].callback("tcp://127.0.0.1:9000")
    run_replays(world)
    (reply,) = received(channel)
    assert reply[:5] == [8, 32, 1, {}, "wamp.error.not_authorized"]
    assert world.hub.subscription_count() == 0 and world.hub.addresses == []
