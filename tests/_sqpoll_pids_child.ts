// Child of sqpoll.test.ts: moves itself into the pids cgroup <cgroup> (made by the test, root
// only) and caps it at one thread more than it has, so that exactly one SQPOLL ring's kernel
// thread fits. Then makes and destroys instances with sqpoll one after another, asks for a
// second one while one is held, and last makes one instance of three queues (whose rings share
// one thread). Prints one JSON line; goes back to its own cgroup before.
// usage: _sqpoll_pids_child.ts <path> <cgroup dir> <cycles>
import { type Blkio, BlkioError } from "../mod.ts";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { homeCgroup, openCycles, openInstance } from "./_child.ts";

const [path, cgroup, cycles] = process.argv.slice(-3);

const open = (numQueues = 1): Blkio => openInstance(path, { sqpoll: true, numQueues });
const home = homeCgroup(cgroup);

// Everything the runtime makes threads for lazily happens before the cap.
for (let i = 0; i < 5; i++) open().destroy();
await new Promise((r) => setTimeout(r, 300));
const fds = () => readdirSync("/proc/self/fd").length;
const fdsBefore = fds();

writeFileSync(`${cgroup}/cgroup.procs`, String(process.pid));
const current = Number(readFileSync(`${cgroup}/pids.current`, "utf8").trim());
writeFileSync(`${cgroup}/pids.max`, String(current + 1));
let cycled: { ok: number; failures: string[] } = { ok: 0, failures: [] };
let second: { code: string; message: string } | null = null;
let threeQueues = "ok";
try {
  cycled = openCycles(Number(cycles), open);
  let held: Blkio | null = null;
  try {
    held = open();
    open().destroy();
  } catch (e) {
    const code = e instanceof BlkioError ? e.code : String(e);
    second = { code, message: `${held === null ? "(the one held) " : ""}${(e as Error).message}` };
  } finally {
    held?.destroy();
  }
  // The held instance's thread exits a little after destroy: the set-up waits for room.
  try {
    open(3).destroy();
  } catch (e) {
    threeQueues = (e as Error).message;
  }
} finally {
  writeFileSync(`${cgroup}/pids.max`, "max");
  writeFileSync(`${home}/cgroup.procs`, String(process.pid));
}
console.log(
  JSON.stringify({
    ok: cycled.ok,
    failed: cycled.failures.length,
    failures: cycled.failures.slice(0, 2),
    second,
    threeQueues,
    fdsLeft: fds() - fdsBefore,
  }),
);
