// Child of virtio_blk.test.ts, run with a low RLIMIT_NOFILE: maps a memory region on a started
// virtio-blk-vhost-user instance while no fd is free, where the driver's copy of the region's fd
// fails with EMFILE; then maps it again with the fds given back. Prints one JSON line.
// usage: _map_emfile.ts <socket>
import { closeSync } from "node:fs";
import process from "node:process";
import { failure, fillFdTable, openInstance } from "./_child.ts";

const b = openInstance(process.argv.at(-1)!, { driver: "virtio-blk-vhost-user" });
const region = b.allocMemRegion(1 << 20);
const held = fillFdTable();
let result: Record<string, unknown>;
try {
  b.mapMemRegion(region);
  result = { mapped: true };
} catch (e) {
  result = failure(e);
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
