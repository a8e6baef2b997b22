"""``python -m simulator``: serve until SIGTERM/SIGINT; print the URLs as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .config import SimConfig, load_config, validate
from .formats import parse_ts
from .server import Simulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", help="accounts config, JSON or YAML")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--partial-fill-prob", type=float)
    parser.add_argument("--manual-clock", action="store_true", help="time moves only via admin")
    parser.add_argument("--start-time", help="manual clock start, RFC 3339")
    parser.add_argument("--rate-limit", type=int, help="requests per minute per account")
    parser.add_argument("--fill-delay-ms", type=int)
    parser.add_argument("--log-level", default="WARNING")
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    config = load_config(args.config) if args.config else SimConfig()
    config = config.with_overrides(
        seed=args.seed,
        partial_fill_prob=args.partial_fill_prob,
        manual_clock=True if args.manual_clock else None,
        start_time=parse_ts(args.start_time) if args.start_time else None,
        rate_limit_per_minute=args.rate_limit,
        fill_delay_ms=args.fill_delay_ms,
    )
    validate(config)
    return config


async def serve(config: SimConfig, host: str, port: int) -> None:
    sim = Simulator(config)
    await sim.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"url": sim.url, "ws_url": sim.ws_url}), flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        config = config_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"simulator: bad configuration: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
