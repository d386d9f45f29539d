"""Run a page's independent loaders at once, before the page draws.

Each loader is a `st.cache_data` function over DuckDB, which releases the GIL while it scans: on
two cores, two loaders take about as long as the slower one instead of their sum. The page's own
calls that follow find the results in the cache; a loader that failed here fails again there,
where the page shows the message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

WORKERS: Final = 4
_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="meshlens-prefetch")


def prefetch(*loaders: Callable[[], object]) -> None:
    """Call every loader, concurrently, and return when all are done (errors are left to the
    page's own call)."""
    if len(loaders) < 2:
        return
    ctx = get_script_run_ctx()

    def run(load: Callable[[], object]) -> None:
        # The session's context, so Streamlit's cache knows whose run this is (no warnings).
        add_script_run_ctx(threading.current_thread(), ctx)
        try:
            load()
        except Exception:
            return

    list(_pool.map(run, loaders))
