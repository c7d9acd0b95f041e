// Child of errors.test.ts, run with a low RLIMIT_MEMLOCK and without CAP_IPC_LOCK, where the
// kernel charges ring memory to that limit: instances made and destroyed one after another,
// then as many as the limit holds at once. Prints one JSON line.
// usage: _memlock_child.ts <path> <cycles>
import type { Blkio } from "../mod.ts";
import process from "node:process";
import { failure, openCycles, openInstance } from "./_child.ts";

const [path, cycles] = process.argv.slice(-2);
const open = () => openInstance(path);

const { ok, failures } = openCycles(Number(cycles), open);
const held: Blkio[] = [];
let limit: { code: string; message: string } | null = null;
try {
  while (held.length < 64) held.push(open());
} catch (e) {
  limit = failure(e);
}
for (const b of held) b.destroy();
console.log(
  JSON.stringify({ ok, failures: failures.slice(0, 3), failed: failures.length, held: held.length, limit }),
);
