"""The system bus configuration translated into dbus-broker's policy (issue 17, part 2).

Three tiers: the rules on small configurations written here (contexts, priorities, includes,
every kind of rule, every problem as ``FILE:LINE``, fuzzed); a golden translation of Debian
12's own ``system.conf`` with two ``system.d`` files from packages the tests install
(``systemd``'s ``org.freedesktop.login1.conf`` and ``dnsmasq-base``'s ``dnsmasq.conf``), read
where Debian installs them; and a real dbus-broker given that translation, which must allow
and refuse what those files say, checked as root and as ``nobody``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busmgr.bus.broker_policy import ANY_UID, Batch, Policy
from busmgr.bus.busconfig import SYSTEM_UID_MAX, translate

from conftest import HELPERS, PYTHON, TIMEOUT, require_bus

GOLDEN = Path(__file__).parent / "golden" / "debian12-system-policy.txt"
DEBIAN_FILES = (
    Path("/usr/share/dbus-1/system.conf"),
    Path("/usr/share/dbus-1/system.d/org.freedesktop.login1.conf"),
    Path("/usr/share/dbus-1/system.d/dnsmasq.conf"),
)
USERS = {"root": 0, "messagebus": 100, "dnsmasq": 101, "nobody": 65534}
GROUPS = {"root": 0, "netdev": 102}
BAND = (2**64 - 1) // 7
BANDS = ["self", "default", "group", "user", "at_console", "no_console", "mandatory"]


def write(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<busconfig>\n{body}\n</busconfig>\n")
    return path


def fixed(tmp: Path, name: str = "bus.conf", body: str = "") -> tuple[Policy, tuple[str, ...]]:
    result = translate(
        write(tmp, name, body) if body else tmp / name,
        resolve_user=USERS.get,
        resolve_group=GROUPS.get,
        self_uid=0,
        sysroot=tmp,
    )
    return result.policy, result.diagnostics


def prio(priority: int) -> str:
    return f"{BANDS[priority // BAND]}+{priority % BAND}"


def render(policy: Policy) -> list[str]:
    """The policy, one rule a line, priorities as context+position."""
    lines = [f"type {policy.bus_type or '-'} apparmor {policy.apparmor}"]

    def batch(head: str, b: Batch) -> None:
        lines.append(
            f"{head} connect {'allow' if b.connect.allow else 'deny'} {prio(b.connect.priority)}"
        )
        for o in b.own:
            what = f"{o.name}*" if o.prefix else o.name
            lines.append(
                f"{head}   own {'allow' if o.allow else 'deny'} {prio(o.priority)} {what!r}"
            )
        for kind, rules in (("send", b.send), ("recv", b.receive)):
            for x in rules:
                fds = (
                    ""
                    if (x.min_fds, x.max_fds) == (0, 2**64 - 1)
                    else f" fds {x.min_fds}-{x.max_fds}"
                )
                lines.append(
                    f"{head}   {kind} {'allow' if x.allow else 'deny'} {prio(x.priority)} "
                    f"name={x.name!r} path={x.path!r} iface={x.interface!r} "
                    f"member={x.member!r} type={x.message_type} bcast={x.broadcast}{fds}"
                )

    for uid, b in policy.uids:
        batch("uid *" if uid == ANY_UID else f"uid {uid}", b)
    for r in policy.ranges:
        batch(f"{'gid' if r.group else 'uids'} {r.first}-{r.last}", r.batch)
    lines += [f"selinux {name} {context}" for name, context in policy.selinux]
    return lines


# ------------------------------------------------------------------ the rules
def test_contexts_rank_mandatory_over_user_over_group_over_default(tmp_path: Path) -> None:
    policy, diags = fixed(
        tmp_path,
        body="""
  <policy context="mandatory"><deny own="a.M"/></policy>
  <policy user="nobody"><allow own="a.U"/></policy>
  <policy group="netdev"><allow own="a.G"/></policy>
  <policy context="default"><allow user="*"/><deny own="*"/><allow own_prefix="a.P"/></policy>
""",
    )
    assert diags == ()
    assert render(policy) == [
        "type - apparmor False",
        "uid * connect allow default+5",
        "uid *   own deny mandatory+2 'a.M'",
        "uid *   own deny default+6 '*'",
        "uid *   own allow default+7 'a.P*'",
        # a uid's batch: the default rules, then its own
        "uid 65534 connect allow default+5",
        "uid 65534   own deny mandatory+2 'a.M'",
        "uid 65534   own deny default+6 '*'",
        "uid 65534   own allow default+7 'a.P*'",
        "uid 65534   own allow user+3 'a.U'",
        "gid 102-102 connect allow default+5",
        "gid 102-102   own allow group+4 'a.G'",
    ]
    uids = dict(policy.uids)
    # mandatory rules beat every other context; the user's own rule beats the default's
    own = {o.name: (o.allow, o.priority) for o in uids[65534].own}
    assert own["a.M"][1] > own["a.U"][1] > own[""][1]
    (group,) = policy.ranges
    assert group.group and (group.first, group.last) == (102, 102)
    assert [o.name for o in group.batch.own] == ["a.G"]  # a group batch has only its rules
    assert [o.name for o in uids[ANY_UID].own] == ["a.M", "", "a.P"]


def test_send_and_receive_rules(tmp_path: Path) -> None:
    policy, diags = fixed(
        tmp_path,
        body="""
  <policy context="default">
    <deny send_type="method_call"/>
    <allow send_destination="org.x" send_interface="*" send_member="Get" send_path="/p"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_type="signal" send_broadcast="true" max_fds="0"/>
    <allow receive_sender="org.x" receive_type="error"/>
    <allow receive_type="signal" eavesdrop="true"/>
    <deny eavesdrop="true"/>
    <allow send_destination="*" eavesdrop="true"/>
  </policy>
""",
    )
    assert diags == ()
    batch = dict(policy.uids)[ANY_UID]
    sends = [(x.allow, x.name, x.path, x.interface, x.member, x.message_type) for x in batch.send]
    assert sends == [
        (False, "", "", "", "", 1),
        (True, "org.x", "/p", "", "Get", 0),
        (True, "", "", "", "", 4),  # the reply rule was dropped: the broker decides replies
        (True, "", "", "", "", 0),  # eavesdrop ignored on an allow
    ]
    assert (batch.send[2].broadcast, batch.send[2].max_fds) == (1, 0)
    # receive: the error rule dropped, the eavesdrop allow kept, the eavesdrop deny dropped
    assert [(x.allow, x.message_type) for x in batch.receive] == [(True, 4)]


def test_the_launchers_own_user_may_connect_but_any_rule_outranks_that(tmp_path: Path) -> None:
    policy, _ = fixed(tmp_path, body='<policy context="default"><deny user="root"/></policy>')
    uids = dict(policy.uids)
    assert uids[0].connect.allow is False  # root's explicit rule outranks the launcher's own
    policy, _ = fixed(tmp_path, body='<policy context="default"><deny own="x"/></policy>')
    uids = dict(policy.uids)
    assert uids[ANY_UID].connect.allow is False and uids[0].connect.allow is True


def test_console_rules_split_at_the_system_uids(tmp_path: Path) -> None:
    policy, _ = fixed(
        tmp_path,
        body="""
  <policy at_console="true"><allow send_destination="org.seat"/></policy>
  <policy at_console="false"><deny send_destination="org.seat"/></policy>
""",
    )
    ranges = [(r.group, r.first, r.last, r.batch.send[0].allow) for r in policy.ranges]
    assert ranges == [(False, 0, SYSTEM_UID_MAX, False), (False, SYSTEM_UID_MAX + 1, ANY_UID, True)]


def test_includes_in_document_order(tmp_path: Path) -> None:
    write(tmp_path, "etc/extra.d/b.conf", '<policy context="default"><allow own="b"/></policy>')
    write(tmp_path, "etc/extra.d/a.conf", '<policy context="default"><allow own="a"/></policy>')
    (tmp_path / "etc/extra.d/skip.txt").write_text("not a conf file")
    write(tmp_path, "conf/local.conf", '<policy context="default"><allow own="local"/></policy>')
    policy, diags = fixed(
        tmp_path,
        "conf/bus.conf",
        """
  <policy context="default"><allow own="first"/></policy>
  <includedir>/etc/extra.d</includedir>
  <include>local.conf</include>
  <include ignore_missing="yes">/etc/missing.conf</include>
  <include if_selinux_enabled="yes" selinux_root_relative="yes">contexts/dbus_contexts</include>
  <include>gone.conf</include>
  <type>system</type>
""",
    )
    assert [o.name for o in dict(policy.uids)[ANY_UID].own] == ["first", "a", "b", "local"]
    assert policy.bus_type == "system"
    assert diags == (f"{tmp_path}/conf/gone.conf: no such file",)


def test_every_problem_is_one_line_with_file_and_line_and_the_rest_loads(tmp_path: Path) -> None:
    write(tmp_path, "broken.conf", "<policy context='default'><allow own='x'></policy>")
    policy, diags = fixed(
        tmp_path,
        body="""
  <include>broken.conf</include>
  <policy user="nosuchuser"><allow own="u"/></policy>
  <policy user="root"><allow user="*"/></policy>
  <policy context="default">
    <allow own="a" send_destination="b"/>
    <allow frobnicate="yes"/>
    <allow send_type="telegram"/>
    <allow/>
    <allow own="kept"/>
  </policy>
  <policy context="sometimes"><allow own="x"/></policy>
  <mystery/>
""",
    )
    where = f"{tmp_path}/bus.conf"
    assert diags == (
        f"{tmp_path}/broken.conf:2: not valid XML: mismatched tag; file ignored",
        f"{where}:4: no user nosuchuser; its policy is dropped",
        f"{where}:5: connection rules are not allowed in a user or group policy",
        f"{where}:7: own may not be combined with other attributes; dropped",
        f"{where}:8: unknown attribute frobnicate; rule dropped",
        f"{where}:9: unknown send_type telegram; rule dropped",
        f"{where}:10: a rule with nothing to match; dropped",
        f"{where}:13: policy context='sometimes' is not a policy context",
        f"{where}:14: unknown element <mystery> in <busconfig>; ignored",
    )
    assert [o.name for o in dict(policy.uids)[ANY_UID].own] == ["kept"]


def test_includes_that_include_themselves_end(tmp_path: Path) -> None:
    _, diags = fixed(tmp_path, body="<include>bus.conf</include>")
    assert diags == (f"{tmp_path}/bus.conf: includes nested too deep; not read",)


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=400))
def test_any_text_translates_or_is_reported(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bus.conf"
        path.write_text(text)
        result = translate(path, resolve_user=USERS.get, resolve_group=GROUPS.get, self_uid=0)
        assert all("\n" not in d and d.startswith(str(path)) for d in result.diagnostics)
        result.policy.variant()  # always a value the broker's signature takes


# ------------------------------------------------------------------ Debian's files
def debian_sysroot(tmp: Path) -> Path:
    """Debian's files where Debian installs them, under ``tmp`` (and nothing else)."""
    for path in DEBIAN_FILES:
        if not path.exists():
            pytest.fail(f"{path} is missing: .ci/system-deps installs the package that ships it")
        target = tmp / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return tmp


def test_golden_translation_of_debians_system_bus(tmp_path: Path) -> None:
    root = debian_sysroot(tmp_path)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in DEBIAN_FILES)).hexdigest()
    policy, diags = fixed(root, "usr/share/dbus-1/system.conf")
    text = "\n".join([f"# inputs sha256 {digest}", *diags, *render(policy)]) + "\n"
    if os.environ.get("BUSMGR_REGENERATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    golden = GOLDEN.read_text()
    assert golden.splitlines()[0] == f"# inputs sha256 {digest}", (
        "Debian's files changed: review the new translation and regenerate with "
        "BUSMGR_REGENERATE_GOLDEN=1"
    )
    assert text == golden


# ------------------------------------------------------------------ a real broker enforcing it
CLIENT = r"""
import asyncio, json, os, sys
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

async def main(address, become):
    if become:
        os.setgid(65534); os.setuid(65534)
    out = {}
    bus = await MessageBus(bus_address=address).connect()
    def m(dest, path, iface, member, sig="", body=()):
        return Message(destination=dest, path=path, interface=iface, member=member,
                       signature=sig, body=list(body))
    D = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
    async def ask(key, msg):
        r = await bus.call(msg)
        out[key] = r.error_name or "ok"
    await ask("own login1", m(*D, "RequestName", "su", ["org.freedesktop.login1", 4]))
    await ask("own dnsmasq", m(*D, "RequestName", "su", ["uk.org.thekelleys.dnsmasq", 4]))
    await ask("own other", m(*D, "RequestName", "su", ["org.example.Other", 4]))
    await ask("list names", m(*D, "ListNames"))
    await ask("update env", m(*D, "UpdateActivationEnvironment", "a{ss}", [{"A": "b"}]))
    if not become:
        print(json.dumps(out), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return
    L = ("org.freedesktop.login1", "/org/freedesktop/login1")
    await ask("login1 peer", m(*L, "org.freedesktop.DBus.Peer", "Ping"))
    await ask("login1 other", m(*L, "org.freedesktop.login1.Manager", "Frobnicate"))
    print(json.dumps(out), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2] == "nobody"))
"""


async def test_a_real_broker_enforces_the_translated_system_policy(tmp_path: Path) -> None:
    require_bus("dbus-broker")
    if os.getuid() != 0:
        pytest.skip("needs root: the check runs clients as root and as nobody")
    root = debian_sysroot(tmp_path / "root")
    # The socket where nobody can reach it (pytest's own directories are root's alone).
    run = Path(tempfile.mkdtemp(prefix="busmgr-test-", dir="/tmp"))
    run.chmod(0o755)
    broker = await asyncio.create_subprocess_exec(
        PYTHON,
        str(HELPERS / "broker_with_policy.py"),
        str(root / "usr/share/dbus-1/system.conf"),
        str(root),
        str(run / "system_bus_socket"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert broker.stdin is not None and broker.stdout is not None
    owner = None
    try:
        address = (await asyncio.wait_for(broker.stdout.readline(), TIMEOUT)).decode().strip()
        assert address.startswith("unix:path=")
        # root: owns login1 (and keeps it), may do what Debian lets root do
        owner = await asyncio.create_subprocess_exec(
            PYTHON, "-c", CLIENT, address, "root",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert owner.stdout is not None and owner.stdin is not None
        as_root = json.loads(await asyncio.wait_for(owner.stdout.readline(), TIMEOUT))
        assert as_root == {
            "own login1": "ok",
            "own dnsmasq": "ok",
            "own other": "org.freedesktop.DBus.Error.AccessDenied",  # deny own="*"
            "list names": "ok",
            "update env": "org.freedesktop.DBus.Error.AccessDenied",  # denied to everyone
        }
        nobody = await asyncio.create_subprocess_exec(
            PYTHON, "-c", CLIENT, address, "nobody", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(nobody.communicate(), TIMEOUT)
        as_nobody = json.loads(out)
        assert as_nobody == {
            "own login1": "org.freedesktop.DBus.Error.AccessDenied",
            "own dnsmasq": "org.freedesktop.DBus.Error.AccessDenied",
            "own other": "org.freedesktop.DBus.Error.AccessDenied",
            "list names": "ok",
            "update env": "org.freedesktop.DBus.Error.AccessDenied",
            # login1.conf lets anyone ping; a method not in its list is refused
            "login1 peer": "ok",
            "login1 other": "org.freedesktop.DBus.Error.AccessDenied",
        }
        owner.stdin.write(b"done\n")
        await owner.stdin.drain()
        await asyncio.wait_for(owner.wait(), TIMEOUT)
    finally:
        if owner is not None and owner.returncode is None:
            owner.kill()
            await owner.wait()
        broker.stdin.close()
        status = await asyncio.wait_for(broker.wait(), TIMEOUT)
        shutil.rmtree(run, ignore_errors=True)
    assert status == 0
