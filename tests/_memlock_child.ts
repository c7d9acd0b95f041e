// Child of errors.test.ts, run with a low RLIMIT_MEMLOCK and without CAP_IPC_LOCK, where the
// kernel charges ring memory to that limit: instances made and destroyed one after another,
// then as many as the limit holds at once. Prints one JSON line.
// usage: _memlock_child.ts <path> <cycles>
import { Blkio, BlkioError } from "../mod.ts";
import process from "node:process";

const [path, cycles] = process.argv.slice(-2);

function open(): Blkio {
  const b = Blkio.create("io_uring");
  try {
    b.setStr("path", path);
    b.connect();
    b.start();
    return b;
  } catch (e) {
    b.destroy();
    throw e;
  }
}

const failures: string[] = [];
let ok = 0;
for (let i = 0; i < Number(cycles); i++) {
  try {
    open().destroy();
    ok++;
  } catch (e) {
    failures.push((e as Error).message);
  }
}
const held: Blkio[] = [];
let limit: { code: string; message: string } | null = null;
try {
  while (held.length < 64) held.push(open());
} catch (e) {
  limit = { code: e instanceof BlkioError ? e.code : String(e), message: (e as Error).message };
}
for (const b of held) b.destroy();
console.log(
  JSON.stringify({ ok, failures: failures.slice(0, 3), failed: failures.length, held: held.length, limit }),
);
