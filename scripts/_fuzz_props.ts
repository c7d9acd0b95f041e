/**
 * The fuzzer's model of the properties (io_uring, and virtio-blk-vhost-user against the
 * fuzzer's export): for each row, its type, the states it can be set and read in, and the value
 * it must have now (libblkio.md §3-4; README for this port's own: `sqpoll`,
 * `may-pin-mem-regions` true, `max-mem-regions` 31).
 *
 * @module
 */
import type { Blkio } from "../mod.ts";

/** The instance's state as the fuzzer tracks it ("none": no instance). */
export type State = "none" | "created" | "connected" | "started";

/** States in order, so guards are one comparison. */
export const STATE_ORDER: Readonly<Record<State, number>> = {
  none: -1,
  created: 0,
  connected: 1,
  started: 2,
};

/** One property the model knows. */
export interface PropRow {
  type: "bool" | "int" | "uint64" | "str";
  /** States it can be set in (empty: read-only, EACCES). */
  settable: State[];
  /** First state it can be read in (ENODEV before). */
  readable: State;
  /** The value it must have now, or undefined when any value will do. */
  value?: () => unknown;
}

/** What the rows' values depend on. */
export interface PropertyView {
  state: State;
  /** The path set ("" before). */
  path: string;
  direct: boolean;
  readOnly: boolean;
  sqpoll: boolean;
  numQueues: number;
  numPollQueues: number;
  numEntries: number;
  /** request-alignment once connected. */
  alignment: number;
  isBlockDevice: boolean;
  /** supports-poll-queues as connect found it. */
  supportsPoll: boolean;
  /** virtio-blk-vhost-user (numEntries is then its queue-size), else io_uring. */
  vhost: boolean;
}

/** A read-only row, readable from state `readable`. */
function ro(type: PropRow["type"], readable: State, value?: () => unknown): PropRow {
  return { type, settable: [], readable, value };
}

/** The rows every driver has for its target: path and read-only. */
function targetRows(v: PropertyView): Record<string, PropRow> {
  return {
    "path": { type: "str", settable: ["created"], readable: "created", value: () => v.path },
    "read-only": { type: "bool", settable: ["created"], readable: "created", value: () => v.readOnly },
  };
}

/** The queue counts, settable once connected. */
function queueCountRows(v: PropertyView): Record<string, PropRow> {
  return {
    "num-queues": { type: "int", settable: ["connected"], readable: "created", value: () => v.numQueues },
    "num-poll-queues": {
      type: "int",
      settable: ["connected"],
      readable: "created",
      value: () => v.numPollQueues,
    },
  };
}

/** The rows, for the instance as `v` describes it. */
export function propertyRows(v: PropertyView): Record<string, PropRow> {
  if (v.vhost) return vhostRows(v);
  const connected = STATE_ORDER[v.state] >= STATE_ORDER.connected;
  return {
    "driver": ro("str", "created", () => "io_uring"),
    ...targetRows(v),
    "direct": { type: "bool", settable: ["created"], readable: "created", value: () => v.direct },
    "sqpoll": {
      type: "bool",
      settable: ["created", "connected"],
      readable: "created",
      value: () => v.sqpoll,
    },
    ...queueCountRows(v),
    "num-entries": { type: "int", settable: ["connected"], readable: "created", value: () => v.numEntries },
    // A file's size is checked by the run's own capacity action (it needs the writes in flight).
    "capacity": ro("uint64", "connected"),
    "request-alignment": ro("int", "connected", () => v.alignment),
    "buf-alignment": ro("int", "connected", () => v.alignment),
    "mem-region-alignment": ro("uint64", "connected", () => BigInt(v.alignment)),
    // Stored fields in libblkio: readable before connect, with their defaults.
    "can-grow": ro("bool", "created", () => connected && !v.isBlockDevice),
    "flush-needed": ro("bool", "created", connected ? undefined : () => true),
    "supports-poll-queues": ro("bool", "created", () => connected && v.supportsPoll),
    "max-queues": ro("int", "created", () => 2147483647),
    "max-mem-regions": ro("uint64", "created", () => 0xffffffffffffffffn),
    "needs-mem-regions": ro("bool", "created", () => false),
    "needs-mem-region-fd": ro("bool", "created", () => false),
    "may-pin-mem-regions": ro("bool", "created", () => true),
    "can-add-queues": ro("bool", "created", () => true),
    "max-segments": ro("int", "connected", () => 1024),
    "max-transfer": ro("int", "connected", () => 0),
    "optimal-io-alignment": ro("int", "connected"),
    "discard-alignment": ro("int", "connected"),
    // -1 until connect; then the fd the instance opened.
    "fd": {
      type: "int",
      settable: ["created"],
      readable: "created",
      value: connected ? undefined : () => -1,
    },
  };
}

/**
 * virtio-blk-vhost-user's rows against the fuzzer's export (README "virtio-blk-vhost-user",
 * virtio_blk.test.ts "properties"): no direct, sqpoll or num-entries; queue-size instead.
 */
function vhostRows(v: PropertyView): Record<string, PropRow> {
  return {
    "driver": ro("str", "created", () => "virtio-blk-vhost-user"),
    ...targetRows(v),
    ...queueCountRows(v),
    "queue-size": { type: "int", settable: ["connected"], readable: "created", value: () => v.numEntries },
    "capacity": ro("uint64", "connected"),
    "request-alignment": ro("int", "connected", () => 512),
    "buf-alignment": ro("int", "connected", () => 1),
    // Stored fields in libblkio's virtio-blk driver: readable before connect, with their defaults.
    "mem-region-alignment": ro("uint64", "created", () => 1n),
    "can-grow": ro("bool", "created", () => false),
    "flush-needed": ro(
      "bool",
      "created",
      STATE_ORDER[v.state] >= STATE_ORDER.connected ? undefined : () => true,
    ),
    "supports-poll-queues": ro("bool", "created", () => true),
    "max-queues": ro("int", "connected", () => 2),
    "max-queue-size": ro("int", "created", () => 32768),
    "max-mem-regions": ro("uint64", "connected", () => 31n),
    "needs-mem-regions": ro("bool", "created", () => true),
    "needs-mem-region-fd": ro("bool", "created", () => true),
    "may-pin-mem-regions": ro("bool", "created", () => true),
    "can-add-queues": ro("bool", "created", () => false),
    "supports-fua-natively": ro("bool", "created", () => false),
    "max-segments": ro("int", "connected"),
    "max-transfer": ro("int", "connected"),
    "optimal-io-alignment": ro("int", "connected"),
    "discard-alignment": ro("int", "connected"),
  };
}

/** Reads `name` with the accessor of `type`. */
export function typedGet(b: Blkio, name: string, type: PropRow["type"]): unknown {
  switch (type) {
    case "bool":
      return b.getBool(name);
    case "int":
      return b.getInt(name);
    case "uint64":
      return b.getUint64(name);
    case "str":
      return b.getStr(name);
  }
}

/** Sets `name` with the accessor of `type`. */
export function typedSet(b: Blkio, name: string, type: PropRow["type"], v: unknown): void {
  switch (type) {
    case "bool":
      return b.setBool(name, v as boolean);
    case "int":
      return b.setInt(name, v as number);
    case "uint64":
      return b.setUint64(name, v as bigint);
    case "str":
      return b.setStr(name, v as string);
  }
}

/** A value of `type` for a set that must fail before the value matters. */
export function sampleValue(type: PropRow["type"]): unknown {
  return type === "bool" ? false : type === "int" ? 1 : type === "uint64" ? 1n : "x";
}
