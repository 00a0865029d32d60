/** Kv doubles for commit-order tests. */
import type { Kv } from '../../node/kv.js';
import { TallyError } from '../../protocol/errors.js';

/**
 * Makes `kv`'s first write wait, once its entries are in the batch, until `release()`, and its
 * second fail at once (a full disk met meanwhile): the second commit is made, and fails, while the
 * first is still being written. `writes()` counts the writes asked; `restore()` puts `write` back.
 */
export function holdFirstFailSecond(kv: Kv): { release: () => void; writes: () => number; restore: () => void } {
  const own = Object.prototype.hasOwnProperty.call(kv, 'write');
  const write = kv.write.bind(kv);
  let release = (): void => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  let writes = 0;
  kv.write = async (ops, sync, last) => {
    writes++;
    if (writes === 2) throw new TallyError('STORAGE_FULL', 'the disk is full');
    if (writes !== 1 || last === undefined) return write(ops, sync, last);
    return write(ops, sync, async () => {
      const tail = await last();
      await held;
      return tail;
    });
  };
  return {
    release,
    writes: () => writes,
    restore: () => {
      if (!own) delete (kv as { write?: unknown }).write;
    },
  };
}
