"""Runs moto's server with one request applied at a time.

DynamoDB applies every single-item write and every transaction atomically.
moto's threaded server does not: two concurrent `ADD`s on one item can lose an
update and two conditional transactions can both pass their checks. Tests of
exact caps and throttles would then fail for moto's reasons, not ours, so this
wraps moto's application in a lock. Connections and keep-alive stay threaded.
"""

import argparse
import os
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))

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
