"""Runs moto's server with one request applied at a time.

DynamoDB applies every single-item write and every transaction atomically.
moto's threaded server does not: two concurrent `ADD`s on one item can lose an
update and two conditional transactions can both pass their checks. Tests of
exact caps and throttles would then fail for moto's reasons, not ours, so this
wraps moto's application in a lock. Connections and keep-alive stay threaded.

It also keeps moto's transactions from copying streams (see
`share_streams_in_transaction_backups`).
"""

import argparse
import os
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import StreamShard

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def share_streams_in_transaction_backups() -> None:
    """moto backs up every table a transaction names with a deep copy, its
    stream's records included, and the stream iterators it hands out keep
    each copy alive: every transaction costs time and memory in proportion to
    every record the table ever streamed (a soak grew moto past 20 GB). While
    a transaction runs, a deep copy shares the live stream instead; where moto
    rolled a table back (it put the copy in place), the stream drops the
    records the cancelled writes added and points at the restored table,
    which is what the copy achieved. Exact because requests are applied one
    at a time (see `main`)."""
    transact = DynamoDBBackend.transact_write_items

    def transact_write_items(backend, transact_items):
        before = [
            (name, table, table.stream_shard, len(table.stream_shard.items))
            for name, table in backend.tables.items()
            if table.stream_shard is not None
        ]
        StreamShard.__deepcopy__ = lambda shard, memo: shard
        try:
            return transact(backend, transact_items)
        finally:
            del StreamShard.__deepcopy__
            for name, table, shard, length in before:
                restored = backend.tables.get(name)
                if restored is not None and restored is not table:
                    del shard.items[length:]
                    shard.table = restored

    DynamoDBBackend.transact_write_items = transact_write_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    share_streams_in_transaction_backups()

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            # The whole body is produced under the lock: moto applies the
            # request while the response iterable is built.
            return list(app(environ, start_response))

    run_simple(args.host, args.port, one_at_a_time, threaded=True)


if __name__ == "__main__":
    main()
