"""Real Upstart job files written by others load (issue 11 item 6), and their oddities work.

Packages create their users when they are installed, so a job file may name a user that does
not exist yet: that is a warning at load and a clear failure at start, never a file that does
not load. ``reload signal 0`` (Upstart accepts it: a reload that only checks the process is
there), numeric signals, and ChromeOS Upstart's ``tmpfiles`` stanza load too.
"""

from __future__ import annotations

import pytest
from dbus_fast.errors import DBusError

from conftest import Session

pytestmark = pytest.mark.integration

NO_USER = "busmgr-no-such-user"
NO_GROUP = "busmgr-no-such-group"

JOBS = {
    # As packages ship them (Debian's, Ubuntu's, ChromeOS's), reduced to the stanzas at issue.
    "later-user": f"description 'a daemon whose package adds its user'\nsetuid {NO_USER}\n"
    "exec sleep 1000\n",
    "later-group": f"setgid {NO_GROUP}\nexec sleep 1000\n",
    "zero-reload": "reload signal 0\nkill signal 15\nexec sleep 1000\n",
    "rt-reload": "reload signal 40\nexec sleep 1000\n",
    "chromeos": "tmpfiles /usr/lib/tmpfiles.d/shill.conf\nexec sleep 1000\n",
}


async def test_every_file_loads(session: Session) -> None:
    rows = await session.call("ListJobs")
    assert set(JOBS) <= {row[0] for row in rows[0]}
    log = session.stderr.read_text()
    assert f'setuid: no such user "{NO_USER}" (yet)' in log
    assert f'setgid: no such group "{NO_GROUP}" (yet)' in log
    assert '"tmpfiles" is not supported by busmgr; stanza ignored' in log


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("later-user", f'PROCESS=main: setuid "{NO_USER}": no such user'),
        ("later-group", f'PROCESS=main: setgid "{NO_GROUP}": no such group'),
    ],
)
async def test_a_missing_user_or_group_is_a_clear_failure_at_start(
    session: Session, job: str, message: str
) -> None:
    with pytest.raises(DBusError) as info:
        await session.start(job)
    assert info.value.type == "org.busmgr.Error.JobFailed"
    assert info.value.text.startswith(f"job {job} failed: RESULT=failed ")
    assert message in info.value.text
    assert (await session.instance(job))["State"] == "waiting"


@pytest.mark.parametrize("job", ["zero-reload", "rt-reload"])
async def test_numeric_reload_signals_reach_the_process(session: Session, job: str) -> None:
    await session.start(job)
    pid = (await session.instance(job))["MainPID"]
    mark = session.signals.mark()
    await session.call("ReloadJob", "sa{ss}", [job, {}])
    if job == "zero-reload":  # signal 0 only checks that the process is there
        assert (await session.instance(job))["MainPID"] == pid
        await session.stop(job)
    else:  # sleep dies of a real-time signal it does not handle
        _, body = await session.signals.wait_for(
            lambda m, b: m == "JobStopped" and b[0] == job, start=mark
        )
        assert body[2]["EXIT_SIGNAL"] == "40"
