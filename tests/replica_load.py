"""A client process for the replica tests: Select + Update against several replicas until a stop
file appears, failing over when one dies. Writes one JSON line per acknowledged reward and, at
the end, a summary line with the versions it saw go backwards (there must be none) and the
calls that failed, by RPC and status.

    python tests/replica_load.py OUT STOP SEED TARGET [TARGET ...]
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import sys
import time

from banditd.clients import Client
from banditd.clients.errors import BanditdError

NS, NAME = "prod", "ab"
P = {"a": 0.2, "b": 0.5, "c": 0.8}


def main() -> None:
    out, stop, seed, *targets = sys.argv[1:]
    rng = random.Random(int(seed))
    stop_file = pathlib.Path(stop)
    clients = [Client(t, retries=0, timeout=2.0) for t in targets]
    last_version = [0] * len(targets)
    backwards = 0
    failed: dict[str, int] = {}
    i = rng.randrange(len(targets))
    with open(out, "a") as f:
        while not stop_file.exists():
            k = i % len(targets)
            i += 1
            c = clients[k]
            rpc = "Select"
            try:
                (d,) = c.select(NS, NAME)
                # A restarted replica rebuilds from the log, which only grows: never below.
                if d.version < last_version[k]:
                    backwards += 1
                last_version[k] = d.version
                v = float(rng.random() < P[d.arm_ids[0]])
                rpc = "Update"
                (ack,) = c.update(NS, NAME, {d.event_id: v})
            except BanditdError as e:
                key = f"{rpc} {type(e).__name__}"
                failed[key] = failed.get(key, 0) + 1
                time.sleep(0.05)  # that replica is down (or starting): the next one
                continue
            f.write(json.dumps([d.event_id, d.arm_ids[0], v, ack.sequence, ack.kind]) + "\n")
            f.flush()
            if rng.random() < 0.5:
                i -= 1  # stay on this replica for a while, move on sometimes
        summary = {"backwards": backwards, "failed": failed, "pid": os.getpid()}
        f.write(json.dumps(summary) + "\n")
    for c in clients:
        c.close()


if __name__ == "__main__":
    main()
