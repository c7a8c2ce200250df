# `make run` and `make test` set everything up on a fresh Debian machine, then run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup deps run test lint bench check clean install uninstall

setup: deps $(STAMP)

deps:
	@sh .ci/system-deps

# The editable install also builds busmgr/process/_clonespawn*.so (setup.py, with gcc).
# Byte-compiled once: with PYTHONDONTWRITEBYTECODE set, every start would compile every module.
$(STAMP): pyproject.toml setup.py busmgr/process/_clonespawn.c
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m compileall -q busmgr
	touch $(STAMP)

ADDR_FILE = $${XDG_RUNTIME_DIR:-/tmp}/busmgr-make-run.address

run: setup
	@echo "Starting busmgr session with the example jobs of services.d/ (Ctrl-C stops it all)."
	@echo "From a second terminal in this directory, try:"
	@echo "  export BUSMGR_ADDRESS=\$$(cat $(ADDR_FILE))"
	@echo "  $(VENV)/bin/busmgr list"
	@echo "  $(VENV)/bin/busmgr start getty TTY=tty1 && $(VENV)/bin/busmgr status getty"
	@echo "  $(VENV)/bin/busmgr events --follow"
	@echo "  busctl --address=\$$BUSMGR_ADDRESS call org.example.Echo /org/example/Echo org.example.Echo Echo s hello"
	@echo "  busctl --address=\$$BUSMGR_ADDRESS call org.busmgr.Manager1 /org/busmgr/Manager1 org.busmgr.Manager1 ListJobs"
	@echo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(VENV)/bin/busmgr session \
		--services-dir services.d --address-file $(ADDR_FILE)

# The tests' files (state directories, logs, sockets) live on tmpfs where there is one: on a
# loaded disk, ext4's journal can hold a file's creation or rename for a tenth of a second, which
# the loop watch rightly reports as a manager's blocked loop, but which is the disk's doing.
TEST_TMPDIR ?= $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo $${TMPDIR:-/tmp})

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	TMPDIR=$(TEST_TMPDIR) $(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: setup
	$(VENV)/bin/busmgr check services.d

bench: setup
	$(PY) bench/run.py --output docs/PERFORMANCE.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# ---------------------------------------------------------------------------- install
# `make install [PREFIX=/usr/local] [DESTDIR=]`: the busmgr command, its Python package (into
# the library directory of PYTHON_INSTALL, the interpreter that will run it: with a dedicated
# virtualenv, `PYTHON_INSTALL=/opt/busmgr/bin/python`), the systemd units, the init script of
# this machine's init system (INIT=openrc|sysvinit|none), the D-Bus policy files, the interface
# XML and the README. `make uninstall` with the same variables removes them. The Python
# dependencies (dbus-fast, psutil, python-prctl) are the interpreter's to have. `pip install .`
# (the wheel) is the other way in: the same files as data files of the prefix.
PREFIX         ?= /usr/local
DESTDIR        ?=
BINDIR         ?= $(PREFIX)/bin
DATADIR        ?= $(PREFIX)/share
DOCDIR         ?= $(DATADIR)/doc/busmgr
SYSCONFDIR     ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR        ?= $(PREFIX)/lib/systemd/system
USERUNITDIR    ?= $(PREFIX)/lib/systemd/user
INTERFACESDIR  ?= $(DATADIR)/dbus-1/interfaces
# dbus-daemon reads /usr/share/dbus-1/system.d and /etc/dbus-1/system.d only.
DBUSPOLICYDIR  ?= $(if $(filter /usr,$(PREFIX)),$(DATADIR)/dbus-1/system.d,/etc/dbus-1/system.d)
INITDIR        ?= /etc/init.d
INIT           ?= $(shell command -v openrc-run >/dev/null 2>&1 && echo openrc || echo sysvinit)
PYTHON_INSTALL ?= python3
PYTHON_EXE     ?= $(shell $(PYTHON_INSTALL) -c 'import sys; print(sys.executable)')
PYTHONDIR      ?= $(shell $(PYTHON_INSTALL) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
POLICIES        = org.busmgr.Manager1.conf busmgr-activation.conf
BIN_SED         = sed 's|/usr/bin/busmgr|$(BINDIR)/busmgr|g'

CC             ?= cc
CLONESPAWN      = busmgr/process/_clonespawn

# The clone spawn library (busmgr/process/clonespawn.py; without it busmgr spawns the slower
# way, in Python).
build/_clonespawn.so: $(CLONESPAWN).c
	@mkdir -p build
	$(CC) -O2 -Wall -shared -fPIC -o $@ $<

install: build/_clonespawn.so
	@test -n "$(PYTHON_EXE)" -a -n "$(PYTHONDIR)" || { echo "no $(PYTHON_INSTALL) to install for" >&2; exit 1; }
	find busmgr -name '*.py' ! -path '*/__pycache__/*' -exec install -D -m 644 {} "$(DESTDIR)$(PYTHONDIR)/{}" \;
	install -m 755 build/_clonespawn.so "$(DESTDIR)$(PYTHONDIR)/$(CLONESPAWN).so"
	$(PYTHON_EXE) -m compileall -q -d "$(PYTHONDIR)/busmgr" "$(DESTDIR)$(PYTHONDIR)/busmgr"
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(USERUNITDIR)" \
		"$(DESTDIR)$(INTERFACESDIR)" "$(DESTDIR)$(DBUSPOLICYDIR)" "$(DESTDIR)$(DOCDIR)" \
		"$(DESTDIR)$(SYSCONFDIR)/busmgr/services.d"
	printf '%s\n' '#!$(PYTHON_EXE)' '"""busmgr, as installed by make install."""' 'import sys' \
		'if "$(PYTHONDIR)" not in sys.path:' '    sys.path.insert(0, "$(PYTHONDIR)")' \
		'from busmgr.cli import entry' 'entry()' > "$(DESTDIR)$(BINDIR)/busmgr"
	chmod 755 "$(DESTDIR)$(BINDIR)/busmgr"
	$(BIN_SED) systemd-units/busmgr.service > "$(DESTDIR)$(UNITDIR)/busmgr.service"
	$(BIN_SED) systemd-units/busmgr-session.service > "$(DESTDIR)$(USERUNITDIR)/busmgr-session.service"
	chmod 644 "$(DESTDIR)$(UNITDIR)/busmgr.service" "$(DESTDIR)$(USERUNITDIR)/busmgr-session.service"
	for f in $(POLICIES); do install -m 644 dbus-policy/$$f "$(DESTDIR)$(DBUSPOLICYDIR)/$$f"; done
	install -m 644 docs/org.busmgr.Manager1.xml "$(DESTDIR)$(INTERFACESDIR)/"
	install -m 644 README.md "$(DESTDIR)$(DOCDIR)/"
	if [ "$(INIT)" != none ]; then \
		install -d "$(DESTDIR)$(INITDIR)" && \
		$(BIN_SED) init/$(INIT)/busmgr > "$(DESTDIR)$(INITDIR)/busmgr" && \
		chmod 755 "$(DESTDIR)$(INITDIR)/busmgr"; fi

uninstall:
	rm -rf "$(DESTDIR)$(PYTHONDIR)/busmgr"
	rm -f "$(DESTDIR)$(BINDIR)/busmgr" "$(DESTDIR)$(UNITDIR)/busmgr.service" \
		"$(DESTDIR)$(USERUNITDIR)/busmgr-session.service" \
		"$(DESTDIR)$(INTERFACESDIR)/org.busmgr.Manager1.xml" "$(DESTDIR)$(DOCDIR)/README.md"
	for f in $(POLICIES); do rm -f "$(DESTDIR)$(DBUSPOLICYDIR)/$$f"; done
	if [ "$(INIT)" != none ]; then rm -f "$(DESTDIR)$(INITDIR)/busmgr"; fi
	-rmdir "$(DESTDIR)$(DOCDIR)" "$(DESTDIR)$(SYSCONFDIR)/busmgr/services.d" \
		"$(DESTDIR)$(SYSCONFDIR)/busmgr" 2>/dev/null
