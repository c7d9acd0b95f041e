// Child process of block_device.test.ts: leaves a BlockDevice open (never closed) after its
// requests are done; the process must still exit by itself, and only once they are done.
import process from "node:process";
import { BlockDevice } from "../mod.ts";

const dev = await BlockDevice.open(process.argv[process.argv.length - 1]);
const buf = dev.allocBuffer(4096);
await dev.read(0, buf);
setTimeout(() => {
  let done = 0;
  for (let i = 0; i < 64; i++) {
    void dev.read(i * 4096, dev.allocBuffer(4096)).then(() => {
      if (++done === 64) console.log("all reads completed");
    });
  }
}, 20);
