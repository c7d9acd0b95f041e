// Garbage collection for tests that check what the library keeps alive (buffers.test.ts,
// queues.test.ts).
import v8 from "node:v8";
import vm from "node:vm";

/** A full garbage collection: Bun.gc, the global gc, or V8's gc exposed through node:vm. */
export const fullGc: () => void = (() => {
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  if (bun) return () => bun.gc(true);
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === "function") return g;
  try {
    v8.setFlagsFromString("--expose-gc");
    const fn = vm.runInNewContext("gc") as () => void;
    if (typeof fn === "function") return fn;
  } catch {
    // fall through: garbage churn alone
  }
  return () => churn(200);
})();

let _sink: unknown = null;
/** Allocates `mib` MiB of short-lived garbage of mixed sizes. */
export function churn(mib: number): void {
  for (let i = 0; i < mib * 16; i++) {
    const arrays: unknown[] = [];
    for (let k = 0; k < 64; k++) arrays.push(new Uint8Array(k & 1 ? 16 : 1024), { k, s: `x${k}` });
    _sink = arrays;
  }
  _sink = null;
}

const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** Ends the current job, then collects garbage until a dropped sentinel is gone. */
export async function collect(): Promise<boolean> {
  let sentinel: object | null = { big: new Uint8Array(1 << 16) };
  const ref = new WeakRef(sentinel);
  sentinel = null;
  for (let i = 0; i < 10; i++) {
    await tick(); // WeakRef targets are kept until the end of the job that made them
    churn(8);
    fullGc();
    if (ref.deref() === undefined) return true;
  }
  return false;
}
