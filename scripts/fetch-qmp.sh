#!/bin/sh
# Installs QEMU's own QMP client library (PyPI package `qemu.qmp`) into a virtualenv, for
# tests/tests/qmp_python.rs, which drives the control socket with it.
#
# Produces $QMP_VENV (default .cache/qmp-venv/ in the repository, git-ignored) with
# `bin/python` able to `import qemu.qmp`. Idempotent: does nothing if the library is there.
# Needs python3 with the venv module (Debian: `apt-get install -y python3-venv`, done here when
# run as root) and access to PyPI.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${QMP_VENV:-$repo/.cache/qmp-venv}
# The version the test was written against; newer 0.0.x releases keep the same API.
version=${QMP_VERSION:-0.0.5}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import qemu.qmp' 2>/dev/null; then
    echo "fetch-qmp: qemu.qmp is already in $venv"
    exit 0
fi
command -v python3 >/dev/null || {
    echo "fetch-qmp: python3 is missing; install it (apt-get install -y python3 python3-venv)" >&2
    exit 1
}
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y python3-venv
    else
        echo "fetch-qmp: python3's venv module is missing; as root: apt-get install -y python3-venv" >&2
        exit 1
    fi
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "qemu.qmp==$version"
"$venv/bin/python" -c 'import qemu.qmp'
echo "fetch-qmp: qemu.qmp $version installed in $venv"
