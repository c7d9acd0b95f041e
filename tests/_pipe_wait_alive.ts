// Child process of eventfd_relay.test.ts: the only thing left to do is a pipe wait whose data
// comes from another process later. The wait alone must keep the process alive until then, also
// when it is not the pipe's first (Bun: a reader taken again after the idle one was released).
import { spawn } from "node:child_process";
import { native } from "../ffi/load.ts";

const N = native!;
const fds = N.alloc(8);
if (N.libc.pipe2(fds, 0o4000 | 0o2000000) !== 0) throw new Error("pipe2 failed");
const v = new DataView(fds.buffer);
const [r, w] = [v.getInt32(0, true), v.getInt32(4, true)];
const one = N.alloc(8);
one[0] = 1;
N.libc.write(w, one, 8n);
await N.waitPipe(r);
console.log("first wait ended");
setTimeout(() => {
  // The write end goes to a process that writes in 300 ms: nothing of this one's event loop
  // (no timer, no child handle) is left but the wait.
  const writer = spawn("sh", ["-c", "sleep 0.3; printf 12345678 >&3"], {
    stdio: ["ignore", "ignore", "inherit", w],
    detached: true,
  });
  writer.unref();
  N.libc.close(w);
  void N.waitPipe(r).then(() => console.log("second wait ended"));
}, 50);
