// Child of file_size_limit.test.ts, run under `prlimit --fsize=<limit>`: writes at and across
// the limit (O_DIRECT writes run inside io_uring_enter, on this thread), then allocates a memory
// region larger than the limit (its memfd counts too). Prints one JSON line of what it saw;
// SIGXFSZ's default action would end the process before that.
// usage: _file_size_limit.ts <file> <limit>
import { BlockDevice, type Completion } from "../mod.ts";
import process from "node:process";
import { openInstance } from "./_child.ts";

const [path, limitArg] = process.argv.slice(-2);
const limit = Number(limitArg);
const seen: Record<string, unknown> = {};

function doIoWrite(offset: number): number {
  using b = openInstance(path, { direct: true });
  const r = b.allocMemRegion(65536);
  b.mapMemRegion(r);
  r.bytes.fill(0xab);
  const q = b.getQueue(0)!;
  q.write(offset, r.bytes, "w");
  const out: Completion[] = [];
  q.doIo(out, 1, 1);
  return out[0].ret;
}

seen.atLimit = doIoWrite(limit);
// Across: the kernel writes up to the limit, and the library's retry of the rest starts at it.
seen.across = doIoWrite(limit - 16384);
const dev = await BlockDevice.open(path, { direct: true });
try {
  await dev.write(limit, dev.allocBuffer(4096));
  seen.blockDevice = "resolved";
} catch (e) {
  seen.blockDevice = (e as { code?: string }).code;
}
await dev.close();
try {
  using b = openInstance(path, { start: false });
  b.allocMemRegion(2 * limit);
  seen.region = "allocated";
} catch (e) {
  seen.region = (e as { code?: string }).code;
}
console.log(JSON.stringify(seen));
