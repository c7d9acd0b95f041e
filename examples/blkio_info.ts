/**
 * blkio_info — show information about a block device, as libblkio's `blkio-info`.
 *
 *   blkio_info [--output=text|json] <driver> <property>[=<value>] ...
 *
 * Creates an instance of `<driver>` and handles the property arguments from left to right:
 * `name=value` assigns (in the created state until the first query), a bare `name` connects on
 * the first query and prints the value. Text output is one value per line in argument order;
 * JSON output is one object with a member per queried property, typed (bool, number, string).
 *
 *   $ deno run -A examples/blkio_info.ts io_uring path=disk.img capacity
 *   2097152
 *
 * Differences from libblkio 1.5, all bug fixes: the JSON is valid (members are
 * comma-separated, strings are escaped), uint64 values print unsigned (`max-mem-regions` is
 * 18446744073709551615, not -1), and property types come from `b.properties()` instead of
 * trying each typed getter in turn. `--help` exits 0 (libblkio's exits 1, as after a mistake;
 * its blkio-bench exits 0), and after a usage error the usage goes to stderr (libblkio's to
 * stdout).
 *
 * @module
 */
import { Blkio, type PropertyInfo, type PropertyType } from "../mod.ts";
import {
  commandArgs,
  die,
  errnoAndMsg,
  exit,
  getoptLong,
  handlePropertyOption,
  printErr,
  printOut,
} from "./_cli.ts";

const PROG = "blkio_info";

/**
 * Prints the usage and exits: on stdout with 0 for `--help`; after a usage error on stderr, beside
 * the message (stdout may be a pipe into another program), with status 1 as in libblkio.
 */
function usage(status = 1): never {
  (status === 0 ? printOut : printErr)(
    `Usage: ${PROG} [--output=text|json] <driver> <property>[=<value>] ...\n` +
      "Show information about a libblkio block device. This is done by\n" +
      "assigning and querying the given blkio properties.\n\n" +
      "  --output=text       print text output\n" +
      "  --output=json       print JSON output\n",
  );
  exit(status);
}

type Value = boolean | number | bigint | string;

/** Reads `name` with the getter of its type; exits with libblkio's message on failure. */
function query(b: Blkio, types: Map<string, PropertyType>, name: string): Value {
  try {
    switch (types.get(name)) {
      case "bool":
        return b.getBool(name);
      case "int":
        return b.getInt(name);
      case "uint64":
        return b.getUint64(name);
      default:
        // str, or a name the driver does not have (getStr reports ENOENT for it).
        return b.getStr(name);
    }
  } catch (e) {
    die(`Failed to query "${name}" property: ${errnoAndMsg(e)}`);
  }
}

/** A JSON literal for `value`; a bigint is written as the exact decimal number. */
function jsonValue(value: Value): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function main(argv: string[]): void {
  let json = false;
  const rest: string[] = [];
  const spec = {
    progname: PROG,
    long: [{ name: "help", hasArg: false }, { name: "output", hasArg: true }],
    short: { h: "help" },
    inOrder: false,
  };
  for (const ev of getoptLong(argv, spec, rest)) {
    if (ev.kind === "error") {
      printErr(`${ev.message}\n`);
      usage();
    }
    if (ev.kind !== "option") continue;
    if (ev.name === "help") usage(0);
    if (ev.value === "text") json = false;
    else if (ev.value === "json") json = true;
    else {
      printErr(`Invalid output format "${ev.value}"\n\n`);
      usage();
    }
  }

  if (rest.length === 0) {
    printErr("Missing driver name.\n\n");
    usage();
  }
  const driver = rest[0];
  if (rest.length === 1) {
    printErr("No properties specified!\n\n");
    usage();
  }

  let b: Blkio;
  try {
    b = Blkio.create(driver);
  } catch (e) {
    die(`blkio_create: ${errnoAndMsg(e)}`);
  }

  let types: Map<string, PropertyType> | null = null;
  const members: string[] = [];
  for (const arg of rest.slice(1)) {
    if (arg.includes("=")) {
      handlePropertyOption(b, arg);
      continue;
    }
    if (types === null) {
      try {
        b.connect();
      } catch (e) {
        printErr(`Unable to connect: ${e instanceof Error ? e.message : String(e)}\n`);
        b.destroy();
        exit(1);
      }
      types = new Map(b.properties().map((p: PropertyInfo) => [p.name, p.type]));
    }
    const value = query(b, types, arg);
    if (json) members.push(`    ${JSON.stringify(arg)}: ${jsonValue(value)}`);
    else printOut(`${String(value)}\n`);
  }
  if (json) printOut(members.length > 0 ? `{\n${members.join(",\n")}\n}\n` : "{\n}\n");
  b.destroy();
}

main(commandArgs());
