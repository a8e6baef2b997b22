"""The dead-letter helper against the real broker: the record lands with coordinates and raw bytes.

The helper runs inside the real app (`streams.app`, its producer and topic handles) in a
subprocess configured like a worker; the DLQ topic is read back with a plain Kafka consumer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from schemas.codecs import decode_dead_letter
from tests.support.kafka import create_topics
from tests.support.stack import ROOT, StackInfo, app_env, app_topics

pytestmark = pytest.mark.integration

PLANTED_SECRET = "PLANTED-dlq-secret-5e4d3c2b1a"
GARBAGE = b"\x00\x00\x00\x00\x07\xff\xfe not avro"

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os
    from streams.app import app, settings, topics
    from streams.dlq import DEAD_LETTERS, DeadLetters

    async def main() -> None:
        await app.producer.start()
        dead_letters = DeadLetters.for_settings(topics.dlq, settings)
        try:
            await dead_letters.send(
                reason="avro_decode_error", topic="src.topic", partition=2, offset=17,
                key=b"AAPL", value=bytes.fromhex(os.environ["GARBAGE_HEX"]),
                error=RuntimeError("decoder said no to " + os.environ["APCA_API_SECRET_KEY"]),
            )
            await dead_letters.send(
                reason="schema_invalid", topic="src.topic", partition=None, offset=None,
                key=None, value=None,
            )
            await app.producer.flush()
        finally:
            await app.producer.stop()
        counted = DEAD_LETTERS.labels(reason="avro_decode_error", topic="src.topic")._value.get()
        print(json.dumps({"counted": counted}))

    asyncio.run(main())
    """
)


async def read_records(bootstrap: str, topic: str, expect: int) -> list[ConsumerRecord]:
    """`expect` records of `topic` from the beginning (group-less; polls until they arrive)."""
    # tests.support.kafka.read_all calls force_metadata_update, absent from aiokafka 0.14.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        out: list[ConsumerRecord] = []
        async with asyncio.timeout(60):
            while len(out) < expect:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend(batch)
        return out
    finally:
        await consumer.stop()


async def test_dead_letters_reach_the_dlq_topic_scrubbed(stack: StackInfo) -> None:
    env = app_env("dlq")
    await create_topics(stack.bootstrap, app_topics(env), partitions=4)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={
            **os.environ,
            **env,
            "KAFKA_BROKERS": stack.kafka_brokers,
            "APCA_API_KEY_ID": "PK-dlq-test",
            "APCA_API_SECRET_KEY": PLANTED_SECRET,
            "GARBAGE_HEX": GARBAGE.hex(),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"counted": 1.0}
    assert PLANTED_SECRET not in result.stdout + result.stderr

    records = await read_records(stack.bootstrap, env["TORGHUT_DLQ_TOPIC"], expect=2)
    assert len(records) == 2
    assert PLANTED_SECRET.encode() not in b"".join(r.value for r in records)
    decoded = [(r, decode_dead_letter(r.value)) for r in records]
    letters = {letter.reason: (r, letter) for r, letter in decoded}

    record, letter = letters["avro_decode_error"]
    assert record.key == b"AAPL"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "src.topic",
        2,
        17,
    )
    assert letter.key == b"AAPL" and letter.value == GARBAGE and letter.value_size == len(GARBAGE)
    assert letter.error == "RuntimeError: decoder said no to ***"
    assert letter.app_id == env["TORGHUT_APP_ID"]

    _, bare = letters["schema_invalid"]
    assert (bare.key, bare.value, bare.source_partition, bare.error) == (None, None, None, None)
