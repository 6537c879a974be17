"""What Python's httpx-sse, an SSE client nobody here wrote, yields: one
JSON line per ServerSentEvent on stdout, and "opened" once the response
has arrived. Used by tests/independent_clients.rs; stops after COUNT
events whose data is "end".

usage: python sse_httpx.py URL
"""

import json
import sys

import httpx
from httpx_sse import connect_sse


def main() -> None:
    url = sys.argv[1]
    with httpx.Client(timeout=httpx.Timeout(30.0)) as client:
        with connect_sse(client, "GET", url) as source:
            print(json.dumps({"kind": "opened", "status": source.response.status_code}), flush=True)
            for sse in source.iter_sse():
                print(
                    json.dumps(
                        {"kind": "event", "event": sse.event, "data": sse.data, "id": sse.id, "retry": sse.retry}
                    ),
                    flush=True,
                )
                if sse.data == "end":
                    return


if __name__ == "__main__":
    main()
