/**
 * The `tally` command and the node process as a user meets them, on real processes: help and
 * version, `error CODE: message` with its exit code for every failure (a port in use, a data
 * directory that is a file or in use, a bad number, an option given twice, a --node that is not
 * host:port, a --config file that cannot be read), times without a zone read as UTC, `tally
 * status` exiting 3 when degraded and `--watch` (ending quietly when its reader goes), options
 * from the environment and a config file with their precedence, JSON logs off a terminal, a
 * supervisor that stops its nodes when its parent goes, and a second node with a live node's id
 * refused on both sides.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statusOf } from '../../client/local-cluster.js';
import { Cluster } from '../helpers/cluster.js';
import { CLI, ROOT, refusedStart, removeDir, runCli, startNode, stopNode, tempDir, waitFor, type NodeProcess } from '../helpers/node-process.js';

/** A port free now, on loopback (never one of the fixed ports other tests use). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the tally command', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('tally-cli-');
  });
  afterAll(async () => {
    await removeDir(dir);
  });

  it('prints help for a bare `tally`, its version for --version, and refuses an unknown command with exit 2', async () => {
    const bare = await runCli([]);
    expect(bare.code).toBe(0);
    expect(bare.stdout).toMatch(/^tally <command> \[options\]/);
    expect(bare.stdout).toMatch(/tally start/);
    const pkg = JSON.parse(await readFile(`${ROOT}/package.json`, 'utf8')) as { version: string };
    const version = await runCli(['--version']);
    expect(version).toMatchObject({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error BAD_REQUEST: Unknown argument: frobnicate/);
    // A fault kind it does not know is refused before any node starts, not left in silently.
    const chaos = await runCli(['chaos', '--duration', '1', '--without', 'kill,frobnicate', '--no-netns']);
    expect(chaos.code).toBe(2);
    expect(chaos.stderr).toMatch(/error BAD_REQUEST: --without: no fault kind "frobnicate"; the kinds are kill, freeze, wipe, clock, isolate, one-way, split/);
  });

  it('names what a number option was given, never NaN, from a flag or the environment', async () => {
    const flag = await runCli(['count', 'v', '--n', 'five']);
    expect(flag).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --n must be a number, got "five"\n' });
    const env = await runCli(['start', '--data', `${dir}/never`], 20_000, { TALLY_PORT: 'http' });
    expect(env).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --port must be a number, got "http" (from TALLY_PORT)\n' });
    expect(existsSync(`${dir}/never`)).toBe(false);
  });

  it('names the retention flags a bad retention was given by, for `tally start` and `tally cluster`, before making anything', async () => {
    const cases: [string[], string][] = [
      [['--minute-retention-days', '-1'], '--minute-retention-days must be a whole number of days from 0 (for ever) to 36500, got -1'],
      [['--hour-retention-days', '1.5'], '--hour-retention-days must be a whole number of days from 0 (for ever) to 36500, got 1.5'],
      [['--minute-retention-days', '0'], '--minute-retention-days 0 keeps minutes for ever, and hours must then be kept for ever too: add --hour-retention-days 0'],
      [['--minute-retention-days', '30', '--hour-retention-days', '10'], '--hour-retention-days must be 0 (for ever) or at least --minute-retention-days (30), got 10'],
    ];
    for (const [flags, message] of cases) {
      for (const command of [['start', '--port', String(await freePort())], ['cluster', '--nodes', '1', '--base-port', String(await freePort())]]) {
        const r = await runCli([...command, '--data', `${dir}/ret`, ...flags]);
        expect(r, `${command[0]} ${flags.join(' ')}`).toMatchObject({ code: 2, stderr: `error BAD_REQUEST: ${message}\n` });
      }
    }
    expect(existsSync(`${dir}/ret`)).toBe(false);
  });

  it('refuses a `tally count --n` past a batch of the largest counts (10,000 events of 1,000,000) before building it', async () => {
    const r = await runCli(['count', 'v', '--n', '1e13', '--node', `127.0.0.1:${await freePort()}`]);
    expect(r).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --n must be an integer from 1 to 10000000000, got 10000000000000\n' });
  });

  it('refuses `tally bench` given both --node and --local, or a local cluster\'s option without --local', async () => {
    const both = await runCli(['bench', '--local', '1', '--base-port', String(await freePort()), '--node', '127.0.0.1:1', '--duration', '1', '--quiet']);
    expect(both).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --node names a cluster to load and --local starts one: give one of them\n' });
    for (const flag of [['--rf', '1'], ['--no-fsync'], ['--heap-mb', '256']]) {
      const r = await runCli(['bench', '--node', `127.0.0.1:${await freePort()}`, ...flag, '--duration', '1', '--quiet']);
      expect(r).toMatchObject({ code: 2, stderr: `error BAD_REQUEST: ${flag[0]} is for the cluster --local starts; a cluster named by --node keeps its own\n` });
    }
  });

  it('refuses an option given twice as bad usage, whatever its type', async () => {
    const node = await runCli(['get', 'v', '--node', '127.0.0.1:1', '--node', '127.0.0.1:2']);
    expect(node).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --node was given 2 times; give it once\n' });
    const data = await runCli(['start', '--data', `${dir}/twice-a`, '--data', `${dir}/twice-b`]);
    expect(data).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --data was given 2 times; give it once\n' });
    expect(existsSync(`${dir}/twice-a`) || existsSync(`${dir}/twice-b`)).toBe(false);
    const watch = await runCli(['status', '--watch', '1', '--watch', '2', '--node', '127.0.0.1:1']);
    expect(watch).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --watch was given 2 times; give it once\n' });
  });

  it('refuses a --node that is not host:port as bad usage (exit 2)', async () => {
    for (const command of [['get', 'v'], ['status'], ['repair']]) {
      const r = await runCli([...command, '--node', '7401']);
      expect(r).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: a node address must be host:port (IPv6 as [::1]:7401), got "7401"\n' });
    }
    // A list that names no node at all: nothing was repaired, so it may not read as done.
    for (const node of [',', ' ']) {
      const r = await runCli(['repair', '--node', node]);
      expect(r).toMatchObject({ code: 2, stdout: '', stderr: 'error BAD_REQUEST: --node names no node to repair: give host:port[,host:port…]\n' });
    }
    // The node that leaves is one node: a list's first was decommissioned and the rest dropped unsaid.
    const blank = await runCli(['removenode', '', '--node', '127.0.0.1:1']);
    expect(blank).toMatchObject({ code: 2, stdout: '', stderr: 'error BAD_REQUEST: name the member to take off the ring: tally removenode <id> (its id in tally status)\n' });
    const two = await runCli(['decommission', '--node', '127.0.0.1:1,127.0.0.1:2']);
    expect(two).toMatchObject({ code: 2, stdout: '', stderr: 'error BAD_REQUEST: --node names the one node that leaves, host:port; got "127.0.0.1:1,127.0.0.1:2": decommission them one at a time\n' });
  });

  it('refuses a port in use with IN_USE, before making the data directory, with no stack trace', async () => {
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as { port: number }).port;
    try {
      const out = await refusedStart(['--port', String(port), '--data', `${dir}/port`, '--rf', '1']);
      expect(out).toMatch(new RegExp(`error IN_USE: port 127\\.0\\.0\\.1:${port} is in use by another process`));
      expect(out).not.toMatch(/Unhandled|at .*\.js:\d+/);
      expect(existsSync(`${dir}/port`)).toBe(false);
    } finally {
      holder.close();
    }
  });

  it('refuses a data directory that is a file (BAD_REQUEST, exit 2) and one in use (IN_USE, exit 1)', async () => {
    await writeFile(`${dir}/a-file`, 'x');
    const file = await runCli(['start', '--port', '0', '--data', `${dir}/a-file`, '--rf', '1']);
    expect(file.code).toBe(2);
    expect(file.stderr).toBe(`error BAD_REQUEST: data directory ${dir}/a-file is a file (or lies under one), not a directory; give --data a directory this user can write\n`);
    const first = await startNode(['--port', '0', '--data', `${dir}/busy`, '--rf', '1']);
    try {
      const second = await runCli(['start', '--port', '0', '--data', `${dir}/busy`, '--rf', '1']);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(/^error IN_USE: the database in .*busy\/db is in use by another process/);
    } finally {
      await stopNode(first);
    }
  });

  it('says what it counted, reads a time without a zone as UTC whatever the local zone, and logs JSON off a terminal', async () => {
    const node = await startNode(['--port', '0', '--data', `${dir}/utc`, '--rf', '1', '--minute-retention-days', '0', '--hour-retention-days', '0']);
    try {
      const tz = { TZ: 'America/New_York' };
      const count = await runCli(['count', 'utc-video', '--n', '3', '--at', '2026-11-02T10:00', '--node', node.address], 20_000, tz);
      expect(count).toMatchObject({ code: 0, stderr: '', stdout: 'counted 3 view events of utc-video at 2026-11-02T10:00:00.000Z (quorum)\n' });
      const get = (from: string, to: string) => runCli(['get', 'utc-video', '--from', from, '--to', to, '--node', node.address], 20_000, tz);
      expect((await get('2026-11-02T10:00Z', '2026-11-02T10:01Z')).stdout).toBe('3\n');
      expect((await get('2026-11-02T10:00', '2026-11-02T10:01')).stdout).toBe('3\n');
      expect((await get('2026-11-02T10:00-05:00', '2026-11-02T10:01-05:00')).stdout).toBe('0\n');
      const bad = await get('yesterday', '2026-11-02');
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/^error BAD_REQUEST: --from must be epoch milliseconds or an ISO-8601 date or date-time .*read as UTC.*got "yesterday"/);
      const compact = await get('20261102', '2026-11-03');
      expect(compact).toMatchObject({ code: 2, stdout: '' });
      expect(compact.stderr).toMatch(/got "20261102" \(a date\? write it with dashes: 2026-11-02\)\n$/);
      const refused = await runCli(['count', 'utc-video', '--at', '1999-12-31T23:59Z', '--node', node.address]);
      expect(refused).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: the event: time 1999-12-31T23:59:00.000Z is before 2000-01-01T00:00:00.000Z, the earliest Tally takes\n' });
      // A value over a limit is bad usage as much as a malformed one: exit 2, nothing counted.
      const long = await runCli(['count', 'x'.repeat(300), '--node', node.address]);
      expect(long.code).toBe(2);
      expect(long.stderr).toMatch(/^error TOO_LARGE: /);
      const ready = node.output().split('\n').find((l) => l.includes(' ready on '));
      expect(JSON.parse(ready ?? '')).toMatchObject({ level: 30, event: 'ready', address: node.address, msg: expect.stringMatching(/^tally node \S+ ready on /) });
    } finally {
      await stopNode(node);
    }
  });

  it('prints what the README\'s first `npx tally` examples show', async () => {
    const readme = await readFile(`${ROOT}/README.md`, 'utf8');
    const section = readme.slice(readme.indexOf('## Two commands'), readme.indexOf('## Client library'));
    const block = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '').find((b) => b.includes('npx tally get')) ?? '';
    const examples = block.split('\n').filter((l) => l.startsWith('npx tally ') && !l.includes('--node'));
    expect(examples.length).toBeGreaterThanOrEqual(3);
    const node = await startNode(['--port', '0', '--data', `${dir}/readme`, '--rf', '1']);
    try {
      for (const line of examples) {
        const [command = '', comment = ''] = line.split(/\s+#\s+/);
        const r = await runCli(command.trim().split(/\s+/).slice(2), 20_000, { TALLY_NODE: node.address });
        expect(r, line).toMatchObject({ code: 0, stderr: '' });
        // A comment that is output (a number or JSON) must be what the command printed; `…` is any text.
        if (/^[\d{]/.test(comment)) {
          const pattern = comment.split('…').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*');
          expect(r.stdout, line).toMatch(new RegExp(`^${pattern}\n$`));
        }
      }
    } finally {
      await stopNode(node);
    }
  });

  it('takes start options from flags over TALLY_* over a --config file over the defaults', async () => {
    const config = `${dir}/tally.json`;
    await writeFile(config, JSON.stringify({ port: 0, rf: 1, data: `${dir}/configured`, zone: 'zone-file', cluster: 'from-file', seeds: [] }));
    // TALLY_NODE is an option of the client commands only: it must not trouble `start`.
    const env = { TALLY_CONFIG: config, TALLY_ZONE: 'zone-env', TALLY_CLUSTER: 'from-env', TALLY_NODE: '127.0.0.1:1' };
    const node = await startNode(['--cluster', 'from-flag'], 15_000, [], env);
    try {
      expect(node.output()).toMatch(/ready on .*\(zone zone-env, rf 1, data .*\/configured,/);
      const status = await statusOf(node.address);
      expect(status).toMatchObject({ cluster: 'from-flag', zone: 'zone-env', rf: 1 });
    } finally {
      await stopNode(node);
    }
    await writeFile(`${dir}/typo.json`, JSON.stringify({ prot: 7 }));
    const typo = await runCli(['start', '--config', `${dir}/typo.json`]);
    expect(typo).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: Unknown argument: prot\n' });
  });

  it('refuses a --config file it cannot read, or that is not a JSON object, as bad usage (exit 2)', async () => {
    await writeFile(`${dir}/broken.json`, '{"port": ');
    await writeFile(`${dir}/list.json`, '[7401]');
    const missing = await runCli(['start', '--config', `${dir}/missing.json`]);
    expect(missing).toMatchObject({ code: 2, stderr: `error BAD_REQUEST: cannot read the configuration file ${dir}/missing.json: no such file\n` });
    const broken = await runCli(['get', 'v', '--config', `${dir}/broken.json`]);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/^error BAD_REQUEST: the configuration file .*broken\.json is not valid JSON/);
    const list = await runCli(['status'], 20_000, { TALLY_CONFIG: `${dir}/list.json` });
    expect(list.code).toBe(2);
    expect(list.stderr).toMatch(/^error BAD_REQUEST: the configuration file .*list\.json must hold a JSON object of options/);
    // A value no flag could take: named, as bad usage, never a crash of the command (INTERNAL).
    for (const [value, shown] of [['null', 'null'], ['{"a": 1}', '{"a":1}'], ['[["x"]]', '[["x"]]']] as const) {
      await writeFile(`${dir}/value.json`, `{"port": 7401, "data": ${value}}`);
      const r = await runCli(['start', '--rf', '1', '--config', `${dir}/value.json`]);
      expect(r, value).toMatchObject({ code: 2, stderr: `error BAD_REQUEST: the configuration file ${dir}/value.json: "data" must be a string, a number, true or false, or a list of strings or numbers, got ${shown}\n` });
    }
    // A switch given a word: yargs reads any but "true" as false, so "fsync": "yes" ran without fsync.
    await writeFile(`${dir}/switch.json`, '{"port": 0, "rf": 1, "fsync": "yes"}');
    expect(await runCli(['start', '--data', `${dir}/switch`, '--config', `${dir}/switch.json`])).toMatchObject({
      code: 2,
      stderr: `error BAD_REQUEST: the configuration file ${dir}/switch.json: "fsync" must be true or false, got "yes"\n`,
    });
    expect(await runCli(['status', '--json', '--node', '127.0.0.1:1'], 20_000, { TALLY_JSON: '1' })).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: TALLY_JSON must be true or false, got "1"\n' });
    expect(existsSync(`${dir}/switch`)).toBe(false);
    // "true" and "false" as strings are read as the switches they name, as from the environment:
    // a file that ran before runs still (here the command goes on, to find no node answering).
    await writeFile(`${dir}/switch-text.json`, `{"json": "true", "node": "127.0.0.1:${await freePort()}"}`);
    const text = await runCli(['status', '--config', `${dir}/switch-text.json`]);
    expect(text.stderr).toMatch(/^error UNAVAILABLE: /);
    expect(text.code).toBe(1);
  });

  it('asks the next node --node lists when the first does not answer `tally status`, and refuses --key with --watch', async () => {
    const node = await startNode(['--port', '0', '--data', `${dir}/fallback`, '--id', 'fb', '--rf', '1']);
    try {
      const r = await runCli(['status', '--json', '--node', `127.0.0.1:${await freePort()},${node.address}`]);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ nodeId: 'fb' });
      const watchKey = await runCli(['status', '--key', 'v', '--watch', '1', '--node', node.address]);
      expect(watchKey).toMatchObject({ code: 2, stdout: '', stderr: 'error BAD_REQUEST: Arguments key and watch are mutually exclusive\n' });
    } finally {
      await stopNode(node);
    }
  });

  it('exits 3 from `tally status` while the cluster is degraded, and --watch reports until Ctrl-C', async () => {
    const a = await startNode(['--port', '0', '--data', `${dir}/sa`, '--id', 'sa', '--rf', '1']);
    let b: NodeProcess | undefined;
    try {
      b = await startNode(['--port', '0', '--data', `${dir}/sb`, '--id', 'sb', '--rf', '1', '--seeds', a.address]);
      await waitFor('both up', 10_000, async () => ((await statusOf(a.address)).health.startsWith('healthy: 2/2') ? true : undefined));
      const healthy = await runCli(['status', '--node', a.address]);
      expect(healthy.code).toBe(0);
      await stopNode(b, 'SIGKILL');
      await waitFor('sb down', 10_000, async () => ((await statusOf(a.address)).health.startsWith('degraded') ? true : undefined));
      const degraded = await runCli(['status', '--node', a.address]);
      expect(degraded.code).toBe(3);
      expect(degraded.stdout).toMatch(/degraded: 1\/2 up; down: sb/);

      const watch = spawn(process.execPath, [CLI, 'status', '--watch', '0.5', '--json', '--node', a.address], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      watch.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => watch.once('exit', (code) => r(code)));
      await waitFor('three reports', 10_000, async () => (out.split('\n').filter((l) => l.startsWith('{')).length >= 3 ? true : undefined));
      watch.kill('SIGINT');
      expect(await exited).toBe(3);
      expect(JSON.parse(out.split('\n')[0] ?? '')).toMatchObject({ nodeId: 'sa' });
    } finally {
      if (b !== undefined) await stopNode(b, 'SIGKILL');
      await stopNode(a);
    }
  });

  it('ends `tally status --watch` quietly, with the last report\'s status, when its reader goes (as `| head` does)', async () => {
    const node = await startNode(['--port', '0', '--data', `${dir}/pipe`, '--id', 'pp', '--rf', '1']);
    try {
      const watch = spawn(process.execPath, [CLI, 'status', '--watch', '0.5', '--node', node.address], { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      watch.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((r) => watch.once('exit', (code) => r(code)));
      // The first report read, the reader closes the pipe: the next report meets EPIPE.
      await new Promise<void>((r) => watch.stdout.once('data', () => r()));
      watch.stdout.destroy();
      expect(await exited).toBe(0);
      expect(err).toBe('');
    } finally {
      await stopNode(node);
    }
  });

  it.each(['SIGTERM', 'SIGKILL'] as const)('`tally cluster` stops its nodes when its parent goes by %s', async (signal) => {
    const port = await freePort();
    // As `npm start` runs it: under a shell that waits for it and passes no signal on.
    const shell = spawn('/bin/sh', ['-c', `"${process.execPath}" "${CLI}" cluster --nodes 1 --base-port ${port} --data "${dir}/sup-${signal}"; true`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    shell.stdout.on('data', (d: Buffer) => (out += d.toString()));
    shell.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const { value: pids } = await waitFor('the cluster is up', 20_000, async () => {
        if (!out.includes('local cluster of 1 node is up')) return undefined;
        const node = /"pid":(\d+)/.exec(out);
        return node === null ? undefined : { node: Number(node[1]) };
      });
      expect(alive(pids.node)).toBe(true);
      shell.kill(signal);
      await waitFor('the node stopped', 10_000, async () => (alive(pids.node) ? undefined : true));
      await waitFor('the port is free', 5_000, async () => {
        const s = createServer();
        const free = await new Promise<boolean>((r) => s.once('error', () => r(false)).listen(port, '127.0.0.1', () => r(true)));
        s.close();
        return free ? true : undefined;
      });
    } finally {
      shell.kill('SIGKILL');
    }
  }, 40_000);

  // A heap limit given by NODE_OPTIONS would stand, and the node would run in one process.
  const envWithoutNodeOptions = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS'));

  it.each(['SIGTERM', 'SIGKILL', 'SIGTERM to both'] as const)('`tally start` runs its node under the memory budget\'s heap limit, and its node stops cleanly on %s', async (how) => {
    const port = await freePort();
    const start = spawn(process.execPath, [CLI, 'start', '--port', String(port), '--data', `${dir}/budget-${how.replace(/ /g, '-')}`, '--rf', '1', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'], env: envWithoutNodeOptions });
    let out = '';
    start.stdout.on('data', (d: Buffer) => (out += d.toString()));
    start.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => start.once('exit', (code) => r(code)));
    // Closes once every process writing to it (the node too) has gone.
    const outputClosed = new Promise<void>((r) => start.stdout.once('close', () => r()));
    try {
      const { value: nodePid } = await waitFor('the node is ready', 20_000, async () => {
        const m = /"pid":(\d+),[^\n]*"event":"ready"/.exec(out);
        return m === null ? undefined : Number(m[1]);
      });
      // The node is a process of its own, started with the heap limit 300 MiB leaves (200 MiB of
      // old space; V8's limit counts the young generation too).
      expect(nodePid).not.toBe(start.pid);
      const status = await statusOf(`127.0.0.1:${port}`);
      const limitMiB = (status.process?.heapLimitBytes ?? 0) / 1048576;
      expect(limitMiB).toBeGreaterThanOrEqual(200);
      expect(limitMiB).toBeLessThan(200 + 64);
      if (how === 'SIGTERM to both') {
        // As a process manager stops a service: every process of it at once. The node gets the
        // signal twice (from outside, and passed on), and must take it as once.
        start.kill('SIGTERM');
        process.kill(nodePid, 'SIGTERM');
      } else {
        start.kill(how);
      }
      await waitFor('the node stopped', 10_000, async () => (alive(nodePid) ? undefined : true));
      await outputClosed;
      // Stopped cleanly, whichever way the process that started it went.
      expect(out).toMatch(/"event":"stopped"/);
      expect(out).not.toMatch(/exiting at once/);
      if (how !== 'SIGKILL') expect(await exited).toBe(0);
    } finally {
      start.kill('SIGKILL');
    }
  }, 40_000);

  it('runs `tally start --memory-mb 0` in one process under V8\'s own heap limit, and refuses a budget too small to run in', async () => {
    const port = await freePort();
    const start = spawn(process.execPath, [CLI, 'start', '--port', String(port), '--data', `${dir}/no-budget`, '--rf', '1', '--memory-mb', '0', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'], env: envWithoutNodeOptions });
    let out = '';
    start.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const { value: nodePid } = await waitFor('the node is ready', 20_000, async () => {
        const m = /"pid":(\d+),[^\n]*"event":"ready"/.exec(out);
        return m === null ? undefined : Number(m[1]);
      });
      expect(nodePid).toBe(start.pid);
      const status = await statusOf(`127.0.0.1:${port}`);
      // V8's own limit: a share of the machine's memory, above what the default budget leaves.
      expect(status.process?.heapLimitBytes ?? 0).toBeGreaterThan((200 + 64) * 1048576);
    } finally {
      start.kill('SIGKILL');
    }
    const small = await runCli(['start', '--port', '0', '--data', `${dir}/small`, '--memory-mb', '200']);
    expect(small.code).toBe(2);
    expect(small.stderr).toMatch(/^error BAD_REQUEST: --memory-mb must be 0 \(no budget\) or a whole number of MiB from 228/);
  });

  it('refuses a local cluster with more replicas than nodes, or ports past 65535, before starting a node', async () => {
    const rf = await runCli(['cluster', '--nodes', '1', '--rf', '2', '--base-port', String(await freePort()), '--data', `${dir}/rf-2`]);
    expect(rf).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --rf must be an integer from 1 to the number of nodes (1), got 2\n' });
    // Past the most replicas Tally takes (7), however many nodes: refused here, not by a node.
    const most = await runCli(['cluster', '--nodes', '8', '--rf', '8', '--base-port', String(await freePort()), '--data', `${dir}/rf-8`]);
    expect(most).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --rf must be an integer from 1 to 7 (the most replicas Tally takes), got 8\n' });
    const ports = await runCli(['cluster', '--nodes', '3', '--base-port', '65534', '--data', `${dir}/ports`]);
    expect(ports).toMatchObject({ code: 2, stderr: 'error BAD_REQUEST: --base-port must be an integer from 1 to 65533 for 3 nodes, got 65534\n' });
    expect(existsSync(`${dir}/rf-2`) || existsSync(`${dir}/rf-8`) || existsSync(`${dir}/ports`)).toBe(false);
  });

  it('runs a local cluster on an IPv6 host, its addresses in brackets', async (ctx) => {
    const probe = createServer();
    const v6 = await new Promise<boolean>((r) => probe.once('error', () => r(false)).listen(0, '::1', () => r(true)));
    probe.close();
    if (!v6) return ctx.skip();
    const port = await freePort();
    const proc = spawn(process.execPath, [CLI, 'cluster', '--nodes', '1', '--host', '::1', '--base-port', String(port), '--data', `${dir}/v6`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    try {
      await waitFor('the cluster is up', 20_000, async () => (out.includes(`local cluster of 1 node is up: [::1]:${port}`) ? true : undefined));
      expect((await statusOf(`[::1]:${port}`)).address).toBe(`[::1]:${port}`);
      proc.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      proc.kill('SIGKILL');
    }
  }, 40_000);

  it('says why a node of `tally cluster` could not start, with its code', async () => {
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as { port: number }).port;
    try {
      const r = await runCli(['cluster', '--nodes', '1', '--base-port', String(port), '--data', `${dir}/taken`], 30_000);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^error IN_USE: node n1 could not start: port 127\\.0\\.0\\.1:${port} is in use`, 'm'));
    } finally {
      holder.close();
    }
  });
});

describe('a second node with a live node\'s id', () => {
  let dir: string;
  const nodes: NodeProcess[] = [];
  beforeAll(async () => {
    dir = await tempDir('tally-dup-');
  });
  afterAll(async () => {
    await Promise.all(nodes.map((n) => stopNode(n, 'SIGKILL')));
    await removeDir(dir);
  });

  it('is refused by the node it joins through and by the node itself, and stops with IN_USE; the membership keeps the first', async () => {
    const a = await startNode(['--port', '0', '--data', `${dir}/a`, '--id', 'da', '--rf', '1']);
    nodes.push(a);
    const b = await startNode(['--port', '0', '--data', `${dir}/b`, '--id', 'db', '--rf', '1', '--seeds', a.address]);
    nodes.push(b);
    await waitFor('both up', 10_000, async () => ((await statusOf(a.address)).health.startsWith('healthy: 2/2') ? true : undefined));

    for (const [through, holder] of [[a, a], [b, a]] as const) {
      // Through a peer that knows db, and through db itself.
      const seed = through === a ? a.address : b.address;
      const dup = await startNode(['--port', '0', '--data', `${dir}/dup-${seed.split(':')[1]}`, '--id', 'db', '--rf', '1', '--seeds', seed]);
      nodes.push(dup);
      const code = await Promise.race([dup.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 10_000))]);
      expect(code).toBe(1);
      expect(dup.output()).toMatch(new RegExp(`error IN_USE: ${seed.replace(/\./g, '\\.')} refused this node: node id "db" is in use by a live member at ${b.address.replace(/\./g, '\\.')}`));
      const refusedBy = through === a ? a : b;
      await waitFor('the refusal logged', 5_000, async () => (/refused a peer: node id \\"db\\" is in use/.test(refusedBy.output()) ? true : undefined));
      const s = await statusOf(holder.address);
      expect(s.members.find((m) => m.id === 'db')).toMatchObject({ address: b.address, status: 'up' });
    }
    expect((await statusOf(b.address)).health).toMatch(/^healthy: 2\/2 up/);
  }, 60_000);
});

describe('tally decommission --wait', () => {
  let dir: string;
  let cluster: Cluster;
  beforeAll(async () => {
    dir = await tempDir('tally-decom-');
    cluster = new Cluster(dir, 4, ['--rf', '3']);
  });
  afterAll(async () => {
    await cluster.stop();
    await removeDir(dir);
  });

  it('says the node crashed before it left the ring, not that it left, and exits 1', async () => {
    await cluster.startAll();
    const decom = runCli(['decommission', '--node', cluster.address(3)], 60_000);
    // The streams begin once every coordinator knows (about 4 s): killed well before it is done.
    await waitFor('n4 decommissioning', 10_000, async () => ((await statusOf(cluster.address(0))).members.find((m) => m.id === 'n4')?.lifecycle.startsWith('decommissioning') ? true : undefined));
    await cluster.kill(3);
    const r = await decom;
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).not.toMatch(/has left the ring/);
    expect(r.stderr).toMatch(/error UNAVAILABLE: n4 stopped answering before it left the ring \(127\.0\.0\.1:\d+ sees it decommissioning\)/);
  }, 90_000);
});
