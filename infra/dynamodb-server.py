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
    every record the table ever streamed (a soak grew moto past 20 GB). The
    backup shares the live stream instead, and a cancelled transaction
    removes the records it added, which is what the copy achieved. Exact
    because requests are applied one at a time (see `main`)."""
    StreamShard.__deepcopy__ = lambda shard, memo: shard
    transact = DynamoDBBackend.transact_write_items

    def transact_write_items(backend, transact_items):
        lengths = [
            (table.stream_shard, len(table.stream_shard.items))
            for table in backend.tables.values()
            if table.stream_shard is not None
        ]
        try:
            return transact(backend, transact_items)
        except Exception:
            for shard, length in lengths:
                del shard.items[length:]
            raise

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
