/**
 * Event-loop turns, as the adapters' waits count them. A wait that data already ends must not
 * resolve in the microtasks of the turn it was asked in (`Native.waitEventfd` in types.ts), yet some
 * do by themselves: Bun's stream read of a chunk it already holds, Deno's nonblocking poll of
 * an eventfd already signalled (both seen). A turn ends when a setImmediate runs: one is
 * scheduled per turn in which a wait is asked, none while the device is idle.
 *
 * @module
 */
let turn = 0;
let tick: unknown = null;

/** The number of the current turn, to give {@link sameTurn} later. */
export function currentTurn(): number {
  if (tick === null) tick = setImmediate(countTurn);
  return turn;
}

/** Whether the turn numbered `asked` ({@link currentTurn}) is still going on. */
export function sameTurn(asked: number): boolean {
  return turn === asked;
}

/** A Promise executor that resolves in a later turn (`new Promise<void>(nextTurn)`). */
export function nextTurn(resolve: () => void): void {
  setImmediate(resolve);
}

function countTurn(): void {
  tick = null;
  turn++;
}
