/**
 * What the in-process benchmarks share: the median they report and the page-cached file they
 * read.
 *
 * @module
 */
import { writeFileSync } from "node:fs";

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Writes `mib` MiB of random bytes to `path`. Written by this process, every page of it is in
 * the page cache afterwards. 64 KiB at a time: getRandomValues' limit.
 */
export function writePageCachedFile(path: string, mib: number): void {
  const data = new Uint8Array(mib << 20);
  for (let off = 0; off < data.length; off += 65536) crypto.getRandomValues(data.subarray(off, off + 65536));
  writeFileSync(path, data);
}
