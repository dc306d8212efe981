"""Attack bot: writes a trace whose records are valid JSON but carry odd values ($TRACE_MODE), never answers.

Modes: huge-t (a 400-digit `t`), str-fields (lock records with dict/list/str fields), model-str-t (a string
`t`), giant-line (one 50 MB record), truncate (opens the trace with "w" on every start), none (just `ready`).
"""

import json
import os
import time

mode = os.environ.get("TRACE_MODE", "")
path = os.environ["MATRIX_QA_TRACE_FILE"]
t = time.clock_gettime(time.CLOCK_MONOTONIC) * 1000


def record(**fields: object) -> str:
    return json.dumps(fields) + "\n"


with open(path, "w" if mode == "truncate" else "a") as fh:
    fh.write(record(type="ready", t=round(t) if mode == "truncate" else t))
    if mode == "huge-t":
        fh.write('{"type":"lock.acquire","t":1' + "0" * 400 + ',"session":"s","attempt":"a"}\n')
    elif mode == "str-fields":
        fh.write(record(type="lock.acquire", t=t, session={"x": 1}, attempt=[1], heldMs="abc"))
        fh.write(record(type="lock.release", t=t + 1, session={"x": 1}, attempt=[1], heldMs="abc"))
    elif mode == "model-str-t":
        fh.write(record(type="lock.acquire", t=t, session="s", attempt="a"))
        fh.write(record(type="model.request.start", t=t, requestId="r", session="s", attempt="a"))
        fh.write(record(type="model.request.end", t="late", requestId="r", session="s", attempt="a"))
    elif mode == "giant-line":
        fh.write('{"type":"note","x":"' + "y" * (50 * 2**20) + '"}\n')
    fh.flush()
print("trace written", flush=True)
time.sleep(600)
