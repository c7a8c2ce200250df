"""The command line's blocking D-Bus client: its wire format agrees with dbus-fast's (fuzzed),
bad input is a clear error, and it talks to a real bus daemon (a session of this module)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import Any

import pytest
from dbus_fast import Message, Variant
from dbus_fast._private.marshaller import Marshaller
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr import MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH
from busmgr.bus.wire import (
    BlockingBus,
    Call,
    ErrorReply,
    WireError,
    decode_message,
    marshal,
    parse_address,
    split_signature,
    unmarshal,
)

from conftest import Session

JOBS = {"svc": "exec sleep 1000\n"}

# ------------------------------------------------------------------ values and their types
_BASIC: dict[str, st.SearchStrategy[Any]] = {
    "y": st.integers(0, 255),
    "b": st.booleans(),
    "n": st.integers(-(2**15), 2**15 - 1),
    "q": st.integers(0, 2**16 - 1),
    "i": st.integers(-(2**31), 2**31 - 1),
    "u": st.integers(0, 2**32 - 1),
    "x": st.integers(-(2**63), 2**63 - 1),
    "t": st.integers(0, 2**64 - 1),
    "d": st.floats(allow_nan=False),
    "s": st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")),
    "o": st.sampled_from(["/", "/org/busmgr/Manager1", "/a/b_c/d1"]),
    "g": st.sampled_from(["", "s", "a{sv}", "(iu)"]),
}


def _typed(depth: int = 0) -> st.SearchStrategy[tuple[str, Any]]:
    """(signature of one complete type, a value of it)."""
    basic = st.sampled_from(sorted(_BASIC)).flatmap(lambda t: _BASIC[t].map(lambda v: (t, v)))
    if depth >= 2:
        return basic

    inner = _typed(depth + 1)

    def array(elem: tuple[str, Any]) -> st.SearchStrategy[tuple[str, Any]]:
        sig = elem[0]
        return st.lists(_value_of(sig), max_size=3).map(lambda vs: ("a" + sig, vs))

    def struct(members: list[tuple[str, Any]]) -> tuple[str, Any]:
        return "(" + "".join(m[0] for m in members) + ")", [m[1] for m in members]

    def dictionary(pair: tuple[str, tuple[str, Any]]) -> st.SearchStrategy[tuple[str, Any]]:
        key, (vsig, _) = pair
        return st.dictionaries(_BASIC[key], _value_of(vsig), max_size=3).map(
            lambda d: ("a{" + key + vsig + "}", d)
        )

    return st.one_of(
        basic,
        inner.flatmap(array),
        st.lists(inner, min_size=1, max_size=3).map(struct),
        st.tuples(st.sampled_from(["s", "u", "y"]), inner).flatmap(dictionary),
        basic.map(lambda tv: ("v", tv)),
    )


def _value_of(sig: str) -> st.SearchStrategy[Any]:
    """Values of ``sig`` made by the same rules (used for array elements and dict values)."""
    return (
        _typed(2).filter(lambda tv: tv[0] == sig).map(lambda tv: tv[1])
        if sig in _BASIC
        else (st.just(_example(sig)))
    )


def _example(sig: str) -> Any:
    """One fixed value of a container signature (arrays of containers stay small)."""
    c = sig[0]
    if c in _BASIC:
        return {"y": 1, "b": True, "d": 1.5, "s": "x", "o": "/x", "g": "s"}.get(c, 3)
    if c == "v":
        return ("s", "v")
    if sig.startswith("a{"):
        return {}
    if c == "a":
        return []
    return [_example(t) for t in split_signature(sig[1:-1])]


def _to_dbus_fast(sig: str, value: Any) -> Any:
    """Our ``(signature, value)`` variants as dbus-fast's ``Variant``."""
    c = sig[0]
    if c == "v":
        inner_sig, inner = value
        return Variant(inner_sig, _to_dbus_fast(inner_sig, inner))
    if sig.startswith("a{"):
        _ksig, vsig = split_signature(sig[2:-1])
        return {k: _to_dbus_fast(vsig, v) for k, v in value.items()}
    if sig == "ay":
        return bytes(value)
    if c == "a":
        return [_to_dbus_fast(sig[1:], v) for v in value]
    if c == "(":
        return [_to_dbus_fast(t, v) for t, v in zip(split_signature(sig[1:-1]), value, strict=True)]
    return value


def _plain(sig: str, value: Any) -> Any:
    """What our unmarshaller gives back for ``value`` (variants unwrapped)."""
    c = sig[0]
    if c == "v":
        return _plain(*value)
    if sig.startswith("a{"):
        _, vsig = split_signature(sig[2:-1])
        return {k: _plain(vsig, v) for k, v in value.items()}
    if c == "a":
        return [_plain(sig[1:], v) for v in value]
    if c == "(":
        return [_plain(t, v) for t, v in zip(split_signature(sig[1:-1]), value, strict=True)]
    return value


@settings(max_examples=200, deadline=None)
@given(st.lists(_typed(), min_size=1, max_size=4))
def test_marshalling_agrees_with_dbus_fast(typed: list[tuple[str, Any]]) -> None:
    signature = "".join(t for t, _ in typed)
    values = [v for _, v in typed]
    ours = marshal(signature, values)
    theirs = bytes(Marshaller(signature, [_to_dbus_fast(t, v) for t, v in typed]).marshall())
    assert ours == theirs
    assert unmarshal(signature, ours) == [_plain(t, v) for t, v in typed]


def test_a_whole_message_from_dbus_fast_decodes() -> None:
    message = Message(
        destination="org.x",
        path="/org/x",
        interface="org.x.I",
        member="Do",
        signature="sa{sv}",
        body=["hi", {"k": Variant("u", 7)}],
        serial=42,
    )
    decoded = decode_message(bytes(message._marshall(False)))
    assert (decoded.serial, decoded.path, decoded.member, decoded.destination) == (
        42,
        "/org/x",
        "Do",
        "org.x",
    )
    assert decoded.body == ["hi", {"k": 7}]


@pytest.mark.parametrize("sig", ["a", "(", "()", "a{s}", "{ss}x", "a{sss}", "z", "(s"])
def test_bad_signatures_are_wire_errors(sig: str) -> None:
    with pytest.raises(WireError):
        split_signature(sig)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["s", "as", "a{sv}", "(iu)v", "ay", "g"]))
def test_garbage_never_raises_anything_but_wire_errors(data: bytes, sig: str) -> None:
    with contextlib.suppress(WireError):
        unmarshal(sig, data)
    with contextlib.suppress(WireError):
        decode_message(data)


def test_addresses() -> None:
    assert parse_address("unix:path=/run/bus;unix:abstract=x%2fy,guid=1") == [
        ("unix", {"path": "/run/bus"}),
        ("unix", {"abstract": "x/y", "guid": "1"}),
    ]
    with pytest.raises(WireError):
        parse_address("nonsense")


# ------------------------------------------------------------------ against a real bus
# These two are plain (not async) tests: the blocking client holds whatever thread it runs in,
# which here must not be the event loop that the fixtures' session is watched from.
@pytest.mark.integration
def test_calls_errors_and_pipelining_on_a_real_bus(session: Session) -> None:
    bus = BlockingBus.connect(session.address, 5)
    try:
        assert bus.unique_name.startswith(":")
        (rows,) = bus.call(Call(MANAGER_BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "ListJobs"), 5)
        assert ["svc", "", "waiting"] in [r[:3] for r in rows]
        with pytest.raises(ErrorReply) as info:
            get = Call(MANAGER_BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "GetJob", "s", ["no"])
            bus.call(get, 5)
        assert info.value.type == "org.busmgr.Error.UnknownJob"
        many = bus.call_many(
            [
                Call(MANAGER_BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, "GetJob", "s", [n])
                for n in ("svc", "nope", "svc")
            ],
            5,
        )
        assert isinstance(many[1], ErrorReply)
        assert many[0] == many[2] == ["/org/busmgr/Manager1/job/svc"]
    finally:
        bus.close()


@pytest.mark.integration
def test_the_cli_imports_neither_asyncio_nor_dbus_fast_for_status(session: Session) -> None:
    code = (
        "import sys; from busmgr.cli import main; rc = main(['status']); "
        "print('asyncio' in sys.modules, 'dbus_fast' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=session.env, capture_output=True, text=True, timeout=20
    )
    assert done.stderr.strip().splitlines()[-1] == "False False", done.stderr
    assert "svc stop/waiting" in done.stdout
