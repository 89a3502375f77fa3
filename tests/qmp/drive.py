"""Drives the VMM's control socket with QEMU's own QMP client library (`qemu.qmp`), unchanged,
as a user of QEMU's tools would. Run by tests/tests/qmp_python.rs (python in the venv made by
scripts/fetch-qmp.sh). Prints one JSON object of what it saw; the Rust test checks it.

    python drive.py SOCKET
"""
import asyncio
import json
import sys

from qemu.qmp import ExecuteError, QMPClient

GPA = 0xE0000000  # the start of the VMM's hot-plug window
SIZE = 0x200000
PATTERN = 0x0123456789ABCDEF


def names(mem):
    return sorted(b["name"] for b in mem["blocks"])


async def main(sock):
    out = {}
    qmp = QMPClient("rcu-vmm-test")
    # connect() reads the greeting and negotiates capabilities; it times out (or raises
    # NegotiationError) if the server does not speak QMP.
    await asyncio.wait_for(qmp.connect(sock), 20)
    g = qmp.greeting
    version = g.QMP.version  # a dict in qemu.qmp's model
    out["greeting"] = {
        "version": [version["qemu"][k] for k in ("major", "minor", "micro")],
        "package": version["package"],
        "capabilities": list(g.QMP.capabilities),
    }
    ex = lambda cmd, args=None: asyncio.wait_for(qmp.execute(cmd, args), 20)
    out["status"] = await ex("query-status")
    out["version"] = await ex("query-version")
    out["commands"] = sorted(c["name"] for c in await ex("query-commands"))
    out["blocks-before"] = names(await ex("query-memory"))
    out["ram-add"] = await ex(
        "ram-add", {"name": "py", "gpa": GPA, "size": SIZE, "pattern": PATTERN}
    )
    out["blocks-added"] = names(await ex("query-memory"))
    out["ram-remove"] = await ex("ram-remove", {"name": "py"})
    out["blocks-after"] = names(await ex("query-memory"))
    for cmd, args in [("no-such-command", None), ("ram-remove", {"name": "py"})]:
        try:
            await ex(cmd, args)
            out[cmd + "-error"] = None
        except ExecuteError as e:
            out[cmd + "-error"] = {"class": e.error_class, "desc": str(e)}
    with qmp.listener(("STOP",)) as listener:
        out["pause"] = await ex("pause")
        ev = await asyncio.wait_for(listener.get(), 20)
        out["event"] = {"event": ev["event"], "timestamp": dict(ev["timestamp"])}
    out["resume"] = await ex("cont")
    out["status-after"] = await ex("query-status")
    with qmp.listener(("SHUTDOWN",)) as listener:
        out["quit"] = await ex("quit")
        ev = await asyncio.wait_for(listener.get(), 20)
        out["end-event"] = ev["event"]
    try:
        await qmp.disconnect()
    except EOFError:
        pass  # after quit the VMM exits and closes the socket, as QEMU does
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: drive.py SOCKET")
    asyncio.run(main(sys.argv[1]))
