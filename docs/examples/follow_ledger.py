#!/usr/bin/env python3
"""Follow a budgetd ledger and keep running totals per unit and fiscal year.

A reporting service in a few lines: it subscribes to budgetd (docs/protocol.md, op
`subscribe`), checks every event's place in the hash chain as it arrives, and keeps, per unit
and year, what the unit has received (approved allocations), called off (approved avrop),
has pending (avrop awaiting a decision) and can still call off. Needs only Python 3 and
Debian's python3-msgpack.

    follow_ledger.py [--socket PATH] [--after SEQ] [--until SEQ]

It prints one line per change. With --until SEQ it stops once it has seen event SEQ and
prints the totals as one JSON object, the same figures `budgetctl --json balances` gives
under "units" (amounts in öre). To resume after a restart, pass the last seq it saw as
--after: a real service would store that seq with its own totals.
"""
import argparse
import hashlib
import json
import os
import socket
import struct
import sys

import msgpack

FRAME_BYTES_MAX = 1024 * 1024


def socket_path(flag):
    if flag:
        return flag
    if os.environ.get("BUDGETD_SOCKET"):
        return os.environ["BUDGETD_SOCKET"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "budgetd.sock")
    return "/run/budgetd/budgetd.sock"


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("budgetd closed the connection")
        data += chunk
    return data


def read_frame(sock):
    (size,) = struct.unpack(">I", read_exactly(sock, 4))
    if not 1 <= size <= FRAME_BYTES_MAX:
        raise ValueError("a frame of %d bytes" % size)
    return msgpack.unpackb(read_exactly(sock, size), raw=False)


def send_frame(sock, message):
    body = msgpack.packb(message, use_bin_type=True)
    sock.sendall(struct.pack(">I", len(body)) + body)


def event_hash(event):
    """SHA-256(prev || the event without "hash"), as docs/protocol.md defines it."""
    body = {key: value for key, value in event.items() if key != "hash"}
    return hashlib.sha256(event["prev"] + msgpack.packb(body, use_bin_type=True)).digest()


class Totals:
    def __init__(self):
        self.units = {}  # (unit, year) -> figures in öre

    def row(self, unit, year):
        return self.units.setdefault(
            (unit, year), {"allocated": 0, "called_off": 0, "pending": 0, "reducing": 0})

    def apply(self, event):
        """Returns the (unit, year) the event changed, or None."""
        kind, data = event["type"], event["data"]
        if "year" not in data:
            return None  # the register of units (unit.registered, ...) moves no money
        key = (data.get("unit"), data.get("year"))
        if kind in ("frame.granted", "allocation.proposed"):
            self.row(*key)  # the unit is known from here on, with nothing yet
            return None
        row = self.row(*key)
        target = data.get("target_kind")
        decided = kind in ("decision.rejected", "request.withdrawn")
        if kind == "avrop.requested":
            row["pending"] += data["amount"]
        elif kind == "allocation.reduction_requested":
            row["reducing"] += data["amount"]
        elif kind == "decision.approved" and target == "avrop":
            row["pending"] -= data["amount"]
            row["called_off"] += data["amount"]
        elif kind == "decision.approved" and target == "reduction":
            row["reducing"] -= data["amount"]
            row["allocated"] -= data["amount"]
        elif kind == "decision.approved" and target == "reversal":
            row["called_off"] -= data["amount"]
        elif kind == "decision.approved":
            row["allocated"] += data["amount"]
        elif decided and target == "avrop":
            row["pending"] -= data["amount"]
        elif decided and target == "reduction":
            row["reducing"] -= data["amount"]
        else:
            return None
        return key

    def as_json(self, seq):
        units = []
        for (unit, year), row in self.units.items():
            available = (row["allocated"] - row["called_off"] - row["pending"]
                         - row["reducing"])
            units.append(dict(unit=unit, year=year, available=available, **row))
        return {"seq": seq, "units": units}


def kronor(ore):
    sign = "-" if ore < 0 else ""
    whole, hundredths = divmod(abs(ore), 100)
    return "%s%s,%02d kr" % (sign, format(whole, ",").replace(",", " "), hundredths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", help="budgetd's socket (default as budgetctl's)")
    parser.add_argument("--after", type=int, default=0, help="start after this seq")
    parser.add_argument("--until", type=int, help="stop after this seq; print totals as JSON")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path(args.socket))
    send_frame(sock, {"id": 1, "op": "subscribe", "args": {"after": args.after}})
    answer = read_frame(sock)
    if not answer.get("ok"):
        sys.exit("budgetd refused: %(code)s: %(message)s" % answer["error"])
    print("following after seq %d; the head was %d" % (args.after, answer["result"]["head"]),
          file=sys.stderr)

    totals, seq, prev = Totals(), args.after, None
    while args.until is None or seq < args.until:
        push = read_frame(sock)
        if push.get("id") != 1 or not push.get("ok"):
            sys.exit("subscription ended: %s" % push.get("error"))
        event = push["event"]
        if event["seq"] != seq + 1:
            sys.exit("event %d came where %d was due" % (event["seq"], seq + 1))
        if (prev is not None and event["prev"] != prev) or event_hash(event) != event["hash"]:
            sys.exit("event %d does not fit the hash chain" % event["seq"])
        seq, prev = event["seq"], event["hash"]
        changed = totals.apply(event)
        if changed is not None:
            row = totals.units[changed]
            print("seq %d  %s %d  received %s  called off %s  pending %s" % (
                seq, changed[0], changed[1], kronor(row["allocated"]),
                kronor(row["called_off"]), kronor(row["pending"])), flush=True)
    print(json.dumps(totals.as_json(seq)), flush=True)


if __name__ == "__main__":
    main()
