/**
 * The published package, as a user gets it: `npm pack` of the built tree, unpacked into a
 * temporary project's node_modules. It must hold the client, the protocol and the CLI and nothing
 * else (no tests, sources, CI files or source maps); `import 'tally'` must load the client and the
 * protocol only, never LevelDB, yargs or the node; and its types must compile in a project without
 * Node.js typings. Offline: the project's dependencies are links to this repository's
 * node_modules, and nothing is downloaded. Runs against `dist/` as built (`npm test` builds first).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/node-process.js';

const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
/** Modules of the node and the CLI that the client entry must never load. */
const HEAVY_PACKAGES = ['level', 'classic-level', 'abstract-level', 'yargs', 'yargs-parser'];

let dir: string;
/** The consumer project; the package is unpacked into its node_modules/tally. */
let project: string;
let pkgDir: string;
/** Paths in the tarball, relative to the package root. */
let packed: string[];

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Every file a module reaches through relative imports, static or dynamic, itself included. */
function relativeImportClosure(entry: string): string[] {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*)['"](\.\.?\/[^'"]+)['"]/g)) {
      todo.push(resolve(dirname(file), m[1] as string));
    }
  }
  return [...seen];
}

beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist/client/index.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  dir = await mkdtemp(join(tmpdir(), 'tally-package-test-'));
  const pack = run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], ROOT);
  expect(pack.code, pack.err).toBe(0);
  const [info] = JSON.parse(pack.out) as { filename: string; files: { path: string }[] }[];
  packed = info!.files.map((f) => f.path).sort();

  project = join(dir, 'consumer');
  pkgDir = join(project, 'node_modules/tally');
  await mkdir(pkgDir, { recursive: true });
  const untar = run('tar', ['-xzf', join(dir, info!.filename), '-C', pkgDir, '--strip-components=1'], dir);
  expect(untar.code, untar.err).toBe(0);
  // What `npm install` would put beside it: the runtime dependencies, and no @types at all.
  const deps = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);
  for (const name of deps) {
    await mkdir(dirname(join(project, 'node_modules', name)), { recursive: true });
    await symlink(join(ROOT, 'node_modules', name), join(project, 'node_modules', name), 'dir');
  }
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  project = realpathSync(project);
  pkgDir = realpathSync(pkgDir);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the tally package', () => {
  it('holds the client, the protocol and the CLI, and no tests, sources, maps or CI files', () => {
    for (const f of ['package.json', 'README.md', 'dist/client/index.js', 'dist/client/index.d.ts', 'dist/client/tally-client.d.ts', 'dist/protocol/errors.d.ts', 'dist/protocol/messages.d.ts', 'dist/scripts/cli.js']) {
      expect(packed).toContain(f);
    }
    const unwanted = packed.filter(
      (f) =>
        /^(test|scripts|client|protocol|cluster|node|\.ci|\.github)\//.test(f) ||
        /\.test\./.test(f) ||
        /(?<!\.d)\.ts$/.test(f) ||
        /\.map$/.test(f) ||
        /^(tsconfig|vitest)/.test(f) ||
        /^dist\/(test|scripts\/(?!cli\.js$|chaos\.js$|chaos-net\.js$|chaos-check\.js$))/.test(f),
    );
    expect(unwanted).toEqual([]);
    // Every module the CLI can reach, the node and the dynamically imported commands included.
    const reached = relativeImportClosure(join(ROOT, 'dist/scripts/cli.js')).map((f) => relative(ROOT, f).split(sep).join('/'));
    expect(reached).toContain('dist/node/main.js');
    expect(reached.filter((f) => !packed.includes(f))).toEqual([]);
    const bin = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
    expect(packed).toContain(bin['tally']);
  });

  it('runs its CLI, and the modules the CLI imports when a command runs resolve', () => {
    const help = run(process.execPath, [join(pkgDir, 'dist/scripts/cli.js'), '--help'], project);
    expect(help.code, help.err).toBe(0);
    expect(help.out).toMatch(/tally start/);
    const lazy = ['dist/node/main.js', 'dist/client/local-cluster.js', 'dist/client/bench.js', 'dist/scripts/chaos.js'];
    const script = `for (const f of ${JSON.stringify(lazy.map((f) => join(pkgDir, f)))}) await import(f);`;
    const imported = run(process.execPath, ['--input-type=module', '-e', script], project);
    expect(imported.code, imported.err).toBe(0);
  });

  it('loads the client and the protocol only on import, never LevelDB, yargs or the node', async () => {
    const log = join(dir, 'resolved.log');
    await writeFile(log, '');
    // A resolve hook records every ES module the import resolves; CommonJS ones are in require.cache.
    await writeFile(
      join(project, 'record-hooks.mjs'),
      `import { appendFileSync } from 'node:fs';
let log;
export function initialize(data) { log = data.log; }
export async function resolve(specifier, context, nextResolve) {
  const r = await nextResolve(specifier, context);
  appendFileSync(log, r.url + '\\n');
  return r;
}
`,
    );
    await writeFile(
      join(project, 'record.mjs'),
      `import { register } from 'node:module';
register('./record-hooks.mjs', import.meta.url, { data: { log: process.env.TALLY_MODULE_LOG } });
`,
    );
    await writeFile(
      join(project, 'main.mjs'),
      `import { createRequire } from 'node:module';
const tally = await import('tally');
console.log(JSON.stringify({
  exports: Object.keys(tally).sort(),
  connect: typeof tally.TallyClient.connect,
  deep: await import('tally/dist/client/bench.js').then(() => 'loaded', (err) => err.code),
  cjs: Object.keys(createRequire(import.meta.url).cache),
}));
`,
    );
    const r = run(process.execPath, ['--import', './record.mjs', './main.mjs'], project, { ...process.env, TALLY_MODULE_LOG: log });
    expect(r.code, r.err).toBe(0);
    const result = JSON.parse(r.out) as { exports: string[]; connect: string; deep: string; cjs: string[] };
    expect(result.exports).toEqual(expect.arrayContaining(['Consistency', 'ErrorCode', 'TallyClient', 'TallyError', 'VIEW']));
    expect(result.connect).toBe('function');
    expect(result.deep).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');

    const esm = readFileSync(log, 'utf8').split('\n').filter((u) => u.startsWith('file:')).map((u) => fileURLToPath(u));
    const loaded = [...new Set([...esm, ...result.cjs])].map((f) => realpathSync(f).split(sep).join('/'));
    // The record is complete enough to trust: the client's own dependencies are in it.
    for (const name of ['ws', 'msgpackr', 'xxhash-wasm']) {
      expect(loaded.some((f) => f.includes(`/node_modules/${name}/`)), name).toBe(true);
    }
    const heavy = loaded.filter((f) => HEAVY_PACKAGES.some((name) => f.includes(`/node_modules/${name}/`)));
    expect(heavy).toEqual([]);
    const root = pkgDir.split(sep).join('/') + '/';
    const own = loaded.filter((f) => f.startsWith(root)).map((f) => f.slice(root.length));
    expect(own).toContain('dist/client/index.js');
    const outside = own.filter(
      (f) =>
        !/^dist\/(client|protocol)\//.test(f) ||
        /^dist\/client\/(bench|local-cluster|status-format)\.js$/.test(f) ||
        /^dist\/protocol\/(peer|peer-auth|gossip|status)\.js$/.test(f),
    );
    expect(outside).toEqual([]);
  });

  it('has types that compile in a project without Node.js typings', async () => {
    const empty = join(project, 'no-types');
    await mkdir(empty);
    const compilerOptions = {
      target: 'ES2022',
      lib: ['ES2022'],
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      types: [],
      typeRoots: [empty],
      strict: true,
      skipLibCheck: false,
      noEmit: true,
    };
    await writeFile(join(project, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['consumer.ts'] }));
    await writeFile(
      join(project, 'consumer.ts'),
      `import { Consistency, ErrorCode, TallyClient, TallyError, VIEW, type ClientOptions, type EventInput, type EventStats, type ReadOptions, type RepairSummary } from 'tally';

export async function report(videoId: string): Promise<string> {
  const options: ClientOptions = { nodes: ['127.0.0.1:7401'], consistency: Consistency.QUORUM, routing: 'ring' };
  const tally = await TallyClient.connect(options);
  try {
    const events: EventInput[] = [{ videoId, eventType: VIEW, timestamp: new Date() }, { videoId, count: 3 }];
    await tally.processEvents(events, { consistency: 'all' });
    const read: ReadOptions = { consistency: Consistency.ONE, clip: true };
    const views: number = await tally.getViewsCount(videoId, 0, Date.now(), read);
    const stats: EventStats = await tally.getStats(videoId, 'watch_ms', 0, Date.now());
    const replicas: string[] = tally.replicasOf(videoId).map((r) => r.address);
    const repaired: RepairSummary = await tally.repair(replicas[0] ?? '127.0.0.1:7401');
    return \`\${views} \${stats.avg ?? '-'} \${Object.keys(repaired).length}\`;
  } catch (err) {
    if (err instanceof TallyError && err.code === ErrorCode.TIMEOUT) return 'unknown';
    throw err;
  } finally {
    await tally.close();
  }
}
`,
    );
    const ok = run(process.execPath, [TSC, '-p', project], project);
    expect(ok.out + ok.err).toBe('');
    expect(ok.code).toBe(0);

    // The same project does lack Node.js typings: code that uses them does not compile there.
    await writeFile(join(project, 'tsconfig.node.json'), JSON.stringify({ compilerOptions, files: ['uses-node.ts'] }));
    await writeFile(join(project, 'uses-node.ts'), `export const args: string[] = process.argv;\n`);
    const node = run(process.execPath, [TSC, '-p', join(project, 'tsconfig.node.json')], project);
    expect(node.code).not.toBe(0);
    expect(node.out).toMatch(/Cannot find name 'process'/);
  });
});
