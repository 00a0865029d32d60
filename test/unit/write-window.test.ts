/**
 * A client's write window to one node: frames past it wait in order, a frame that finds no room in
 * time fails with OVERLOADED, refusals halve it once per round, acknowledgements grow it.
 */
import { describe, expect, it } from 'vitest';
import { WriteWindow } from '../../client/write-window.js';

const opts = { initial: 4_000, min: 1_000, max: 16_000, maxWaiting: 5_000 };
const settled = async (p: Promise<unknown>): Promise<string> => {
  let state = 'pending';
  p.then(
    () => (state = 'sent'),
    (e: { code: string }) => (state = e.code),
  );
  await new Promise((r) => setImmediate(r));
  return state;
};

describe('WriteWindow', () => {
  it('sends frames up to its size at once and the rest, in order, as answers make room', async () => {
    const w = new WriteWindow('n1', opts);
    const now = Date.now();
    const a = w.admit(2_000, now + 1_000, now);
    const b = w.admit(2_000, now + 1_000, now);
    const c = w.admit(2_000, now + 1_000, now);
    const d = w.admit(1_000, now + 1_000, now); // fits, but waits behind c
    expect([await settled(a), await settled(b), await settled(c), await settled(d)]).toEqual(['sent', 'sent', 'pending', 'pending']);
    expect(w.inFlight).toBe(4_000);
    w.done(2_000, 'other', now, now);
    expect([await settled(c), await settled(d)]).toEqual(['sent', 'pending']);
    w.done(2_000, 'other', now, now);
    expect(await settled(d)).toBe('sent');
    expect(w.inFlight).toBe(3_000);
    expect(w.size).toBe(4_000); // neither acknowledged nor refused: unchanged
  });

  it('always lets one frame go when none is in flight, however large', async () => {
    const w = new WriteWindow('n1', opts);
    const now = Date.now();
    expect(await settled(w.admit(10_000, now + 1_000, now))).toBe('sent');
  });

  it('fails a frame with OVERLOADED when no room comes in time, and one that would wait past maxWaiting at once', async () => {
    const w = new WriteWindow('n1', opts);
    const now = Date.now();
    await w.admit(4_000, now + 1_000, now);
    const late = w.admit(2_000, now + 30, now);
    const tooMany = w.admit(4_000, now + 1_000, now); // 2,000 + 4,000 would wait, more than 5,000
    expect(await settled(tooMany)).toBe('OVERLOADED');
    await expect(tooMany).rejects.toThrow(/n1 is busy: 4000 events are in flight to it .*2000 events already wait for room; nothing was applied/);
    expect(await settled(late)).toBe('pending');
    await expect(late).rejects.toMatchObject({ code: 'OVERLOADED', message: expect.stringMatching(/waited 30 ms for room/) });
    expect(w.waitingEvents).toBe(0);
    // What timed out is not sent later.
    w.done(4_000, 'ok', now, now);
    expect(w.inFlight).toBe(0);
  });

  it('takes a retry of a frame that may have been applied ahead of the queue, and never refuses it for its length', async () => {
    const w = new WriteWindow('n1', opts);
    const now = Date.now();
    await w.admit(4_000, now + 1_000, now);
    const fresh = w.admit(4_000, now + 1_000, now);
    const retry = w.admit(2_000, now + 1_000, now, true); // 4,000 + 2,000 wait: past maxWaiting (5,000), yet queued
    expect([await settled(fresh), await settled(retry)]).toEqual(['pending', 'pending']);
    w.done(4_000, 'other', now, now);
    expect([await settled(retry), await settled(fresh)]).toEqual(['sent', 'pending']);
    w.done(2_000, 'other', now, now);
    expect(await settled(fresh)).toBe('sent');
  });

  it('doubles each round until refused, then halves once per round of refusals and grows by a frame per window', () => {
    const w = new WriteWindow('n1', opts);
    w.inFlight = 100_000;
    w.done(4_000, 'ok', 0, 1);
    expect(w.size).toBe(8_000);
    w.done(8_000, 'ok', 0, 2);
    expect(w.size).toBe(16_000); // at its max
    w.done(2_000, 'overloaded', 5, 10);
    expect(w.size).toBe(8_000);
    // Refusals of frames sent before that cut are the same round: no further halving.
    w.done(2_000, 'overloaded', 9, 11);
    w.done(2_000, 'overloaded', 3, 12);
    expect(w.size).toBe(8_000);
    // A frame sent after it, refused: a new round.
    w.done(2_000, 'overloaded', 10, 13);
    expect(w.size).toBe(4_000);
    // Past the first refusal it grows by one min-sized frame per window's worth acknowledged.
    w.done(2_000, 'ok', 20, 21);
    w.done(2_000, 'ok', 20, 22);
    expect(w.size).toBeGreaterThan(4_900);
    expect(w.size).toBeLessThan(5_000);
    for (let i = 0; i < 10; i++) w.done(1_000, 'overloaded', 100 + 10 * i, 105 + 10 * i);
    expect(w.size).toBe(1_000); // never below min
  });

  it('fails what waits when closed', async () => {
    const w = new WriteWindow('n1', opts);
    const now = Date.now();
    await w.admit(4_000, now + 1_000, now);
    const waiting = w.admit(1_000, now + 1_000, now);
    w.close(Object.assign(new Error('closed'), { code: 'CONNECTION_CLOSED' }) as never);
    expect(await settled(waiting)).toBe('CONNECTION_CLOSED');
  });
});
