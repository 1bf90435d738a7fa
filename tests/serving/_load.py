"""Continuous load from a second process: every answer's status and model version, in order.

Run as ``python _load.py URL BODY_JSON SECONDS OUT_PATH``; writes one JSON line per
request (``t``, ``status``, ``version``, ``arm``, ``fallback``) and stops by itself.
"""

from __future__ import annotations

import sys
import time

import httpx
import orjson


def main() -> None:
    url, body, seconds, out = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3]), sys.argv[4]
    deadline = time.monotonic() + seconds
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=10.0) as client, open(out, "wb") as fh:
        while time.monotonic() < deadline:
            t = time.time()
            try:
                r = client.post(url, content=body, headers=headers)
                status = r.status_code
                doc = r.json() if status == 200 else {}
            except httpx.TransportError:
                status, doc = -1, {}
            line = {
                "t": t,
                "status": status,
                "version": doc.get("version"),
                "arm": doc.get("arm"),
                "fallback": doc.get("fallback"),
            }
            fh.write(orjson.dumps(line) + b"\n")
            fh.flush()


if __name__ == "__main__":
    main()
