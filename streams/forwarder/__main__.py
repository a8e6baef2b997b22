"""`python -m streams.forwarder`: run the trade-updates forwarder until SIGINT/SIGTERM.

The same runs as `faust -A streams.app forwarder`.
"""

from __future__ import annotations

import asyncio
import signal

from streams.forwarder.runner import forward_until_stopped
from streams.observability.logging import install
from streams.settings import Settings, load_settings


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await forward_until_stopped(settings, stop)


def main() -> None:
    settings = load_settings()
    install(settings.log_format, settings.log_level)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
