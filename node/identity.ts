/**
 * The node's identity: its id, kept in a small file of the data directory, and its actor epoch,
 * kept inside the database itself.
 *
 * The actor (`${id}#${epoch}`) owns this node's slot in every G-counter. The epoch is random and
 * made when the database is created, and lives in it: a node whose database is wiped (even with
 * the id file left in place) comes back as a new actor, so its fresh slot, starting again at 0,
 * can never be masked by its old one on other replicas (Riak's kv679). A directory refuses to open
 * under another id, so two nodes can never share a slot by mistake.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, MAX_NAME_BYTES, TallyError, checkName } from '../protocol/index.js';
import { describeRetention, sameRetention, shortenedRetention, validateRetention, type Retention } from '../cluster/retention.js';

export const IDENTITY_FILE = 'tally-node.json';
const IDENTITY_FORMAT = 1;

export interface Identity {
  id: string;
  /** Random hex made when the database was created. */
  epoch: string;
  /** `${id}#${epoch}`: the owner of this node's G-counter slots. */
  actor: string;
  /** The epoch was made now: the database is new (a new node, or one whose data was wiped). */
  fresh: boolean;
}

/** Meta key of the actor epoch in the store. */
export const EPOCH_KEY = 'actor-epoch';

/**
 * Meta key on a database made by a start that has not yet recorded what a new database needs (its
 * commit mark reset, its rebuild): put before the epoch, deleted by `settleNewDatabase`. A start
 * killed in between leaves it, and the next start takes the database as new again.
 */
export const NEW_DATABASE_KEY = 'new-database';

/** What `openActor` needs of a store: its small metadata values. */
export interface MetaStore {
  getMeta(key: string): Promise<Uint8Array | undefined>;
  putMeta(key: string, value: Uint8Array, opts?: { sync?: boolean }): Promise<void>;
  deleteMeta(key: string, opts?: { sync?: boolean }): Promise<void>;
}

export function actorOf(id: string, epoch: string): string {
  return `${id}#${epoch}`;
}

/** A default node id for a directory that has none yet and no --id was given. */
export function randomNodeId(): string {
  return `node-${randomBytes(3).toString('hex')}`;
}

/**
 * The node id of `dataDir`, and the actor epoch of the database it was last known to hold (absent
 * before its database was first made). With `wantedId`, an existing directory must have been
 * created with that id; without it, the stored id is used (or a random one for a new directory).
 * A new directory's id is written with its database's epoch (`recordDatabase`), once the database
 * was found to be the node's: a start refused before that leaves no identity behind.
 */
export async function openNodeId(dataDir: string, wantedId: string | undefined): Promise<{ id: string; database: string | undefined }> {
  if (wantedId !== undefined) checkName(wantedId, '--id', MAX_NAME_BYTES);
  await mkdir(dataDir, { recursive: true }).catch((err: unknown) => {
    throw dataDirError(err, dataDir);
  });
  const path = join(dataDir, IDENTITY_FILE);
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw dataDirError(err, dataDir);
  }
  if (text !== undefined) {
    const { id: stored, database } = parseIdentity(text, path);
    if (wantedId !== undefined && wantedId !== stored) {
      throw new TallyError(
        ErrorCode.BAD_REQUEST,
        `data directory ${dataDir} belongs to node "${stored}", refusing to start it as "${wantedId}"; ` +
          `start with --id ${stored}, or give this node its own --data directory`,
      );
    }
    return { id: stored, database };
  }
  return { id: wantedId ?? randomNodeId(), database: undefined };
}

/**
 * A data directory the node cannot make or read, in the user's words: these are mistakes in
 * `--data` (a file, a path through a file, no permission), not failures of the node.
 */
function dataDirError(err: unknown, dataDir: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const why =
    code === 'EEXIST' || code === 'ENOTDIR' || code === 'EISDIR' ? 'is a file (or lies under one), not a directory'
    : code === 'EACCES' || code === 'EPERM' ? 'cannot be made or read: permission denied'
    : code === 'EROFS' ? 'is on a read-only file system'
    : undefined;
  if (why === undefined) return err as Error;
  return new TallyError(ErrorCode.BAD_REQUEST, `data directory ${dataDir} ${why}; give --data a directory this user can write`, { cause: err });
}

/**
 * Records in the identity file (made now for a new directory) that `dataDir` is node `id`'s and
 * holds the database of actor epoch `epoch`, so a later start can tell a directory that lost its
 * database from one that never had one.
 */
export async function recordDatabase(dataDir: string, id: string, epoch: string, nowMs: number): Promise<void> {
  const path = join(dataDir, IDENTITY_FILE);
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  const o = text === undefined ? { format: IDENTITY_FORMAT, id, createdAtMs: nowMs } : (JSON.parse(text) as Record<string, unknown>);
  await writeIdentity(path, { ...o, database: epoch });
}

/** Write then rename (and sync), so a crash never leaves a half-written identity behind. */
async function writeIdentity(path: string, o: Record<string, unknown>): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify(o, null, 2) + '\n', { flush: true });
  await rename(tmp, path);
}

/**
 * The actor of node `id` on `store`: the store's epoch, made (and synced) if it has none yet —
 * unless `expected` names the epoch this directory's database had: then a store without one has
 * lost it, and is refused untouched (it is kept as it is, for whoever looks into it). `fresh` also
 * for a database made by a start killed before it called `settleNewDatabase`.
 */
export async function openActor(store: MetaStore, id: string, expected?: string): Promise<Identity> {
  const stored = await store.getMeta(EPOCH_KEY);
  let epoch = stored === undefined ? undefined : Buffer.from(stored).toString('utf8');
  const unsettled = (await store.getMeta(NEW_DATABASE_KEY)) !== undefined;
  if (epoch === undefined && expected !== undefined && !unsettled) {
    throw new TallyError(ErrorCode.STORAGE_DAMAGED, `the database has lost its actor epoch (it was ${expected}); refusing to start on it; if the data is gone for good, start with --rebuild`);
  }
  if (epoch === undefined || !/^[0-9a-f]{8,32}$/.test(epoch)) {
    if (epoch !== undefined) throw new TallyError(ErrorCode.INTERNAL, `the store's actor epoch is damaged: ${JSON.stringify(epoch)}`);
    // Marked new first: a start killed after the epoch is made, before it settles the database, would otherwise leave it looking old.
    if (!unsettled) await store.putMeta(NEW_DATABASE_KEY, Buffer.from('1'), { sync: true });
    epoch = randomBytes(4).toString('hex');
    await store.putMeta(EPOCH_KEY, Buffer.from(epoch), { sync: true });
  }
  return { id, epoch, actor: actorOf(id, epoch), fresh: stored === undefined || unsettled };
}

/** Meta key of the node id and cluster name a database was made for (JSON). */
export const OWNER_KEY = 'owner';

/**
 * Refuses a database made for another cluster or another node id: its slots would be sent to the
 * wrong replicas, or under a name that is not theirs, and it would not be rebuilt. The identity
 * file says the same of the directory, but a database can outlive it (the file lost, or `db/`
 * copied from another node's directory). A database from before this record is taken as the
 * node's and recorded.
 */
export async function checkOwner(store: MetaStore, id: string, cluster: string): Promise<void> {
  const stored = await store.getMeta(OWNER_KEY);
  if (stored === undefined) {
    await store.putMeta(OWNER_KEY, Buffer.from(JSON.stringify({ id, cluster })), { sync: true });
    return;
  }
  let owner: { id?: unknown; cluster?: unknown };
  try {
    owner = JSON.parse(Buffer.from(stored).toString('utf8')) as { id?: unknown; cluster?: unknown };
  } catch {
    throw new TallyError(ErrorCode.STORAGE_DAMAGED, `the database's record of its node and cluster is damaged; if the data is gone for good, start with --rebuild`);
  }
  if (typeof owner !== 'object' || owner === null || typeof owner.id !== 'string' || typeof owner.cluster !== 'string') {
    throw new TallyError(ErrorCode.STORAGE_DAMAGED, `the database's record of its node and cluster is damaged; if the data is gone for good, start with --rebuild`);
  }
  if (owner.cluster !== cluster) {
    throw new TallyError(
      ErrorCode.BAD_REQUEST,
      `the database in this data directory belongs to cluster "${owner.cluster}", refusing to start it in cluster "${cluster}"; start with --cluster ${owner.cluster}, or give this node its own --data directory`,
    );
  }
  if (owner.id !== id) {
    throw new TallyError(
      ErrorCode.BAD_REQUEST,
      `the database in this data directory belongs to node "${owner.id}", refusing to start it as "${id}"; start with --id ${owner.id}, or give this node its own --data directory`,
    );
  }
}

/** Meta key of the retention the database's data was last kept under (JSON: minuteDays, hourDays). */
export const RETENTION_KEY = 'retention';

/**
 * Refuses a start whose retention is shorter than the one the database was kept under, unless
 * `shorten` says it is meant: the node's first sweep would delete the days between the two, and
 * at RF 1 (or once every replica runs with it) they are gone for good. A slip of a flag or a
 * config file must not cost data. Records the retention it starts with; returns what a meant
 * shortening changed (to log), or nothing. A database from before this record takes the one given.
 */
export async function checkRetention(store: MetaStore, wanted: Retention, shorten: boolean): Promise<string[]> {
  const bytes = await store.getMeta(RETENTION_KEY);
  let stored: Retention | undefined;
  if (bytes !== undefined) {
    try {
      const o = JSON.parse(Buffer.from(bytes).toString('utf8')) as Retention;
      stored = validateRetention({ minuteDays: o.minuteDays, hourDays: o.hourDays });
    } catch {
      throw new TallyError(ErrorCode.STORAGE_DAMAGED, `the database's record of its retention is damaged; if the data is gone for good, start with --rebuild`);
    }
  }
  const shortened = stored === undefined ? [] : shortenedRetention(stored, wanted);
  if (stored !== undefined && shortened.length > 0 && !shorten) {
    throw new TallyError(
      ErrorCode.BAD_REQUEST,
      `this node's data is kept ${describeRetention(stored)}; starting with ${describeRetention(wanted)} would delete ${shortened.join(' and ')} of it at once ` +
        `(for good at RF 1, or once every replica runs with it); to keep it, start with --minute-retention-days ${stored.minuteDays} --hour-retention-days ${stored.hourDays} (every member alike); ` +
        `if it is meant (a cluster-wide change, or going back from a longer retention set by mistake, whose extra days are all it deletes), add --shorten-retention`,
    );
  }
  if (stored === undefined || !sameRetention(stored, wanted)) {
    await store.putMeta(RETENTION_KEY, Buffer.from(JSON.stringify({ minuteDays: wanted.minuteDays, hourDays: wanted.hourDays })), { sync: true });
  }
  return shortened;
}

/** A new database has what it needs recorded (see NEW_DATABASE_KEY): later starts take it as the node's own. */
export async function settleNewDatabase(store: MetaStore): Promise<void> {
  await store.deleteMeta(NEW_DATABASE_KEY, { sync: true });
}

function parseIdentity(text: string, path: string): { id: string; database: string | undefined } {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new TallyError(ErrorCode.STORAGE_DAMAGED, `${path} is not valid JSON; the data directory is damaged`);
  }
  const r = o as Record<string, unknown>;
  if (
    typeof o !== 'object' ||
    o === null ||
    r.format !== IDENTITY_FORMAT ||
    typeof r.id !== 'string'
  ) {
    throw new TallyError(ErrorCode.BAD_REQUEST, `${path} does not hold a Tally node identity (format ${IDENTITY_FORMAT}): is --data another program's directory?`);
  }
  return { id: r.id, database: typeof r.database === 'string' ? r.database : undefined };
}
