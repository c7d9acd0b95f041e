// Child of faults.test.ts, run with a low RLIMIT_NOFILE: a BlockDevice whose queue makes its
// first wait while the fd table is full (Bun sets up its eventfd reader then, and that failed
// with EMFILE), the fds given back 500 ms later. Prints one JSON line: each read's outcome.
// usage: _first_wait_emfile.ts <path>
import { BlkioError, BlockDevice } from "../mod.ts";
import { closeSync } from "node:fs";
import process from "node:process";
import { fillFdTable } from "./_child.ts";

const path = process.argv.at(-1)!;
const dev = await BlockDevice.open(path, { direct: true });
const bufs = Array.from({ length: 4 }, () => dev.allocBuffer(4096));
const held = fillFdTable();
setTimeout(() => held.forEach((fd) => closeSync(fd)), 500);
const hang = setTimeout(() => {
  console.log(JSON.stringify({ held: held.length, outcomes: "pending after 20 s" }));
  process.exit(0);
}, 20_000);
// 4 reads of an export that does 4 a second: none is back before the first wait.
const outcomes = await Promise.all(
  bufs.map((b, i) =>
    dev.read(i * 65536, b).then(() => "ok", (e) => e instanceof BlkioError ? e.code : String(e))
  ),
);
clearTimeout(hang);
await dev.close();
console.log(JSON.stringify({ held: held.length, outcomes }));
