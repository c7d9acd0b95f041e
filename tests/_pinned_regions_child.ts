// Child of fixed_buffers.test.ts, run with a low RLIMIT_MEMLOCK and without CAP_IPC_LOCK, where
// the kernel charges a registered buffer's pages to that limit: maps two regions of which the
// limit holds one, unmaps the first, and reads through the second. Prints one JSON line: the
// pages this process has pinned (VmPin, KiB) after each step, and whether the read was right.
// usage: _pinned_regions_child.ts <path> <region bytes>
import type { Completion } from "../mod.ts";
import { readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { openInstance } from "./_child.ts";

const [path, size] = process.argv.slice(-2);
const len = Number(size);

/** Registered buffers pin their pages: /proc's VmPin counts them, whatever the limit. */
function pinnedKiB(): number {
  return Number(/VmPin:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))![1]);
}

const data = new Uint8Array(len).map((_, i) => (i * 7 + (i >> 12)) & 0xff);
writeFileSync(path, data);
using b = openInstance(path);
const q = b.getQueue(0)!;
const first = b.allocMemRegion(len);
const second = b.allocMemRegion(len);
const pinned: number[] = [pinnedKiB()];
b.mapMemRegion(first);
pinned.push(pinnedKiB());
b.mapMemRegion(second);
pinned.push(pinnedKiB());
b.unmapMemRegion(first);
pinned.push(pinnedKiB());
q.read(0, second.bytes, "r");
const out: Completion[] = [];
q.doIo(out, 1, 1);
const c = out[0];
const right = c.ret === 0 && second.bytes.every((v, i) => v === data[i]);
b.unmapMemRegion(second);
b.freeMemRegion(first);
b.freeMemRegion(second);
console.log(JSON.stringify({ pinned, right, ret: c.ret }));
