/**
 * qemu blkdebug configurations, for exports that fail chosen requests (tests/faults.test.ts and
 * the fuzzer's `vhost-eio` target). No test runner imports: the fuzzer loads it as a script.
 *
 * @module
 */

/**
 * One `[inject-error]` rule of a qemu blkdebug configuration, failing every matching request
 * (`once = "off"`) with `errno`: chosen by `event` (default "none") and/or `iotype`, and `sector`.
 */
export function injectError(
  rule: { errno: number; event?: string; iotype?: string; sector?: number },
): string {
  return `[inject-error]\nevent = "${rule.event ?? "none"}"\n` +
    (rule.iotype === undefined ? "" : `iotype = "${rule.iotype}"\n`) +
    `errno = "${rule.errno}"\n` +
    (rule.sector === undefined ? "" : `sector = "${rule.sector}"\n`) +
    `once = "off"\n`;
}
