// The io_uring property table (libblkio.md §4) and the property API (§3): introspection agrees
// with what the typed and string accessors actually do in every state, text conversion, and
// the errors for unknown names, wrong types and wrong JS values.
import { test } from "node:test";
import assert from "./_assert.ts";
import { Blkio, BlkioError, type PropertyInfo, type PropertyType } from "../mod.ts";
import { checkUint64, parseValue } from "../src/properties.ts";
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { native } from "../ffi/load.ts";
import { join } from "node:path";
import { assertErrno, cleanupAll, type Target, targets } from "./_helpers.ts";

const TARGETS = targets();

type Access = {
  type: PropertyType;
  settableIn: ("created" | "connected")[];
  readableFrom: "created" | "connected";
};
const C: ["created"] = ["created"];
const K: ["connected"] = ["connected"];
const CK: ["created", "connected"] = ["created", "connected"];
const RO: [] = [];

/**
 * libblkio 1.5's io_uring properties. Stored fields are readable in every state; computed ones
 * (the device limits, capacity, mem-region-alignment) only once connected.
 */
const EXPECTED: Record<string, Access> = {
  "driver": { type: "str", settableIn: RO, readableFrom: "created" },
  "read-only": { type: "bool", settableIn: C, readableFrom: "created" },
  "can-add-queues": { type: "bool", settableIn: RO, readableFrom: "created" },
  "capacity": { type: "uint64", settableIn: RO, readableFrom: "connected" },
  "max-queues": { type: "int", settableIn: RO, readableFrom: "created" },
  "num-queues": { type: "int", settableIn: K, readableFrom: "created" },
  "num-poll-queues": { type: "int", settableIn: K, readableFrom: "created" },
  "supports-poll-queues": { type: "bool", settableIn: RO, readableFrom: "created" },
  "max-mem-regions": { type: "uint64", settableIn: RO, readableFrom: "created" },
  "may-pin-mem-regions": { type: "bool", settableIn: RO, readableFrom: "created" },
  "mem-region-alignment": { type: "uint64", settableIn: RO, readableFrom: "connected" },
  "needs-mem-regions": { type: "bool", settableIn: RO, readableFrom: "created" },
  "needs-mem-region-fd": { type: "bool", settableIn: RO, readableFrom: "created" },
  "request-alignment": { type: "int", settableIn: RO, readableFrom: "connected" },
  "optimal-io-alignment": { type: "int", settableIn: RO, readableFrom: "connected" },
  "optimal-io-size": { type: "int", settableIn: RO, readableFrom: "connected" },
  "flush-needed": { type: "bool", settableIn: RO, readableFrom: "created" },
  "buf-alignment": { type: "int", settableIn: RO, readableFrom: "connected" },
  "optimal-buf-alignment": { type: "int", settableIn: RO, readableFrom: "connected" },
  "can-grow": { type: "bool", settableIn: RO, readableFrom: "created" },
  "max-segments": { type: "int", settableIn: RO, readableFrom: "connected" },
  "max-segment-len": { type: "int", settableIn: RO, readableFrom: "connected" },
  "max-transfer": { type: "int", settableIn: RO, readableFrom: "connected" },
  "supports-fua-natively": { type: "bool", settableIn: RO, readableFrom: "created" },
  "max-write-zeroes-len": { type: "uint64", settableIn: RO, readableFrom: "connected" },
  "discard-alignment": { type: "int", settableIn: RO, readableFrom: "connected" },
  "discard-alignment-offset": { type: "int", settableIn: RO, readableFrom: "connected" },
  "max-discard-len": { type: "uint64", settableIn: RO, readableFrom: "connected" },
  "path": { type: "str", settableIn: C, readableFrom: "created" },
  "fd": { type: "int", settableIn: C, readableFrom: "created" },
  "direct": { type: "bool", settableIn: C, readableFrom: "created" },
  "num-entries": { type: "int", settableIn: K, readableFrom: "created" },
  // An extension (libblkio has no SQPOLL): settable until started, like num-entries, and before
  // connect too, so blkio_bench can take it on its command line.
  "sqpoll": { type: "bool", settableIn: CK, readableFrom: "created" },
};

const STATES = ["created", "connected", "started"] as const;
type StateName = typeof STATES[number];
const ORDER: Record<StateName, number> = { created: 0, connected: 1, started: 2 };

type Getter = "getBool" | "getInt" | "getUint64";
type Setter = "setBool" | "setInt" | "setUint64" | "setStr";
const GETTER: Record<PropertyType, Getter | null> = {
  bool: "getBool",
  int: "getInt",
  uint64: "getUint64",
  str: null,
};
const SETTER: Record<PropertyType, Setter> = {
  bool: "setBool",
  int: "setInt",
  uint64: "setUint64",
  str: "setStr",
};
/** A JS value of the right kind for each typed setter. */
const SAMPLE: Record<PropertyType, unknown> = { bool: true, int: 1, uint64: 1n, str: "x" };

function typedGet(b: Blkio, info: PropertyInfo): unknown {
  const g = GETTER[info.type];
  return g === null ? b.getStr(info.name) : b[g](info.name);
}

function typedSet(b: Blkio, type: PropertyType, name: string, value: unknown): void {
  (b[SETTER[type]] as (n: string, v: unknown) => void)(name, value);
}

/** A different valid value of the same type, as text, for the round-trip check. */
function otherValue(info: PropertyInfo, current: string): string {
  switch (info.type) {
    case "bool":
      return current === "true" ? "false" : "true";
    case "int":
      return String(Number(current) + 3);
    case "uint64":
      return String(BigInt(current) + 3n);
    case "str":
      return current + "-other";
  }
}

/** The error a set must fail with when introspection says the property is not writable. */
function expectedSetError(info: PropertyInfo, state: StateName): string {
  if (info.settableIn.length === 0) return "EACCES";
  return ORDER[state] < Math.min(...info.settableIn.map((s) => ORDER[s])) ? "ENODEV" : "EBUSY";
}

function instanceIn(t: Target, state: StateName): Blkio {
  const b = Blkio.create("io_uring");
  b.setStr("path", t.path);
  b.setBool("direct", t.direct);
  if (state !== "created") b.connect();
  if (state === "started") b.start();
  return b;
}

// ---- the table -----------------------------------------------------------------------------

test("properties(): lists exactly libblkio's io_uring properties (and sqpoll) with their types", () => {
  using b = Blkio.create("io_uring");
  const list = b.properties();
  const names = list.map((p) => p.name);
  assert.equal(new Set(names).size, names.length, "no duplicates");
  assert.deepEqual([...names].sort(), Object.keys(EXPECTED).sort());
  for (const p of list) assert.equal(p.type, EXPECTED[p.name].type, `type of ${p.name}`);
  assert.equal(list.length, 33);
});

test("properties(): settableIn and readableFrom match libblkio", () => {
  using b = Blkio.create("io_uring");
  for (const p of b.properties()) {
    const e = EXPECTED[p.name];
    assert.deepEqual(p.settableIn, e.settableIn, `settableIn of ${p.name}`);
    assert.equal(p.readableFrom, e.readableFrom, `readableFrom of ${p.name}`);
    assert.equal(typeof p.doc, "string");
    assert.ok(p.doc.length > 0, `doc of ${p.name}`);
  }
});

test("properties(): readable/writable follow the state", () => {
  const t = TARGETS[0];
  for (const state of STATES) {
    using b = instanceIn(t, state);
    for (const p of b.properties()) {
      const e = EXPECTED[p.name];
      assert.equal(p.readable, ORDER[state] >= ORDER[e.readableFrom], `${p.name} readable in ${state}`);
      assert.equal(p.writable, (e.settableIn as string[]).includes(state), `${p.name} writable in ${state}`);
    }
  }
});

test("properties(): returns fresh objects each call", () => {
  using b = Blkio.create("io_uring");
  const first = b.properties();
  first[0].writable = !first[0].writable;
  first[0].settableIn.push("connected");
  first.pop();
  const second = b.properties();
  assert.equal(second.length, 33);
  assert.notEqual(second[0].writable, first[0].writable);
  assert.deepEqual(second[0].settableIn, EXPECTED[second[0].name].settableIn);
});

// ---- introspection agrees with the accessors, in every state --------------------------------

for (const t of TARGETS) {
  for (const state of STATES) {
    test(`properties(): readable/writable agree with get and set in ${state} state [${t.name}]`, () => {
      using b = instanceIn(t, state);
      for (const info of b.properties()) {
        if (info.readable) {
          const v = typedGet(b, info);
          const s = b.getStr(info.name);
          assert.equal(s, String(v), `getStr(${info.name}) matches the typed value`);
          const kind = { bool: "boolean", int: "number", uint64: "bigint", str: "string" }[info.type];
          assert.equal(typeof v, kind, `typeof ${info.name}`);
          if (info.type === "int") {
            assert.ok(Number.isInteger(v) && (v as number) >= -(2 ** 31) && (v as number) < 2 ** 31);
          }
        } else {
          const g = GETTER[info.type];
          if (g !== null) assertErrno(() => b[g](info.name), "ENODEV", /connected/);
          assertErrno(() => b.getStr(info.name), "ENODEV", /connected/);
        }

        if (info.writable) {
          // Writing back the current value (typed and as text) changes nothing.
          const text = b.getStr(info.name);
          const typed = typedGet(b, info);
          typedSet(b, info.type, info.name, typed);
          b.setStr(info.name, text);
          assert.equal(b.getStr(info.name), text);
          // A different value round-trips through setStr and the typed getter.
          const other = otherValue(info, text);
          b.setStr(info.name, other);
          assert.equal(b.getStr(info.name), other, `setStr(${info.name}, ${other})`);
          b.setStr(info.name, text);
          assert.equal(b.getStr(info.name), text);
        } else {
          const code = expectedSetError(info, state);
          const before = info.readable ? b.getStr(info.name) : null;
          assertErrno(() => typedSet(b, info.type, info.name, SAMPLE[info.type]), code, undefined);
          assertErrno(() => b.setStr(info.name, String(SAMPLE[info.type])), code);
          if (before !== null) assert.equal(b.getStr(info.name), before, `${info.name} unchanged`);
        }
      }
      assert.equal(b.state, state);
    });
  }
}

test("properties(): the read-only error names the property", () => {
  using b = Blkio.create("io_uring");
  assertErrno(() => b.setStr("max-queues", "3"), "EACCES", /max-queues/);
  assertErrno(() => b.setBool("can-grow", true), "EACCES", /can-grow/);
});

// ---- getStr / setStr -----------------------------------------------------------------------

test("getStr: bools, ints, uint64s and strs as text", () => {
  const t = TARGETS[0];
  using b = instanceIn(t, "connected");
  assert.equal(b.getStr("can-add-queues"), "true");
  assert.equal(b.getStr("needs-mem-regions"), "false");
  assert.equal(b.getStr("max-queues"), "2147483647");
  assert.equal(b.getStr("fd"), String(b.getInt("fd")));
  assert.equal(b.getStr("capacity"), String(t.size));
  assert.equal(b.getStr("path"), t.path);
  assert.equal(b.getStr("driver"), "io_uring");
});

test("getStr: uint64 max prints unsigned", () => {
  using b = Blkio.create("io_uring");
  assert.equal(b.getUint64("max-mem-regions"), 18446744073709551615n);
  assert.equal(b.getStr("max-mem-regions"), "18446744073709551615");
});

test("setStr: parses bools and ints like libblkio, and rejects everything else with EINVAL", () => {
  using b = instanceIn(TARGETS[0], "created");
  b.setStr("direct", "true");
  assert.equal(b.getBool("direct"), true);
  b.setStr("direct", "false");
  assert.equal(b.getBool("direct"), false);
  for (const bad of ["yes", "no", "True", "FALSE", "1", "0", "", " true", "true "]) {
    assertErrno(() => b.setStr("direct", bad), "EINVAL", /true|false/);
  }
  assert.equal(b.getBool("direct"), false);
  b.setStr("fd", "+7");
  assert.equal(b.getInt("fd"), 7);
  b.setStr("fd", "-1");
  assert.equal(b.getInt("fd"), -1);
  for (
    const bad of ["12x", "x12", "", " 1", "1 ", "0x10", "1e3", "1.5", "2147483648", "-2147483649", "--1", "١"]
  ) {
    assertErrno(() => b.setStr("fd", bad), "EINVAL", /fd/);
  }
  assert.equal(b.getInt("fd"), -1);
  b.setStr("fd", "2147483647");
  assert.equal(b.getInt("fd"), 2147483647);
  b.setStr("fd", "-2147483648");
  assert.equal(b.getInt("fd"), -2147483648);
  b.setStr("fd", "-1");
  // A str property takes any text.
  b.setStr("path", "");
  assert.equal(b.getStr("path"), "");
  b.setStr("path", "/no such/dir/ünïcode");
  assert.equal(b.getStr("path"), "/no such/dir/ünïcode");
});

test("setStr: int parse errors on a connected-state property", () => {
  using b = instanceIn(TARGETS[0], "connected");
  assertErrno(() => b.setStr("num-queues", "12x"), "EINVAL", /num-queues/);
  assertErrno(() => b.setStr("num-entries", "yes"), "EINVAL", /num-entries/);
  assert.equal(b.getInt("num-queues"), 1);
  b.setStr("num-queues", "3");
  assert.equal(b.getInt("num-queues"), 3);
});

test("setStr: uint64 text must be an unsigned 64-bit decimal", () => {
  // io_uring has no writable uint64 property, so the parser is checked directly.
  const parse = (text: string) => parseValue("max-mem-regions", "uint64", text);
  assert.equal(parse("0"), 0n);
  assert.equal(parse("18446744073709551615"), 18446744073709551615n);
  for (const bad of ["-1", "18446744073709551616", "12x", "", "0x1", "1.0", " 1"]) {
    assertErrno(() => parse(bad), "EINVAL");
  }
});

// ---- wrong names and types -----------------------------------------------------------------

test("unknown property names are ENOENT for every accessor", () => {
  using b = Blkio.create("io_uring");
  for (
    const name of [
      "no-such-property",
      "num_queues",
      "NUM-QUEUES",
      "",
      "toString",
      "__proto__",
      "queue-size",
      "zoned",
    ]
  ) {
    for (
      const fn of [
        () => b.getBool(name),
        () => b.getInt(name),
        () => b.getUint64(name),
        () => b.getStr(name),
        () => b.setBool(name, true),
        () => b.setInt(name, 1),
        () => b.setUint64(name, 1n),
        () => b.setStr(name, "1"),
      ]
    ) {
      const e = assertErrno(fn, "ENOENT");
      if (name !== "") assert.ok(e.message.includes(name), e.message);
    }
  }
});

// A newcomer writes BlockDevice's option names or C identifiers (`readOnly`, `read_only`,
// `NUM_QUEUES`): the message said only 'Unknown property name "readOnly"' (new user's review).
test("an unknown name that is a property written another way names the property meant", () => {
  using b = Blkio.create("io_uring");
  const meant: [string, string][] = [
    ["readOnly", "read-only"],
    ["read_only", "read-only"],
    ["readonly", "read-only"],
    ["NUM_QUEUES", "num-queues"],
    ["numEntries", "num-entries"],
    ["Path", "path"],
  ];
  for (const [name, known] of meant) {
    for (const fn of [() => b.getBool(name), () => b.setInt(name, 1), () => b.setStr(name, "1")]) {
      const e = assertErrno(fn, "ENOENT");
      assert.ok(e.message.startsWith(`Unknown property name ${JSON.stringify(name)}`), e.message);
      assert.ok(e.message.endsWith(`did you mean "${known}"?)`), e.message);
    }
  }
  // No guess where nothing is close: libblkio's message as it was.
  for (const name of ["no-such-property", "zoned", "-", "num\nqueues"]) {
    assert.equal(
      assertErrno(() => b.getInt(name), "ENOENT").message,
      `Unknown property name ${JSON.stringify(name)}`,
    );
  }
});

test("non-string property names are EINVAL", () => {
  using b = Blkio.create("io_uring");
  for (const name of [undefined, null, 1, {}, ["num-queues"]]) {
    assertErrno(() => b.getInt(name as unknown as string), "EINVAL");
    assertErrno(() => b.setStr(name as unknown as string, "1"), "EINVAL");
  }
});

for (const state of STATES) {
  test(`typed access of the wrong type is ENOTTY in ${state} state`, () => {
    using b = instanceIn(TARGETS[0], state);
    for (const info of b.properties()) {
      for (const type of ["bool", "int", "uint64"] as const) {
        if (type === info.type) continue;
        const e = assertErrno(() => b[GETTER[type]!](info.name), "ENOTTY");
        assert.ok(e.message.includes(info.name), e.message);
        assertErrno(() => typedSet(b, type, info.name, SAMPLE[type]), "ENOTTY");
      }
      if (info.type !== "str") {
        // setStr works on every property; only a typed setter of the wrong type is ENOTTY. Text
        // that does not parse is EINVAL before access is checked (libblkio parses first).
        assertErrno(() => b.setStr(info.name, "x"), "EINVAL");
        if (!info.writable) {
          assertErrno(
            () => b.setStr(info.name, info.type === "bool" ? "true" : "1"),
            expectedSetError(info, state),
          );
        }
      }
    }
    // The two str properties have no typed accessor at all.
    assertErrno(() => b.getInt("path"), "ENOTTY", /path/);
    assertErrno(() => b.getBool("driver"), "ENOTTY", /driver/);
  });
}

// `getInt("capacity")` said the type (uint64) but not the method that reads it (new-user review).
test("typed access of the wrong type names the getter or setter of the property's type", () => {
  using b = instanceIn(TARGETS[0], "connected");
  for (const info of b.properties()) {
    const getter = GETTER[info.type] ?? "getStr";
    for (const type of ["bool", "int", "uint64"] as const) {
      if (type === info.type) continue;
      const got = assertErrno(() => b[GETTER[type]!](info.name), "ENOTTY").message;
      assert.ok(got.includes(`(read it with ${getter}`), got);
      const set = assertErrno(() => typedSet(b, type, info.name, SAMPLE[type]), "ENOTTY").message;
      if (info.settableIn.length === 0) {
        assert.ok(set.endsWith(`, and it is read-only (read it with ${getter})`), set);
      } else {
        assert.ok(set.includes(`(set it with ${SETTER[info.type]}`), set);
      }
    }
    // The method named works (the property is readable once connected).
    assert.doesNotThrow(() => b[getter](info.name), info.name);
  }
  assert.equal(
    assertErrno(() => b.getInt("capacity"), "ENOTTY").message,
    'Property "capacity" is not an int: its type is uint64 (read it with getUint64, or as text with getStr)',
  );
  assert.equal(
    assertErrno(() => b.setUint64("num-entries", 64n), "ENOTTY").message,
    'Property "num-entries" is not a uint64: its type is int (set it with setInt, or from text with setStr)',
  );
  assert.equal(
    assertErrno(() => b.setBool("path", true), "ENOTTY").message,
    'Property "path" is not a bool: its type is str (set it with setStr)',
  );
  assert.equal(
    assertErrno(() => b.setInt("capacity", 1), "ENOTTY").message,
    'Property "capacity" is not an int: its type is uint64, and it is read-only (read it with getUint64)',
  );
});

test("wrong JS value types are EINVAL, not TypeError, once name, type and access are right", () => {
  using b = instanceIn(TARGETS[0], "connected");
  using c = Blkio.create("io_uring"); // created: where direct and path can be set
  const cases: [string, () => unknown][] = [
    ['setInt("num-queues", "2")', () => b.setInt("num-queues", "2" as unknown as number)],
    ['setInt("num-queues", 1.5)', () => b.setInt("num-queues", 1.5)],
    ['setInt("num-queues", NaN)', () => b.setInt("num-queues", NaN)],
    ['setInt("num-queues", Infinity)', () => b.setInt("num-queues", Infinity)],
    ['setInt("num-queues", 2 ** 31)', () => b.setInt("num-queues", 2 ** 31)],
    ['setInt("num-queues", -(2 ** 31) - 1)', () => b.setInt("num-queues", -(2 ** 31) - 1)],
    ['setInt("num-queues", 2n)', () => b.setInt("num-queues", 2n as unknown as number)],
    ['setInt("num-queues")', () => (b.setInt as (n: string) => void)("num-queues")],
    ['setBool("direct", 1)', () => c.setBool("direct", 1 as unknown as boolean)],
    ['setBool("direct", "true")', () => c.setBool("direct", "true" as unknown as boolean)],
    ['setBool("direct", null)', () => c.setBool("direct", null as unknown as boolean)],
    ['setStr("path", 5)', () => c.setStr("path", 5 as unknown as string)],
    ['setStr("path", "a\\0b")', () => c.setStr("path", "a\0b")],
  ];
  for (const [what, fn] of cases) {
    try {
      fn();
      assert.fail(`${what} did not throw`);
    } catch (e) {
      assert.ok(e instanceof BlkioError, `${what}: ${e}`);
      assert.equal(e.code, "EINVAL", `${what}: ${e.code} ${e.message}`);
    }
  }
  assert.equal(b.getInt("num-queues"), 1);
  // No uint64 property is writable: what setUint64 would take is checked by checkUint64.
  for (const bad of [-1, -1n, 2n ** 64n, 1.5, 2 ** 53, NaN, "1", null]) {
    assert.throws(
      () => checkUint64("x", bad),
      (e: unknown) =>
        e instanceof BlkioError && e.code === "EINVAL" && /unsigned 64-bit integer/.test(e.message),
      String(bad),
    );
  }
  assert.equal(checkUint64("x", 2 ** 53 - 1), 2n ** 53n - 1n);
  assert.equal(checkUint64("x", 2n ** 64n - 1n), 2n ** 64n - 1n);
  // The largest values that are valid still work.
  b.setInt("num-queues", 2);
  b.setInt("num-entries", 2 ** 31 - 1);
  assert.equal(b.getInt("num-entries"), 2147483647);
});

// libblkio checks the name, then the type, then whether the property can be set now, and only
// then the value: a typo or a read-only property is what the caller hears about. The value's JS
// type used to be checked first (setInt("no-such", 1.5) was EINVAL, not ENOENT).
test("setters check name, type and access before the value, as libblkio does", () => {
  using b = instanceIn(TARGETS[0], "connected");
  const cases: [string, () => unknown, string][] = [
    ['setInt("no-such", 1.5)', () => b.setInt("no-such", 1.5), "ENOENT"],
    ['setBool("no-such", "x")', () => b.setBool("no-such", "x" as unknown as boolean), "ENOENT"],
    ['setStr("no-such", 5)', () => b.setStr("no-such", 5 as unknown as string), "ENOENT"],
    ['setBool("fd", "x")', () => b.setBool("fd", "x" as unknown as boolean), "ENOTTY"],
    ['setUint64("num-entries", -1)', () => b.setUint64("num-entries", -1), "ENOTTY"],
    ['setUint64("capacity", -1n)', () => b.setUint64("capacity", -1n), "EACCES"],
    ['setInt("max-queues", 1.5)', () => b.setInt("max-queues", 1.5), "EACCES"],
    ['setStr("capacity", 5)', () => b.setStr("capacity", 5 as unknown as string), "EACCES"],
    ['setBool("direct", "x") when connected', () => b.setBool("direct", "x" as unknown as boolean), "EBUSY"],
    ['setStr("path", 5) when connected', () => b.setStr("path", 5 as unknown as string), "EBUSY"],
  ];
  using c = Blkio.create("io_uring");
  cases.push(['setInt("num-queues", 1.5) before connect', () => c.setInt("num-queues", 1.5), "ENODEV"]);
  for (const [what, fn, code] of cases) {
    assert.throws(fn, (e: unknown) => e instanceof BlkioError && e.code === code, `${what}: ${code}`);
  }
});

// libblkio's blkio_set_str parses the text for the property's type (Property::set_str) before it
// calls the property's setter, which is where read-only properties and the state are checked:
// text that is not a value of the type is EINVAL whatever the property's access.
test("setStr: text that does not parse is EINVAL before access and state are checked, as libblkio", () => {
  using c = Blkio.create("io_uring");
  using b = instanceIn(TARGETS[0], "connected");
  const cases: [string, () => unknown, string][] = [
    ['setStr("capacity", "x") (read-only uint64)', () => b.setStr("capacity", "x"), "EINVAL"],
    ['setStr("can-grow", "yes") (read-only bool)', () => b.setStr("can-grow", "yes"), "EINVAL"],
    ['setStr("max-queues", "1.5") (read-only int)', () => c.setStr("max-queues", "1.5"), "EINVAL"],
    ['setStr("num-queues", "x") before connect', () => c.setStr("num-queues", "x"), "EINVAL"],
    ['setStr("direct", "yes") when connected', () => b.setStr("direct", "yes"), "EINVAL"],
    ['setStr("fd", "2147483648") when connected', () => b.setStr("fd", "2147483648"), "EINVAL"],
    // Text that parses: access and state decide, as before.
    ['setStr("capacity", "4096")', () => b.setStr("capacity", "4096"), "EACCES"],
    ['setStr("num-queues", "2") before connect', () => c.setStr("num-queues", "2"), "ENODEV"],
    ['setStr("direct", "true") when connected', () => b.setStr("direct", "true"), "EBUSY"],
  ];
  for (const [what, fn, code] of cases) {
    assert.throws(fn, (e: unknown) => e instanceof BlkioError && e.code === code, `${what}: ${code}`);
  }
  assert.equal(b.getBool("direct"), TARGETS[0].direct);
});

test("capacity: exact for files of 2^53 bytes and more (sparse files on tmpfs)", () => {
  // lseek's 64-bit result used to pass through a JS number: 2^53 + 1 read as 2^53, and
  // 2^63 - 1 as 2^63, not even a valid off_t.
  const dir = mkdtempSync(join("/dev/shm", "blkio-capacity-"));
  const path = join(dir, "sparse.img");
  const fd = openSync(path, "w");
  try {
    for (const size of [2n ** 53n + 1n, 2n ** 63n - 1n]) {
      // node:fs takes a size as a JS number: set the exact one with libc.
      assert.equal(native!.libc.ftruncate(fd, size), 0);
      using b = Blkio.create("io_uring");
      b.setStr("path", path);
      b.connect();
      assert.equal(b.getUint64("capacity"), size);
      assert.equal(b.getStr("capacity"), String(size));
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("properties: cleanup scratch targets", () => cleanupAll());
