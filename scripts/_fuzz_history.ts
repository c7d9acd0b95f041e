/**
 * The fuzzer's memory of recent writes, to say where wrong bytes came from: a read that found
 * bytes the model did not expect is told which write they belong to (and for which offset), or
 * that they are what the model holds elsewhere (data read, or written, to the wrong place). Its
 * random payloads make a run of 16 bytes name one write only.
 *
 * @module
 */
import { type DiskModel, type Interval, KNOWN } from "./_fuzz_disk.ts";
import type { FuzzRequest } from "./_fuzz_request.ts";

/** How many bytes of payload are kept at most (the oldest writes are forgotten first). */
const KEEP_BYTES = 64 * 1024 * 1024;
const PROBE = 16;

/** Recent writes with their payloads and what became of them. */
export class WriteHistory {
  readonly #writes = new Map<number, { r: FuzzRequest; fate: string }>();
  #bytes = 0;

  /** Records write `r` (its `data` is set). */
  add(r: FuzzRequest): void {
    this.#writes.set(r.id, { r, fate: "in flight" });
    this.#bytes += r.len;
    for (const [id, w] of this.#writes) {
      if (this.#bytes <= KEEP_BYTES) break;
      this.#writes.delete(id);
      this.#bytes -= w.r.len;
    }
  }

  /** What became of request `id` ("completed with -22 at step 9"), if it is kept. */
  settle(id: number, fate: string): void {
    const w = this.#writes.get(id);
    if (w) w.fate = fate;
  }

  /**
   * Whose bytes a read of `start` found at its first byte the model disagrees with: `parts` as
   * it filled them, `lens` their lengths when it was queued (shorter now: detached, skipped),
   * `skip` the ranges racing writes overlapped.
   */
  explain(
    disk: DiskModel,
    start: number,
    parts: readonly Uint8Array[],
    lens: readonly number[],
    skip: readonly Interval[],
  ): string {
    let probe: Uint8Array | null = null, where = -1;
    for (let i = 0, at0 = start; i < parts.length && probe === null; at0 += lens[i], i++) {
      const p = parts[i];
      if (p.length !== lens[i]) continue;
      for (let k = 0; k + PROBE <= p.length; k++) {
        const at = at0 + k;
        if (skip.some(([s, e]) => at >= s && at < e)) continue;
        if (!disk.allows(at, p[k])) {
          probe = p.subarray(k, k + PROBE);
          where = at;
          break;
        }
      }
    }
    if (probe === null) return "";
    const found: string[] = [];
    for (const { r, fate } of this.#writes.values()) {
      const d = r.data!;
      outer: for (let k = 0; k + PROBE <= d.length; k++) {
        for (let j = 0; j < PROBE; j++) if (d[k + j] !== probe[j]) continue outer;
        found.push(
          `#${r.id} ${r.op} [${r.start}, +${r.len}) of step ${r.step} (${fate}) holds them at its ` +
            `byte ${k}, meant for offset ${r.start + k}`,
        );
      }
    }
    const shifts: string[] = [];
    for (let d = -65536; d <= 65536; d += 512) {
      const at = where + d;
      if (d === 0 || at < 0 || at + PROBE > disk.limit) continue;
      let same = true;
      for (let j = 0; j < PROBE && same; j++) {
        const e = disk.byteAt(at + j);
        same = e.state === KNOWN && e.value === probe[j];
      }
      if (same) shifts.push(`${d > 0 ? "+" : ""}${d}`);
    }
    return `; the bytes read at ${where}: ${found.length > 0 ? found.join("; ") : "no recent write's"}` +
      `${shifts.length > 0 ? `; they are what the model holds at that offset ${shifts.join(", ")}` : ""}`;
  }
}
