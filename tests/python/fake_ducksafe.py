"""A stand-in for the ducksafe binary, to drive the Python API through the protocol's edge cases.

Run as a program (the tests write a launcher that execs it with this Python). It appends what it
was given ({"argv": [...], "stdin": "..."}) as one JSON line to $FAKE_DUCKSAFE_LOG, then acts as
$FAKE_DUCKSAFE_SCRIPT (a JSON file) says for the request's event (``hook``: the ``event`` of the
JSON on stdin) or the subcommand (``list``, ``restore``), falling back to the key ``*``:

    {"pre_run": {"stdout": "...", "exit": 0}, "post_run": {...}, "*": {...}}

- ``stdout``: written as is (a str; or ``stdout_hex``: bytes given in hex);
- ``exit``: the exit status (default 0);
- ``sleep``: seconds to wait first;
- ``signal``: end by this signal instead of exiting.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> None:
    argv = sys.argv[1:]
    stdin = sys.stdin.read()
    with open(os.environ["FAKE_DUCKSAFE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"argv": argv, "stdin": stdin, "cwd": os.getcwd()}) + "\n")
    with open(os.environ["FAKE_DUCKSAFE_SCRIPT"], encoding="utf-8") as f:
        script = json.load(f)
    key = "*"
    if argv[:1] == ["hook"]:
        try:
            key = str(json.loads(stdin).get("event"))
        except (ValueError, AttributeError):
            key = "*"
    else:
        # `--config PATH` comes before the subcommand.
        rest = list(argv)
        while rest and rest[0].startswith("--"):
            rest = rest[2:] if rest[0] in ("--config", "--set") else rest[1:]
        key = rest[0] if rest else "*"
    act = script.get(key, script.get("*", {}))
    time.sleep(float(act.get("sleep", 0)))
    if "stdout_hex" in act:
        sys.stdout.buffer.write(bytes.fromhex(act["stdout_hex"]))
    else:
        sys.stdout.write(act.get("stdout", ""))
    sys.stdout.flush()
    if "signal" in act:
        os.kill(os.getpid(), int(act["signal"]))
        time.sleep(10)
    sys.exit(int(act.get("exit", 0)))


if __name__ == "__main__":
    main()
