"""The naive Faust app the worker is compared with: per-event processing, nothing else.

``python -m tests.bench.naive_app --topic T --app-id A --port P --data-dir D`` consumes
the deal-event topic ``T`` (raw bytes) with one agent iterating ``stream.events()`` one
event at a time; per event it decodes the DealEvent (:mod:`schemas.codec`, as the worker)
and makes two Faust table writes (``table[key] = value``: the event's bytes by deal, its
stage by deal), each a changelog record through Faust's producer buffer.  No validation,
no views, no alerts, no publication.  ``GET /count`` answers ``{"events": n}``: the events
handled so far, which the bench polls for the rate.

Transport settings (producer linger and batch size, poll size, stream buffer, commit
interval) are the worker's own, so the ratio between the two compares the processing
model, not Faust tuning.  Bench only: settings come from the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from schemas.codec import Codec


def build(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=str(Path(args.data_dir) / args.app_id),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        web_port=args.port,
        topic_partitions=args.partitions,
        topic_allow_declare=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_in_thread=False,
        # the worker's transport settings (agents/app.py)
        producer_linger_ms=50,
        producer_max_batch_size=256 * 1024,
        broker_max_poll_records=2000,
        stream_buffer_maxsize=16384,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
    source = app.topic(args.topic, key_serializer="raw", value_serializer="raw", **raw)
    deals = app.Table("deals", default=None, partitions=args.partitions, **raw)
    stages = app.Table("stages", default=None, partitions=args.partitions, **raw)
    codec = Codec.for_record("DealEvent")
    handled = [0]

    @app.agent(source, name="naive-deals")
    async def naive(stream: faust.StreamT) -> None:
        async for event in stream.events():
            record = codec.decode(event.value)
            deals[event.key] = event.value
            stages[event.key] = record["stage"].encode()
            handled[0] += 1

    @app.page("/count")
    async def count(view: View, request: Request) -> Response:
        return view.json({"events": handled[0]})

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    app = build(args)
    faust.Worker(app, loglevel="WARNING", redirect_stdouts=False).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
