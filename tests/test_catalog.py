"""The catalog (busmgr.catalog) without a manager: which classes a load yields, what system
mode refuses, and a broken file keeping its job's previous definition."""

from __future__ import annotations

import os
from pathlib import Path

from busmgr.catalog import Catalog, Sources, load_catalog, unsafe_file
from busmgr.config.parser import read_text
from busmgr.jobclass import JobClass
from busmgr.options import Mode


def write(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


def load(
    dirs: list[Path], mode: Mode = Mode.SESSION, previous: dict[str, JobClass] | None = None
) -> Catalog:
    return load_catalog(Sources(tuple(dirs), mode, False, {}), previous)


def test_the_opened_file_is_judged_not_the_path(tmp_path: Path) -> None:
    # A bug found by the house review: system mode judged a job file by its path after reading
    # it, so a file swapped in between was judged instead of the one read.
    path = write(tmp_path, "a.conf", "exec /bin/trusted\n")
    swap = write(tmp_path, "b.conf", "exec /bin/evil\n")
    judged: list[int] = []

    def trust(label: str, st: os.stat_result) -> str | None:
        judged.append(st.st_ino)
        os.replace(swap, path)  # the path now names another file
        return None

    original = path.stat().st_ino
    text, problem = read_text(path, trust)
    assert problem is None and text == "exec /bin/trusted\n"
    assert judged == [original]  # the file that was read is the file that was judged


def test_system_mode_refuses_files_others_may_write(tmp_path: Path) -> None:
    d = tmp_path / "services.d"
    write(d, "ok.conf", "exec /bin/true\n")
    write(d, "loose.conf", "exec /bin/true\n", mode=0o666)
    os.chmod(d, 0o755)
    catalog = load([d], Mode.SYSTEM)
    if os.geteuid() != 0:  # nothing is root's: everything is refused
        assert catalog.classes == {}
        return
    assert set(catalog.classes) == {"ok"}
    assert catalog.failed == frozenset({"loose"})
    (diag,) = catalog.diagnostics
    assert diag.startswith(f"{d}/loose.conf: refused in system mode: ")
    assert "writable by group or others (mode 666)" in diag


def test_unsafe_file_checks_the_directory_too(tmp_path: Path) -> None:
    path = write(tmp_path / "open", "a.conf", "exec /bin/true\n")
    os.chmod(path.parent, 0o777)
    problem = unsafe_file(str(path), path.stat())
    assert problem is not None and "refused in system mode" in problem


def test_a_broken_file_keeps_the_previous_definition(tmp_path: Path) -> None:
    d = tmp_path / "services.d"
    write(d, "svc.conf", "exec /bin/true\nnonsense here\n")
    previous = {"svc": JobClass(name="svc")}
    catalog = load([d], previous=previous)
    assert catalog.classes["svc"] is previous["svc"]
    assert catalog.kept == frozenset({"svc"}) and catalog.failed == frozenset({"svc"})
    assert catalog.diagnostics[-1] == "svc: keeping its previous definition"
    assert any(":2: " in line for line in catalog.diagnostics)  # FILE:LINE of the problem
    fresh = load([d])
    assert fresh.classes == {} and fresh.kept == frozenset()


def service(
    directory: Path, bus_name: str, command: str, unit: str = "", mode: int = 0o644
) -> Path:
    text = f"[D-BUS Service]\nName={bus_name}\nExec={command}\nUser=root\n"
    text += f"SystemdService={unit}\n" if unit else ""
    return write(directory, f"{bus_name}.service", text, mode)


def test_system_mode_imports_system_services_and_maps_their_units(tmp_path: Path) -> None:
    jobs, installed = tmp_path / "jobs", tmp_path / "system-services"
    write(jobs, "power.conf", "dbus org.x.Power\nunit power-extra.service\nexec /bin/mine\n")
    service(installed, "org.x.Power", "/usr/bin/powerd", "power.service")  # the job wins
    service(installed, "org.x.Kit", "/usr/bin/kitd", "kit.service")
    service(installed, "org.x.Host", "/bin/false", "dbus-org.x.Host.service")
    service(installed, "org.freedesktop.systemd1", "/bin/false")  # a name busmgr owns
    service(installed, "org.x.Loose", "/usr/bin/loose", mode=0o666)
    sources = Sources(
        (jobs,),
        Mode.SYSTEM,
        True,
        {},
        frozenset({"org.freedesktop.systemd1"}),
        import_dirs=(installed,),
    )
    catalog = load_catalog(sources)
    assert sorted(catalog.classes) == ["org.x.Kit", "power"]
    assert catalog.classes["org.x.Kit"].context.setuid == "root"
    assert catalog.units == {
        "power.service": "org.x.Power",  # the installed file's unit reaches the job file
        "power-extra.service": "org.x.Power",
        "kit.service": "org.x.Kit",
        "dbus-org.x.Host.service": "org.x.Host",
    }
    assert [s.bus_name for s in catalog.skipped] == ["org.x.Host"]
    assert any("org.x.Loose.service: refused in system mode" in d for d in catalog.diagnostics)


def test_session_mode_imports_no_system_services(tmp_path: Path) -> None:
    installed = tmp_path / "share"
    service(installed / "dbus-1" / "system-services", "org.x.Kit", "/usr/bin/kitd")
    service(installed / "dbus-1" / "services", "org.x.Desk", "/usr/bin/deskd")
    environ = {"XDG_DATA_DIRS": str(installed), "HOME": str(tmp_path)}
    catalog = load_catalog(Sources((), Mode.SESSION, True, environ))
    assert sorted(catalog.classes) == ["org.x.Desk"]
    assert catalog.classes["org.x.Desk"].context.setuid is None  # User= is the system bus's
