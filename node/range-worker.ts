/**
 * The read thread (see node/range-reader.ts): reads a read's key ranges on its own handle to the
 * node's LevelDB, and answers each request once, its values end to end in one transferred buffer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Level } from 'level';
import { readRange } from './level-range.js';
import { failureOf, type FromRangeWorker, type RangeWorkerData, type ToRangeWorker } from './range-reader.js';

const port = parentPort;
if (port === null) throw new Error('range-worker runs as a worker thread');
const { location } = workerData as RangeWorkerData;

function post(m: FromRangeWorker, transfer: ArrayBuffer[] = []): void {
  (port as NonNullable<typeof parentPort>).postMessage(m, transfer);
}

/** The store is closing: reads asked since fail, and those it ends say so. */
let closing = false;

// The node's handle opened the database first, with its options; this one shares it.
const db = new Level<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' });

async function read(id: number, ranges: Extract<ToRangeWorker, { t: 'read' }>['ranges']): Promise<void> {
  try {
    const got = await Promise.all(ranges.map((r) => readRange(db, r, undefined, r.expected)));
    let total = 0;
    let n = 0;
    for (const entries of got) {
      n += entries.length;
      for (const e of entries) total += e[1].byteLength;
    }
    const bytes = new Uint8Array(total);
    const ends = new Uint32Array(n);
    const keys: string[][] = new Array(got.length);
    let at = 0;
    let v = 0;
    for (let r = 0; r < got.length; r++) {
      const entries = got[r] as [string, Uint8Array][];
      const k: string[] = new Array(entries.length);
      for (let j = 0; j < entries.length; j++) {
        const [key, value] = entries[j] as [string, Uint8Array];
        k[j] = key;
        bytes.set(value, at);
        at += value.byteLength;
        ends[v++] = at;
      }
      keys[r] = k;
    }
    post({ t: 'read', id, keys, bytes: bytes.buffer, ends }, [bytes.buffer, ends.buffer]);
  } catch (err) {
    // A read the store's closing ended is no fault of the store.
    post({ t: 'readFailed', id, error: closing ? { ...failureOf(err), closing: true } : failureOf(err) });
  }
}

port.on('message', (m: ToRangeWorker) => {
  if (m.t === 'read') {
    if (closing) post({ t: 'readFailed', id: m.id, error: { message: 'the store is closing', closing: true } });
    else void read(m.id, m.ranges);
    return;
  }
  closing = true;
  // Reads under way fail (abstract-level closes their iterators; a read then fails at its next
  // step), and the reader takes their failures as the store closing.
  void db.close().finally(() => {
    post({ t: 'closed' });
    port.close();
  });
});

db.open({ createIfMissing: false, multithreading: true }).then(
  () => post({ t: 'open' }),
  (err: unknown) => post({ t: 'openFailed', error: failureOf(err) }),
);
