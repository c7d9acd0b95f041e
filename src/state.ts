/**
 * The instance lifecycle: created → connected → started, ordered so each guard is one
 * comparison.
 *
 * @module
 */

/** Lifecycle states, in order. */
export const State = { Created: 0, Connected: 1, Started: 2 } as const;

/** One lifecycle state. */
export type StateValue = typeof State[keyof typeof State];

/**
 * The state names the public API reports.
 *
 * @example The lifecycle
 * ```ts
 * import { Blkio, type StateName } from "@blkio/blkio";
 * using b = Blkio.create("io_uring");
 * b.setStr("path", "/proc/self/exe");
 * b.setBool("read-only", true);
 * const seen: StateName[] = [b.state];
 * b.connect();
 * seen.push(b.state);
 * b.start();
 * seen.push(b.state);
 * if (seen.join() !== "created,connected,started") throw new Error(seen.join());
 * ```
 */
export type StateName = "created" | "connected" | "started";

const NAMES: readonly StateName[] = ["created", "connected", "started"];

/** The public name of a state. */
export function stateName(state: StateValue): StateName {
  return NAMES[state];
}
