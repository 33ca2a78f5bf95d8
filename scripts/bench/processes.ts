import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { generateSigningJwks } from '../../src/signing/signing-keys';
import { freePort, startLocalRedis, type LocalRedis } from '../../src/wiring/local-redis';

/**
 * Everything the bench runs besides itself, each in its own process so the load generator never shares an
 * event loop with what it measures: redis-server, `tasklease serve`, `tasklease worker`, the floor server.
 */

const REPO = path.resolve(__dirname, '../../..');
export const BENCH_ISSUER = 'https://bench.issuer.test';
export const BENCH_GRANT = 'bench-read';
/** The bulk-revocation phase's own grant, so its selector matches exactly the leases that phase issued. */
export const BENCH_BULK_GRANT = 'bench-bulk';
/** The on-call identity that revokes in bulk (role revoker: revoke and view). */
export const BENCH_ADMIN = 'bench-admin';
export const REDIS_PREFIX = 'tl:';

/** Real Cedar, permissive for the bench's own issuer only: it checks the issuer, the ticket and the TTL. */
const POLICIES = `
@id("bench-declare")
permit(principal, action == Action::"declareTask", resource)
when { principal.issuer == "bench" && context.task.ticket like "BENCH-*" };

@id("bench-issue")
permit(principal, action == Action::"issue", resource == Grant::"${BENCH_GRANT}")
when { principal.issuer == "bench" && context.task.ticket like "BENCH-*" && context.ttlSeconds <= 3600 };

@id("bench-bulk-issue")
permit(principal, action == Action::"issue", resource == Grant::"${BENCH_BULK_GRANT}")
when { principal.issuer == "bench" && context.task.ticket like "BENCH-*" && context.ttlSeconds <= 3600 };
`;

export interface Child {
  name: string;
  process: ChildProcess;
  port: number;
}

/** An API + worker pair on one Redis (and, for the single-Redis environment, the floor server beside it). */
export interface BrokerPair {
  dir: string;
  api: Child;
  worker: Child;
  floor?: Child;
  /** Signs an identity token for `subject` with the bench issuer's key. */
  identityToken(subject: string): Promise<string>;
  /** CPU seconds (user + system) each process has used so far, from /proc; null where unavailable. */
  cpuSeconds(): Record<string, number | null>;
  stop(): Promise<void>;
}

export interface BenchEnvironment extends BrokerPair {
  redis: LocalRedis;
  floor: Child;
}

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
/** Processes the bench did not spawn through startChild (the Sentinel set's redis-servers): their pids, now. */
const otherPids = new Set<() => (number | undefined)[]>();

/** Last resort: whatever happens to the bench (even an uncaught error), no child or temp dir outlives it. */
process.on('exit', () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  for (const pids of otherPids) {
    for (const pid of pids()) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A temp dir removed when the bench exits, however it exits (and by `removeTempDir` before that). */
export function benchTempDir(label: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `tasklease-${label}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Processes to SIGKILL if the bench exits before stopping them; `pids` is read at exit (restarts change it). */
export function killAtExit(pids: () => (number | undefined)[]): void {
  otherPids.add(pids);
}

function startChild(name: string, args: string[], env: Record<string, string>, port: number): Child {
  const child = spawn(process.execPath, args, {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(`[${name}] ${chunk.toString()}`));
  child.once('exit', () => children.delete(child));
  return { name, process: child, port };
}

const httpGetStatus = (port: number, route: string) =>
  new Promise<number>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: route, method: 'GET' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });

async function waitReady(child: Child, route: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await httpGetStatus(child.port, route)) !== 200) {
    if (child.process.exitCode !== null)
      throw new Error(`${child.name} exited with code ${child.process.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${child.name} not ready within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function stopChild(child: Child): Promise<void> {
  const { process: proc } = child;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

export function readCpuSeconds(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    // Fields after the ")" of the command name: utime is the 12th, stime the 13th (in clock ticks, 100/s).
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

async function writeIssuer(dir: string): Promise<{ jwksFile: string; privateKey: CryptoKey }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwksFile = path.join(dir, 'bench-issuer.jwks.json');
  writeFileSync(
    jwksFile,
    JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'bench-1', alg: 'ES256', use: 'sig' }] }),
  );
  return { jwksFile, privateKey };
}

function writeConfig(dir: string, jwksFile: string, broker: Record<string, unknown>): string {
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'policies', 'bench.cedar'), POLICIES);
  const config = {
    issuers: [
      {
        name: 'bench',
        kind: 'oidc',
        issuer: BENCH_ISSUER,
        jwksFile,
        audiences: ['tasklease'],
        maxTokenLifetimeSeconds: 3600,
      },
    ],
    grants: {
      [BENCH_GRANT]: {
        provider: 'jwt',
        audience: 'https://bench.test',
        scopes: ['bench:read'],
        maxTtlSeconds: 3600,
      },
      [BENCH_BULK_GRANT]: {
        provider: 'jwt',
        audience: 'https://bench.test',
        scopes: ['bench:bulk'],
        maxTtlSeconds: 3600,
      },
    },
    policies: './policies',
    admins: [{ issuer: 'bench', subjects: [BENCH_ADMIN], roles: ['revoker'] }],
    // Everything else (revocation concurrency, sweep interval, lease cap) stays at its default: that is what is measured.
    broker: { issuer: 'tasklease-bench', redisPrefix: REDIS_PREFIX, ...broker },
  };
  const file = path.join(dir, 'tasklease.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

const signer = (privateKey: CryptoKey) => (subject: string) => {
  const now = Math.floor(Date.now() / 1000);
  // A jti of its own: two tokens signed in the same second are different tokens (the fresh-token phase).
  const claims = {
    iss: BENCH_ISSUER,
    aud: 'tasklease',
    sub: subject,
    iat: now,
    exp: now + 3000,
    jti: randomUUID(),
  };
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: 'bench-1', typ: 'JWT' })
    .sign(privateKey);
};

/**
 * `tasklease serve` and `tasklease worker` on `redisUrl`, configured in `dir` (the bench's config, with
 * `broker` merged into its `broker` section); not yet waited for. Each child is pushed onto `started` as soon
 * as it is spawned, so the caller can stop whatever did start if anything after fails.
 */
async function startApiAndWorker(
  dir: string,
  started: Child[],
  options: { redisUrl: string; broker?: Record<string, unknown>; label?: string; cpuProfileDir?: string },
) {
  const issuer = await writeIssuer(dir);
  const configFile = writeConfig(dir, issuer.jwksFile, options.broker ?? {});
  const common = {
    TASKLEASE_CONFIG: configFile,
    REDIS_URL: options.redisUrl,
    LOG_LEVEL: 'warn',
    HOST: '127.0.0.1',
  };
  const bin = path.join(REPO, 'bin', 'tasklease.js');
  const label = options.label ? `${options.label} ` : '';

  const apiPort = await freePort();
  const signingKeys = JSON.stringify(await generateSigningJwks());
  // BENCH_PERF: the API writes /tmp/perf-<pid>.map, so `perf record -p <pid>` names its JavaScript frames.
  const perf = process.env.BENCH_PERF ? ['--perf-basic-prof-only-functions'] : [];
  const profile = options.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfileDir] : perf;
  const api = startChild(
    `${label}api`,
    [...profile, bin, 'serve'],
    { ...common, PORT: String(apiPort), TASKLEASE_SIGNING_KEYS: signingKeys },
    apiPort,
  );
  started.push(api);
  const workerPort = await freePort();
  const worker = startChild(
    `${label}worker`,
    [bin, 'worker'],
    { ...common, WORKER_PORT: String(workerPort) },
    workerPort,
  );
  started.push(worker);
  return { api, worker, identityToken: signer(issuer.privateKey) };
}

/**
 * An API + worker pair on an existing Redis (the Sentinel phase's), with `broker` settings over the bench's
 * config; ready when it returns. `stop()` stops the pair only: the Redis is the caller's.
 */
export async function startBrokerPair(options: {
  redisUrl: string;
  broker: Record<string, unknown>;
  label: string;
}): Promise<BrokerPair> {
  const dir = benchTempDir('bench-pair');
  const started: Child[] = [];
  try {
    const { api, worker, identityToken } = await startApiAndWorker(dir, started, options);
    await Promise.all([waitReady(api, '/readyz'), waitReady(worker, '/readyz')]);
    return {
      dir,
      api,
      worker,
      identityToken,
      cpuSeconds: () => ({
        api: readCpuSeconds(api.process.pid),
        worker: readCpuSeconds(worker.process.pid),
      }),
      async stop() {
        await Promise.all(started.map(stopChild));
        removeTempDir(dir);
      },
    };
  } catch (error) {
    await Promise.all(started.map(stopChild));
    removeTempDir(dir);
    throw error;
  }
}

/** `cpuProfileDir`: run the API under `--cpu-prof`; the profile is written there when it stops. */
export async function startBenchEnvironment(
  options: { cpuProfileDir?: string } = {},
): Promise<BenchEnvironment> {
  const dir = benchTempDir('bench');
  const started: Child[] = [];
  let redis: LocalRedis | null = null;
  try {
    // No append-only file: the bench measures the broker, not the disk (docs/benchmark.md says so).
    redis = await startLocalRedis(path.join(dir, 'redis'), { appendOnly: false });
    children.add(redis.process);
    const { api, worker, identityToken } = await startApiAndWorker(dir, started, {
      redisUrl: redis.url,
      ...(options.cpuProfileDir ? { cpuProfileDir: options.cpuProfileDir } : {}),
    });
    const floorPort = await freePort();
    const floorScript = path.join(__dirname, '..', 'floor-server.js');
    const floor = startChild(
      'floor',
      [floorScript],
      { REDIS_URL: redis.url, PORT: String(floorPort) },
      floorPort,
    );
    started.push(floor);
    await Promise.all([
      waitReady(api, '/readyz'),
      waitReady(worker, '/readyz'),
      waitReady(floor, '/healthz'),
    ]);

    const runningRedis = redis;
    return {
      dir,
      redis: runningRedis,
      api,
      worker,
      floor,
      identityToken,
      cpuSeconds: () => ({
        api: readCpuSeconds(api.process.pid),
        worker: readCpuSeconds(worker.process.pid),
        floor: readCpuSeconds(floor.process.pid),
        redis: readCpuSeconds(runningRedis.process.pid),
        loadGenerator: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
      }),
      async stop() {
        await Promise.all(started.map(stopChild));
        await runningRedis.stop();
        removeTempDir(dir);
      },
    };
  } catch (error) {
    await Promise.all(started.map(stopChild));
    await redis?.stop();
    removeTempDir(dir);
    throw error;
  }
}
