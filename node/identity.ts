/**
 * The node's identity, kept in its data directory: the node id and the actor epoch.
 *
 * The actor (`${id}#${epoch}`) owns this node's slot in every G-counter. The epoch is random and
 * made once, when the directory is created: a node whose disk is wiped comes back as a new actor,
 * so its fresh slot (starting again at 0) can never be masked by its old one on other replicas
 * (Riak's kv679). A directory refuses to open under another id, so two nodes can never share a
 * slot by mistake.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, MAX_NAME_BYTES, TallyError, checkName } from '../protocol/index.js';

export const IDENTITY_FILE = 'tally-node.json';
const IDENTITY_FORMAT = 1;

export interface Identity {
  id: string;
  /** Random hex made when the data directory was created. */
  epoch: string;
  /** `${id}#${epoch}`: the owner of this node's G-counter slots. */
  actor: string;
  createdAtMs: number;
}

export function actorOf(id: string, epoch: string): string {
  return `${id}#${epoch}`;
}

/** A default node id for a directory that has none yet and no --id was given. */
export function randomNodeId(): string {
  return `node-${randomBytes(3).toString('hex')}`;
}

/**
 * Opens (or creates) the identity of `dataDir`. With `wantedId`, an existing directory must have
 * been created with that id; without it, the stored id is used (or a random one for a new directory).
 */
export async function openIdentity(dataDir: string, wantedId: string | undefined, nowMs: number): Promise<Identity> {
  if (wantedId !== undefined) checkName(wantedId, '--id', MAX_NAME_BYTES);
  await mkdir(dataDir, { recursive: true });
  const path = join(dataDir, IDENTITY_FILE);
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text !== undefined) {
    const stored = parseIdentity(text, path);
    if (wantedId !== undefined && wantedId !== stored.id) {
      throw new TallyError(
        ErrorCode.BAD_REQUEST,
        `data directory ${dataDir} belongs to node "${stored.id}", refusing to start it as "${wantedId}"; ` +
          `start with --id ${stored.id}, or give this node its own --data directory`,
      );
    }
    return stored;
  }
  const id = wantedId ?? randomNodeId();
  const epoch = randomBytes(4).toString('hex');
  const identity: Identity = { id, epoch, actor: actorOf(id, epoch), createdAtMs: nowMs };
  // Write then rename, so a crash never leaves a half-written identity behind.
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify({ format: IDENTITY_FORMAT, id, epoch, createdAtMs: nowMs }, null, 2) + '\n', {
    flush: true,
  });
  await rename(tmp, path);
  return identity;
}

function parseIdentity(text: string, path: string): Identity {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new TallyError(ErrorCode.INTERNAL, `${path} is not valid JSON; the data directory is damaged`);
  }
  const r = o as Record<string, unknown>;
  if (
    typeof o !== 'object' ||
    o === null ||
    r.format !== IDENTITY_FORMAT ||
    typeof r.id !== 'string' ||
    typeof r.epoch !== 'string' ||
    typeof r.createdAtMs !== 'number'
  ) {
    throw new TallyError(ErrorCode.INTERNAL, `${path} does not hold a Tally node identity (format ${IDENTITY_FORMAT})`);
  }
  return { id: r.id, epoch: r.epoch, actor: actorOf(r.id, r.epoch), createdAtMs: r.createdAtMs };
}
