/** The line reads and scans wait in: first in, first out, across the cuts that keep it short. */
import { expect, test } from 'vitest';
import { Fifo } from '../../node/fifo.js';

test('gives items back in the order pushed, across cuts of its array, and drains what is left', () => {
  const line = new Fifo<number>();
  expect(line.shift()).toBeUndefined();
  const out: number[] = [];
  let next = 0;
  // Pushed faster than taken, then taken faster than pushed: the head passes 1,024 with most of the array behind it.
  for (let round = 0; round < 3_000; round++) {
    line.push(next++);
    if (round % 3 !== 0) line.push(next++);
    out.push(line.shift() as number);
    if (round > 2_000) out.push(line.shift() as number);
  }
  expect(line.size).toBe(next - out.length);
  out.push(...line.drain());
  expect(out).toEqual(Array.from({ length: next }, (_, i) => i));
  expect(line.size).toBe(0);
  expect(line.shift()).toBeUndefined();
});
