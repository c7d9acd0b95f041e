/**
 * The property engine: each driver declares its properties once, in a table, and typed access,
 * string access, state checks, errors and introspection all derive from it.
 *
 * @module
 */
import { BlkioError, cannotSetIn, mustBeConnected } from "./errors.ts";
import { State, type StateName, stateName, type StateValue } from "./state.ts";

/**
 * The four property types of libblkio.
 *
 * @example Read any property as its own JS type
 * ```ts
 * import { Blkio, type PropertyType } from "@blkio/blkio";
 * function get(b: Blkio, name: string): boolean | number | bigint | string {
 *   const type: PropertyType = b.properties().find((p) => p.name === name)!.type;
 *   if (type === "bool") return b.getBool(name);
 *   if (type === "int") return b.getInt(name);
 *   return type === "uint64" ? b.getUint64(name) : b.getStr(name);
 * }
 * using b = Blkio.create("io_uring");
 * if (get(b, "num-queues") !== 1 || get(b, "driver") !== "io_uring") throw new Error("unexpected");
 * ```
 */
export type PropertyType = "bool" | "int" | "uint64" | "str";

/** The JS type of each property type. */
export interface PropertyValue {
  bool: boolean;
  int: number;
  uint64: bigint;
  str: string;
}

/** One row of a driver's property table. `D` is the driver the accessors work on. */
export interface PropertyRow<D, T extends PropertyType = PropertyType> {
  readonly type: T;
  /** One line on what the property means. */
  readonly doc: string;
  /** First state in which the property can be read (default: every state). */
  readonly readableFrom?: StateValue;
  /** States in which it can be set; absent for read-only properties. */
  readonly settableIn?: readonly StateValue[];
  /** Reads the value; may throw BlkioError. */
  get(driver: D): PropertyValue[T];
  /** Validates and stores a value of the right type; state checks are already done. */
  set?(driver: D, value: PropertyValue[T]): void;
  /**
   * A property libblkio knows but this driver cannot take (its `fd` on vhost-user): a set fails
   * with ENOENT and this message while created, EBUSY after (libblkio checks the state first);
   * introspection shows it read-only.
   */
  readonly unsupportedSet?: string;
}

/** A row of any type, discriminated by `type` so each row's accessors are typed. */
export type AnyPropertyRow<D> = { [T in PropertyType]: PropertyRow<D, T> }[PropertyType];

/**
 * What `Blkio.properties()` reports for one property.
 *
 * @example The properties to set before connect
 * ```ts
 * import { Blkio, type PropertyInfo } from "@blkio/blkio";
 * using b = Blkio.create("io_uring");
 * const settable: PropertyInfo[] = b.properties().filter((p) => p.settableIn.includes("created"));
 * if (!settable.some((p) => p.name === "path" && p.type === "str" && p.writable)) throw new Error("no path");
 * ```
 */
export interface PropertyInfo {
  /** The property's name, such as `"num-queues"`. */
  name: string;
  /** Which accessors take it: `getInt`/`setInt` for "int", and so on (`getStr`/`setStr` take all). */
  type: PropertyType;
  /** Readable in the instance's current state. */
  readable: boolean;
  /** Writable in the instance's current state. */
  writable: boolean;
  /** The states in which it can be set (empty for read-only properties). */
  settableIn: ("created" | "connected")[];
  /** The first state in which it can be read. */
  readableFrom: StateName;
  /** One line on what it is. */
  doc: string;
}

const INT_MIN = -2147483648;
const INT_MAX = 2147483647;
const UINT64_MAX = (1n << 64n) - 1n;
const ARTICLE: Record<PropertyType, string> = {
  bool: "a bool",
  int: "an int",
  uint64: "a uint64",
  str: "a str",
};
/** What the getter and setter of each type are called after `get` / `set` (`getUint64`). */
const ACCESSOR: Record<PropertyType, string> = {
  bool: "Bool",
  int: "Int",
  uint64: "Uint64",
  str: "Str",
};

/** A table of property rows with the checks every accessor shares. */
export class PropertyTable<D> {
  readonly #rows: ReadonlyMap<string, PropertyRow<D>>;

  constructor(rows: Record<string, AnyPropertyRow<D>>) {
    this.#rows = new Map<string, PropertyRow<D>>(
      Object.entries(rows).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    );
  }

  /** Whether the table has a property called `name`. */
  has(name: string): boolean {
    return this.#rows.has(name);
  }

  #row(name: unknown): PropertyRow<D> {
    if (typeof name !== "string") {
      throw BlkioError.of("EINVAL", `Property name must be a string: received ${typeof name}`);
    }
    const row = this.#rows.get(name);
    if (!row) {
      throw BlkioError.of("ENOENT", `Unknown property name ${JSON.stringify(name)}${this.#hint(name)}`);
    }
    return row;
  }

  /**
   * For an unknown name written another way (`read_only`, `readOnly`, `NUM-QUEUES`: the
   * spelling of BlockDevice's options or of C identifiers), the property meant; else "".
   * libblkio's message stops at the name, which left a newcomer guessing.
   */
  #hint(name: string): string {
    const bare = (s: string) => s.toLowerCase().replace(/[-_ ]/g, "");
    const key = bare(name);
    if (key === "") return "";
    for (const known of this.#rows.keys()) {
      if (bare(known) === key) {
        return ` (property names are lower case with hyphens: did you mean "${known}"?)`;
      }
    }
    return "";
  }

  #typed(name: unknown, type: PropertyType, access: "get" | "set"): PropertyRow<D> {
    const row = this.#row(name);
    if (row.type !== type) {
      throw BlkioError.of(
        "ENOTTY",
        `Property ${JSON.stringify(name)} is not ${ARTICLE[type]}: its type is ${row.type}${
          accessorHint(row, access)
        }`,
      );
    }
    return row;
  }

  #readable(name: string, row: PropertyRow<D>, state: StateValue): void {
    const from = row.readableFrom ?? State.Created;
    if (state < from) {
      throw mustBeConnected(`property ${JSON.stringify(name)} can be read once ${stateName(from)}`);
    }
  }

  #writable(name: string, row: PropertyRow<D>, state: StateValue): void {
    if (row.unsupportedSet !== undefined) {
      // As libblkio's virtio-blk set_fd: the state first (EBUSY once connected), then ENOENT.
      if (state > State.Created) throw cannotSetIn(name, stateName(state));
      throw BlkioError.of("ENOENT", row.unsupportedSet);
    }
    const states = row.settableIn;
    if (!states || states.length === 0 || !row.set) {
      throw BlkioError.of("EACCES", `Property ${JSON.stringify(name)} is read-only`);
    }
    if (states.includes(state)) return;
    if (state < Math.min(...states)) {
      const when = states.map((v) => stateName(v)).join(" or ");
      throw mustBeConnected(`property ${JSON.stringify(name)} can be set in ${when} state`);
    }
    throw cannotSetIn(name, stateName(state));
  }

  /** Typed read: the property must have type `type`. */
  get<T extends PropertyType>(driver: D, state: StateValue, name: string, type: T): PropertyValue[T] {
    const row = this.#typed(name, type, "get");
    this.#readable(name, row, state);
    return row.get(driver) as PropertyValue[T];
  }

  /**
   * Typed write: the property must have type `type`, be writable now, and `check` must accept
   * `value`, in libblkio's order (name, type, access, then the value): a typo in a name, or a
   * read-only property, is what the caller needs to hear about first.
   */
  set<T extends PropertyType>(
    driver: D,
    state: StateValue,
    name: string,
    type: T,
    value: unknown,
    check: (name: string, value: unknown) => PropertyValue[T],
  ): void {
    const row = this.#typed(name, type, "set");
    this.#writable(name, row, state);
    (row.set as (d: D, v: PropertyValue[T]) => void)(driver, check(name, value));
  }

  /** Reads any property as text: `true`/`false` or a decimal number. */
  getStr(driver: D, state: StateValue, name: string): string {
    const row = this.#row(name);
    this.#readable(name, row, state);
    return String(row.get(driver));
  }

  /**
   * Writes any property from text, parsed for its type. As in libblkio (Property::set_str parses
   * before it calls the setter, where access and state are checked), text that is not a value of
   * the type is EINVAL first; a value that is not text at all (no C caller can pass one) is
   * checked last, like the other setters' JS types.
   */
  setStr(driver: D, state: StateValue, name: string, text: unknown): void {
    const row = this.#row(name);
    const isText = typeof text === "string" && !text.includes("\0");
    const parsed = isText ? parseValue(name, row.type, text) : undefined;
    this.#writable(name, row, state);
    const set = row.set as (d: D, v: PropertyValue[PropertyType]) => void;
    set(driver, parsed ?? parseValue(name, row.type, checkStr(name, text)));
  }

  /** Introspection for the instance's current state. */
  describe(state: StateValue): PropertyInfo[] {
    const out: PropertyInfo[] = [];
    for (const [name, row] of this.#rows) {
      const settable = row.set ? (row.settableIn ?? []) : [];
      out.push({
        name,
        type: row.type,
        readable: state >= (row.readableFrom ?? State.Created),
        writable: settable.includes(state),
        settableIn: settable.map((s) => stateName(s)) as ("created" | "connected")[],
        readableFrom: stateName(row.readableFrom ?? State.Created),
        doc: row.doc,
      });
    }
    return out;
  }
}

/**
 * The accessor to use instead of a typed one of the wrong type, from the row's type: libblkio
 * says only "Property is not an int", which left the caller to find `getUint64` (new-user review).
 * A property that cannot be set is said to be read-only rather than pointed at a setter.
 */
function accessorHint<D>(row: PropertyRow<D>, access: "get" | "set"): string {
  const typed = ACCESSOR[row.type];
  const str = row.type === "str";
  if (access === "get") return ` (read it with get${typed}${str ? "" : ", or as text with getStr"})`;
  const settable = row.set !== undefined && (row.settableIn?.length ?? 0) > 0 &&
    row.unsupportedSet === undefined;
  if (!settable) return `, and it is read-only (read it with get${typed})`;
  return ` (set it with set${typed}${str ? "" : ", or from text with setStr"})`;
}

/** Parses `text` as a value of `type`, as libblkio's `blkio_set_str` does. */
export function parseValue(name: string, type: PropertyType, text: string): PropertyValue[PropertyType] {
  if (typeof text !== "string") {
    throw BlkioError.of(
      "EINVAL",
      `Value of ${JSON.stringify(name)} must be a string: received ${typeof text}`,
    );
  }
  switch (type) {
    case "bool":
      if (text === "true") return true;
      if (text === "false") return false;
      throw BlkioError.of(
        "EINVAL",
        `Value of ${JSON.stringify(name)} must be "true" or "false": received ${JSON.stringify(text)}`,
      );
    case "int": {
      if (!/^[+-]?\d+$/.test(text)) {
        throw BlkioError.of(
          "EINVAL",
          `Value of ${JSON.stringify(name)} must be an integer: received ${JSON.stringify(text)}`,
        );
      }
      // Checked here so that the message quotes the text: Number("99999999999999999999") is 1e20.
      const n = Number(text);
      if (n < INT_MIN || n > INT_MAX) {
        throw BlkioError.of(
          "EINVAL",
          `Value of ${JSON.stringify(name)} must be an integer from ${INT_MIN} to ${INT_MAX}: received ${
            JSON.stringify(text)
          }`,
        );
      }
      return n;
    }
    case "uint64": {
      if (!/^\+?\d+$/.test(text)) {
        throw BlkioError.of(
          "EINVAL",
          `Value of ${JSON.stringify(name)} must be an unsigned integer: received ${JSON.stringify(text)}`,
        );
      }
      return checkUint64(name, BigInt(text.replace("+", "")));
    }
    case "str":
      return text;
  }
}

/** Checks that `value` is a C int. */
export function checkInt(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < INT_MIN || value > INT_MAX) {
    throw BlkioError.of(
      "EINVAL",
      `Value of ${JSON.stringify(name)} must be an integer from ${INT_MIN} to ${INT_MAX}: received ${
        describe(value)
      }`,
    );
  }
  return value;
}

/** Checks that `value` is a uint64 (bigint, or a safe non-negative integer number). */
export function checkUint64(name: string, value: unknown): bigint {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === "bigint" && value >= 0n && value <= UINT64_MAX) return value;
  throw BlkioError.of(
    "EINVAL",
    `Value of ${JSON.stringify(name)} must be an unsigned 64-bit integer: received ${describe(value)}`,
  );
}

/** Checks that `value` is a boolean. */
export function checkBool(name: string, value: unknown): boolean {
  if (typeof value !== "boolean") {
    throw BlkioError.of(
      "EINVAL",
      `Value of ${JSON.stringify(name)} must be a boolean: received ${describe(value)}`,
    );
  }
  return value;
}

/** Checks that `value` is a string without NUL characters. */
export function checkStr(name: string, value: unknown): string {
  if (typeof value !== "string" || value.includes("\0")) {
    throw BlkioError.of(
      "EINVAL",
      `Value of ${JSON.stringify(name)} must be a string without NUL characters: received ${describe(value)}`,
    );
  }
  return value;
}

/** A short description of a JS value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === "string") {
    // JSON's quoting shows control characters (a NUL in a path) instead of printing them.
    return value.length > 40 ? JSON.stringify(value.slice(0, 40)).slice(0, -1) + '…"' : JSON.stringify(value);
  }
  if (typeof value === "bigint") return `${value}n`;
  if (value === null) return "null";
  if (typeof value === "object") {
    try {
      const name = (value as object).constructor?.name;
      return typeof name === "string" ? name : "object";
    } catch {
      return "object"; // a Proxy or getter that throws: the caller still gets its EINVAL
    }
  }
  return String(value); // symbols too (a template string would throw TypeError)
}
