// Child of sqpoll.test.ts: moves itself into the pids cgroup <cgroup> (made by the test, root
// only) and caps it at one thread more than it has, so that exactly one SQPOLL ring's kernel
// thread fits. Then makes and destroys instances with sqpoll one after another, asks for a
// second one while one is held, and last makes one instance of three queues (whose rings share
// one thread). Prints one JSON line; goes back to its own cgroup before.
// usage: _sqpoll_pids_child.ts <path> <cgroup dir> <cycles>
import { Blkio, BlkioError } from "../mod.ts";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";

const [path, cgroup, cycles] = process.argv.slice(-3);

function open(numQueues = 1): Blkio {
  const b = Blkio.create("io_uring");
  try {
    b.setStr("path", path);
    b.setBool("sqpoll", true);
    b.connect();
    b.setInt("num-queues", numQueues);
    b.start();
    return b;
  } catch (e) {
    b.destroy();
    throw e;
  }
}

// The cgroup the process is in now, in the hierarchy holding `cgroup`, to go back to.
const v1 = cgroup.startsWith("/sys/fs/cgroup/pids/");
const line = readFileSync("/proc/self/cgroup", "utf8").split("\n")
  .find((l) => (v1 ? /^\d+:([^:]*,)?pids(,[^:]*)?:/ : /^0::/).test(l))!;
const home = `${v1 ? "/sys/fs/cgroup/pids" : "/sys/fs/cgroup"}${line.slice(line.lastIndexOf(":") + 1)}`
  .replace(/\/$/, "");

// Everything the runtime makes threads for lazily happens before the cap.
for (let i = 0; i < 5; i++) open().destroy();
await new Promise((r) => setTimeout(r, 300));
const fds = () => readdirSync("/proc/self/fd").length;
const fdsBefore = fds();

writeFileSync(`${cgroup}/cgroup.procs`, String(process.pid));
const current = Number(readFileSync(`${cgroup}/pids.current`, "utf8").trim());
writeFileSync(`${cgroup}/pids.max`, String(current + 1));
let ok = 0;
const failures: string[] = [];
let second: { code: string; message: string } | null = null;
let threeQueues = "ok";
try {
  for (let i = 0; i < Number(cycles); i++) {
    try {
      open().destroy();
      ok++;
    } catch (e) {
      failures.push((e as Error).message);
    }
  }
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
    ok,
    failed: failures.length,
    failures: failures.slice(0, 2),
    second,
    threeQueues,
    fdsLeft: fds() - fdsBefore,
  }),
);
