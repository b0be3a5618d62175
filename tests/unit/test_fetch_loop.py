"""The worker's record schema gives the same events as Faust's own raw-bytes schema."""

from __future__ import annotations

import asyncio

import faust
from faust.types import Message

from agents.fetch_loop import RawRecords


def message(key: bytes | None, value: bytes | None) -> Message:
    return Message(
        topic="deals",
        partition=3,
        offset=41,
        timestamp=1_700_000_000.0,
        timestamp_type=0,
        headers=[("h", b"1")],
        key=key,
        value=value,
        checksum=None,
    )


def test_raw_records_decode_like_faust_raw_schema() -> None:
    app = faust.App("test-raw-records", broker="memory://", store="memory://")
    faust_schema = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    faust_decode = faust_schema.compile(app)
    ours = RawRecords().compile(app)

    async def both(msg: Message) -> tuple[faust.Event, faust.Event]:
        return await faust_decode(msg, propagate=True), await ours(msg, propagate=True)

    for key, value in [(b"deal-1", b"\x00\x01avro"), (None, b"v"), (b"k", None), (b"", b"")]:
        msg = message(key, value)
        theirs, mine = asyncio.run(both(msg))
        assert type(mine) is type(theirs)
        assert (mine.key, mine.value, mine.headers, mine.message) == (
            theirs.key,
            theirs.value,
            theirs.headers,
            theirs.message,
        )
        assert mine.key == key and mine.value == value and mine.message is msg
