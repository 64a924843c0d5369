#!/usr/bin/env node
// A budgetd client in Node.js, written from docs/protocol.md: it connects, says hello, reads
// the balances, and checks the hash chain of the first page of events from the raw bytes the
// daemon sent. Needs Node.js 18 or later and @msgpack/msgpack (npm ci in this folder).
//
//   node hello_balances.mjs [SOCKET]      (default: $BUDGETD_SOCKET, as budgetctl finds it)
//
// It prints one line per fact, amounts in öre, as docs/examples/c/hello_balances.c does:
//   hello budgetd 0.1.0 protocol 1 head 18 uid 1000 name kim
//   unit KS 2021 frames=300000000 allocated=150000000 called_off=0 pending=0 available=...
//   frame ks-2021 KS 2021 granted=300000000 allocated=... pending=... unallocated=... ...
//   chain 18 events verified, seq 1..18, last hash 5c1f...
//
// 64-bit integers: budgetd writes every integer in its shortest msgpack form, so a total over
// 2^32 arrives as uint 64 (0xcf) or int 64 (0xd3). With useBigInt64 those decode as BigInt and
// stay exact past 2^53, where a JavaScript number would silently round.
import { createHash } from "node:crypto";
import net from "node:net";
import path from "node:path";
import { decode, encode } from "@msgpack/msgpack";

const FRAME_BYTES_MAX = 1024 * 1024;
const DECODE = { useBigInt64: true };

function socketPath(flag) {
  if (flag) return flag;
  if (process.env.BUDGETD_SOCKET) return process.env.BUDGETD_SOCKET;
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, "budgetd.sock");
  return "/run/budgetd/budgetd.sock";
}

// One connection: frames out, and a queue of whole frame bodies in (raw bytes).
class Connection {
  constructor(sock) {
    this.sock = sock;
    this.buffer = Buffer.alloc(0);
    this.bodies = [];
    this.waiting = null;
    this.nextId = 1; // ids start at 1: an answer with id 0 is the daemon closing the connection
    this.ended = null;
    sock.on("data", (chunk) => this.onData(chunk));
    sock.on("close", () => this.fail(new Error("budgetd closed the connection")));
    sock.on("error", (err) => this.fail(err));
  }

  static open(file) {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(file);
      sock.once("connect", () => resolve(new Connection(sock)));
      sock.once("error", reject);
    });
  }

  onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 4) {
      const size = this.buffer.readUInt32BE(0);
      if (size < 1 || size > FRAME_BYTES_MAX) return this.fail(new Error(`a frame of ${size} bytes`));
      if (this.buffer.length < 4 + size) break;
      this.bodies.push(this.buffer.subarray(4, 4 + size));
      this.buffer = this.buffer.subarray(4 + size);
    }
    this.wake();
  }

  fail(err) {
    if (!this.ended) this.ended = err;
    this.wake();
  }

  wake() {
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w();
    }
  }

  async nextBody() {
    while (this.bodies.length === 0) {
      if (this.ended) throw this.ended;
      await new Promise((resolve) => (this.waiting = resolve));
    }
    return this.bodies.shift();
  }

  // Sends one request and returns its answer: the decoded result and the raw body.
  async call(op, args) {
    const id = this.nextId++;
    const body = encode(args === undefined ? { id, op } : { id, op, args });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(body.length);
    this.sock.write(Buffer.concat([header, body]));
    const raw = await this.nextBody();
    const answer = decode(raw, DECODE);
    if (Number(answer.id) !== id) {
      throw new Error(`answer for id ${answer.id} where ${id} was due` +
                      (answer.error ? `: ${answer.error.code}: ${answer.error.message}` : ""));
    }
    if (!answer.ok) throw new Error(`${op}: ${answer.error.code}: ${answer.error.message}`);
    return { result: answer.result, raw };
  }

  close() {
    this.sock.end();
  }
}

// ---- msgpack from the raw bytes: where each value begins and ends ------------------------------

// The offset just past the value that starts at `p`.
function skip(b, p) {
  const t = b[p];
  if (t <= 0x7f || t >= 0xe0) return p + 1; // positive and negative fixint
  if (t >= 0x80 && t <= 0x8f) return skipItems(b, p + 1, 2 * (t & 0x0f));
  if (t >= 0x90 && t <= 0x9f) return skipItems(b, p + 1, t & 0x0f);
  if (t >= 0xa0 && t <= 0xbf) return p + 1 + (t & 0x1f);
  switch (t) {
    case 0xc0: case 0xc2: case 0xc3: return p + 1;
    case 0xc4: case 0xd9: return p + 2 + b[p + 1];
    case 0xc5: case 0xda: return p + 3 + b.readUInt16BE(p + 1);
    case 0xc6: case 0xdb: return p + 5 + b.readUInt32BE(p + 1);
    case 0xcc: case 0xd0: return p + 2;
    case 0xcd: case 0xd1: return p + 3;
    case 0xce: case 0xd2: case 0xca: return p + 5;
    case 0xcf: case 0xd3: case 0xcb: return p + 9;
    case 0xdc: return skipItems(b, p + 3, b.readUInt16BE(p + 1));
    case 0xdd: return skipItems(b, p + 5, b.readUInt32BE(p + 1));
    case 0xde: return skipItems(b, p + 3, 2 * b.readUInt16BE(p + 1));
    case 0xdf: return skipItems(b, p + 5, 2 * b.readUInt32BE(p + 1));
    default: throw new Error(`msgpack byte 0x${t.toString(16)} at ${p} is not used by budgetd`);
  }
}

function skipItems(b, p, n) {
  for (let i = 0; i < n; i++) p = skip(b, p);
  return p;
}

// The offset of the value under `key` in the map that starts at `p`, or -1.
function mapValue(b, p, key) {
  const t = b[p];
  let n, q;
  if (t >= 0x80 && t <= 0x8f) [n, q] = [t & 0x0f, p + 1];
  else if (t === 0xde) [n, q] = [b.readUInt16BE(p + 1), p + 3];
  else if (t === 0xdf) [n, q] = [b.readUInt32BE(p + 1), p + 5];
  else throw new Error(`not a map at ${p}`);
  for (let i = 0; i < n; i++) {
    const valueAt = skip(b, q);
    if (decode(b.subarray(q, valueAt)) === key) return valueAt;
    q = skip(b, valueAt);
  }
  return -1;
}

// The raw bytes of each item of the array that starts at `p`.
function arrayItems(b, p) {
  const t = b[p];
  let n, q;
  if (t >= 0x90 && t <= 0x9f) [n, q] = [t & 0x0f, p + 1];
  else if (t === 0xdc) [n, q] = [b.readUInt16BE(p + 1), p + 3];
  else if (t === 0xdd) [n, q] = [b.readUInt32BE(p + 1), p + 5];
  else throw new Error(`not an array at ${p}`);
  const items = [];
  for (let i = 0; i < n; i++) {
    const end = skip(b, q);
    items.push(b.subarray(q, end));
    q = end;
  }
  return items;
}

// ---- the hash chain ---------------------------------------------------------------------------

const HASH_TAIL = Buffer.from([0xa4, 0x68, 0x61, 0x73, 0x68, 0xc4, 0x20]); // "hash", bin 8 of 32

// SHA-256(prev || the event's canonical bytes without "hash"), from the bytes as stored: the
// 7-entry map's header 0x87 becomes 0x86 and the last 39 bytes ("hash" and its bin) go. The
// event is never re-encoded, so no msgpack library's choices can change a byte.
function checkEvent(bytes, prevHash) {
  const tailAt = bytes.length - 39;
  if (bytes[0] !== 0x87 || !bytes.subarray(tailAt, tailAt + 7).equals(HASH_TAIL)) {
    throw new Error("an event that is not in its canonical form");
  }
  const event = decode(bytes, DECODE);
  const prev = Buffer.from(event.prev);
  if (!prev.equals(prevHash)) throw new Error(`event ${event.seq}: prev is not the hash before it`);
  const hash = createHash("sha256")
    .update(prev)
    .update(Buffer.from([0x86]))
    .update(bytes.subarray(1, tailAt))
    .digest();
  if (!hash.equals(Buffer.from(event.hash))) throw new Error(`event ${event.seq}: wrong hash`);
  return { seq: BigInt(event.seq), hash };
}

// ---- the client -------------------------------------------------------------------------------

function figures(row, keys) {
  return keys.map((k) => `${k}=${String(row[k])}`).join(" ");
}

async function main() {
  const conn = await Connection.open(socketPath(process.argv[2]));

  const { result: hello } = await conn.call("hello");
  console.log(`hello ${hello.server} ${hello.version} protocol ${hello.protocol} head ${hello.head}` +
              ` uid ${hello.actor.uid} name ${hello.actor.name}`);

  // Every page of balances: each list is paged on its own; the pages after the first are asked
  // as of the first one's seq, so that all of them show the same ledger.
  let args;
  for (;;) {
    const { result: page } = await conn.call("balances", args);
    for (const u of page.units) {
      console.log(`unit ${u.unit} ${u.year} ` +
                  figures(u, ["frames", "allocated", "called_off", "pending", "available"]));
    }
    for (const f of page.frames) {
      console.log(`frame ${f.id} ${f.unit} ${f.year} ` +
                  figures(f, ["granted", "allocated", "pending", "unallocated", "called_off"]));
    }
    if (!page.more) break;
    // seqs and offsets stay far below 2^53, so they go back as plain numbers.
    args = { as_of: Number(page.as_of), frames_offset: Number(page.next.frames_offset),
             offset: Number(page.next.offset), units_offset: Number(page.next.units_offset) };
  }

  // The first page of events, checked link by link from the bytes as they came.
  const { raw } = await conn.call("events", { after: 0, limit: 1000 });
  const result = mapValue(raw, 0, "result");
  const events = arrayItems(raw, mapValue(raw, result, "events"));
  let prev = Buffer.alloc(32); // the prev of event 1
  let first = null, last = null;
  for (const bytes of events) {
    const { seq, hash } = checkEvent(bytes, prev);
    if (last !== null && seq !== last + 1n) throw new Error(`event ${seq} came after ${last}`);
    first ??= seq;
    last = seq;
    prev = hash;
  }
  if (events.length > 0) {
    console.log(`chain ${events.length} events verified, seq ${first}..${last}, ` +
                `last hash ${prev.toString("hex")}`);
  } else {
    console.log("chain 0 events verified");
  }
  conn.close();
}

main().catch((err) => {
  console.error(`hello_balances: ${err.message}`);
  process.exit(1);
});
