"""Child process of the kill -9 test: append records from several threads forever and print
each id to stdout once its append returned (= acknowledged). Run as
`python -m tests.collector.store.crash_child DATA_DIR RUN_TAG`."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from meshlens.collector.store.store import Store, StoreOptions
from tests.collector.store.fake_decoder import DECODERS, KIND

THREADS = 4


def main() -> None:
    data_dir, tag = Path(sys.argv[1]), sys.argv[2]
    store = Store(
        data_dir,
        StoreOptions(
            decode_workers=1, flush_interval=0.05, decoders=DECODERS, segment_max_bytes=256 * 1024
        ),
    )
    store.start()
    out_lock = threading.Lock()
    padding = b"#" + b"x" * 3000

    def run(t: int) -> None:
        i = 0
        while True:
            rid = f"{tag}-{t}-{i}"
            store.append(KIND, rid.encode() + padding)
            with out_lock:
                sys.stdout.write(rid + "\n")
                sys.stdout.flush()
            i += 1

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
