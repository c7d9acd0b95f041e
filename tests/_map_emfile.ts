// Child of virtio_blk.test.ts, run with a low RLIMIT_NOFILE: maps a memory region on a started
// virtio-blk-vhost-user instance while no fd is free, where the driver's copy of the region's fd
// fails with EMFILE; then maps it again with the fds given back. Prints one JSON line.
// usage: _map_emfile.ts <socket>
import { Blkio, BlkioError } from "../mod.ts";
import { closeSync, openSync } from "node:fs";
import process from "node:process";

const b = Blkio.create("virtio-blk-vhost-user");
b.setStr("path", process.argv.at(-1)!);
b.connect();
b.start();
const region = b.allocMemRegion(1 << 20);
const held: number[] = [];
try {
  for (;;) held.push(openSync("/dev/null", "r"));
} catch {
  // the table is full
}
let result: Record<string, unknown>;
try {
  b.mapMemRegion(region);
  result = { mapped: true };
} catch (e) {
  result = { code: e instanceof BlkioError ? e.code : String(e), message: (e as Error).message };
}
for (const fd of held) closeSync(fd);
let after = "mapped";
try {
  b.mapMemRegion(region);
} catch (e) {
  after = (e as Error).message;
}
b.destroy();
console.log(JSON.stringify({ held: held.length, fd: region.fd, ...result, after }));
