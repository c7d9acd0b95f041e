/**
 * Property rows every driver shares: the queue counts set in the connected state.
 *
 * @module
 */
import { BlkioError } from "./errors.ts";
import type { PropertyRow } from "./properties.ts";
import { State } from "./state.ts";

/** A driver with queue counts chosen before start. */
export interface QueueCounts {
  numQueues: number;
  numPollQueues: number;
}

function countRow<D extends QueueCounts>(
  name: string,
  doc: string,
  key: keyof QueueCounts,
): PropertyRow<D, "int"> {
  return {
    type: "int",
    doc,
    settableIn: [State.Connected],
    get: (d) => d[key],
    set: (d, v) => {
      if (v < 0) throw BlkioError.of("EINVAL", `${name} must be 0 or more: received ${v}`);
      d[key] = v;
    },
  };
}

/** The `num-queues` and `num-poll-queues` rows (libblkio: settable while connected, >= 0). */
export function queueCountRows<D extends QueueCounts>(): {
  "num-poll-queues": PropertyRow<D, "int">;
  "num-queues": PropertyRow<D, "int">;
} {
  return {
    "num-poll-queues": countRow<D>(
      "num-poll-queues",
      "Number of poll queues created by start()",
      "numPollQueues",
    ),
    "num-queues": countRow<D>("num-queues", "Number of queues created by start()", "numQueues"),
  };
}
