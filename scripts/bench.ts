import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { bulkRevocationRows, measureBulkRevocation } from './bench/bulk-revoke';
import { alignedTtl, measureBytesPerLease, measureRevocationLag } from './bench/leases';
import { closedLoop, openLoop, type PhaseResult, type Target } from './bench/load-generator';
import { BENCH_BULK_GRANT, startBenchEnvironment, type BenchEnvironment } from './bench/processes';
import { printTable, verdictOf, writeJson, type Row } from './bench/report';
import { startSentinelEnvironment, type SentinelEnvironment } from './bench/sentinel';
import { prepareWorkload } from './bench/workload';

/**
 * `npm run bench` — the product's performance targets, measured (docs/benchmark.md): issuance throughput
 * and latency against the irreducible floor in the same run, revocation lag, Redis bytes per lease, bulk
 * revocation; then the same issuance and revocation-lag phases through a Sentinel set with
 * `broker.replicaAcks: 1` (BENCH_SENTINEL=0 skips it), as a ratio to the single-Redis figures.
 * `--quick` is a short smoke run; BENCH_* variables override the sizes.
 */

const quick = process.argv.includes('--quick');
/** `--soak`: only the soak (issuance at 1,000/s for BENCH_SOAK_SECONDS), minute by minute. */
const soakOnly = process.argv.includes('--soak');
const num = (name: string, full: number, short: number) => {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? (quick ? short : full) : Number(raw);
  if (!Number.isFinite(value) || value <= 0)
    throw new Error(`${name} must be a positive number (got "${raw}")`);
  return value;
};

const settings = {
  quick,
  measureSeconds: num('BENCH_SECONDS', 8, 3),
  warmupSeconds: num('BENCH_WARMUP_SECONDS', 2, 1),
  jitWarmupSeconds: num('BENCH_JIT_WARMUP_SECONDS', 5, 3),
  connections: num('BENCH_CONNECTIONS', 64, 32),
  rates: (process.env.BENCH_RATES ?? '1000,500')
    .split(',')
    .map(Number)
    .filter((rate) => rate > 0),
  lagBatch: num('BENCH_LAG_BATCH', 2000, 500),
  lagTtlSeconds: num('BENCH_LAG_TTL_SECONDS', 5, 3),
  burst: num('BENCH_BURST', 10_000, 2000),
  memoryLeases: num('BENCH_MEMORY_LEASES', 100_000, 3000),
  bulkRevoke: num('BENCH_BULK_REVOKE', 10_000, 2000),
  watchdogSeconds: num('BENCH_WATCHDOG_SECONDS', 900, 240),
  soakSeconds: num('BENCH_SOAK_SECONDS', 600, 60),
  /** The Sentinel phase: on unless BENCH_SENTINEL is 0 (or false, no, off). */
  sentinel: !/^(0|false|no|off)$/i.test(process.env.BENCH_SENTINEL ?? ''),
};

/** The Sentinel phase's topology and durability setting (issue 14: the price of `replicaAcks: 1`). */
const SENTINEL = { replicas: 2, sentinels: 3, replicaAcks: 1 } as const;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line: string) => process.stdout.write(`${line}\n`);

/** Runs one load phase and notes how many cores each process used meanwhile (from /proc). */
async function measured<T extends PhaseResult>(
  env: { cpuSeconds(): Record<string, number | null> },
  label: string,
  server: 'api' | 'floor',
  run: () => Promise<T>,
) {
  await sleep(1000);
  const cpuBefore = env.cpuSeconds();
  const startedMs = performance.now();
  const result = await run();
  const seconds = (performance.now() - startedMs) / 1000;
  const cpuAfter = env.cpuSeconds();
  const coresUsed = Object.fromEntries(
    Object.entries(cpuAfter).map(([name, after]) => {
      const before = cpuBefore[name];
      return [
        name,
        after === null || before === null || before === undefined
          ? null
          : Math.round(((after - before) / seconds) * 100) / 100,
      ];
    }),
  );
  // CPU per request does not depend on how busy the machine is, unlike throughput: the bottleneck's cost.
  const serverCpuSeconds = (cpuAfter[server] ?? NaN) - (cpuBefore[server] ?? NaN);
  const serverCpuMsPerRequest =
    Math.round((serverCpuSeconds * 1000 * 1000) / Math.max(1, result.requests)) / 1000;
  const { latency } = result;
  const cores = Object.entries(coresUsed)
    .map(([name, value]) => `${name} ${value ?? '?'}`)
    .join(', ');
  log(
    `  ${label}: ${result.throughputPerSecond}/s, p50 ${latency.p50Ms} ms, p99 ${latency.p99Ms} ms, errors ${result.errors}, ` +
      `${serverCpuMsPerRequest} CPU ms/request  [cores: ${cores}]`,
  );
  return { ...result, coresUsed, serverCpuMsPerRequest };
}

async function run(env: BenchEnvironment) {
  const { measureSeconds, warmupSeconds, connections } = settings;
  const timing = { warmupMs: warmupSeconds * 1000, durationMs: measureSeconds * 1000 };
  const workload = await prepareWorkload(env, { identities: 4, tasksEach: 4 });
  const longLived = workload.broker(3600);
  const saturate = (target: Target) => () => closedLoop(target, { connections, ...timing });
  const atRate = (target: Target, ratePerSecond: number) => () =>
    openLoop(target, { ratePerSecond, ...timing });

  // Unrecorded load first: JIT and WebAssembly tier-up (Cedar) happen here, not inside a measured phase.
  log(`warming up both servers (${settings.jitWarmupSeconds} s each, not recorded)...`);
  for (const target of [workload.floor(), longLived]) {
    await closedLoop(target, { connections, warmupMs: settings.jitWarmupSeconds * 1000, durationMs: 1 });
  }
  log(
    `issuance, closed loop (${connections} connections, ${warmupSeconds} s warm-up + ${measureSeconds} s):`,
  );
  const floorSaturated = await measured(env, 'floor  saturated', 'floor', saturate(workload.floor()));
  const brokerSaturated = await measured(env, 'broker saturated', 'api', saturate(longLived));
  log('issuance, open loop (latency from the intended send time):');
  const brokerRates: Record<string, Awaited<ReturnType<typeof measured>>> = {};
  for (const rate of settings.rates)
    brokerRates[rate] = await measured(env, `broker ${rate}/s`, 'api', atRate(longLived, rate));
  const floorAt1000 = await measured(env, 'floor  1000/s', 'floor', atRate(workload.floor(), 1000));
  // Beside them: a caller presenting a new identity token on every request (no identity-cache hit).
  log('issuance with a fresh identity token on every request (each verified; signed up front):');
  const freshCount = Math.ceil(
    ((warmupSeconds + measureSeconds) * Math.max(brokerSaturated.throughputPerSecond, 500) * 1.2) / 1,
  );
  const freshSaturated = await measured(
    env,
    'broker saturated, fresh tokens',
    'api',
    saturate(await workload.brokerFreshTokens(freshCount)),
  );
  const freshAt500 = await measured(
    env,
    'broker 500/s, fresh tokens',
    'api',
    atRate(await workload.brokerFreshTokens(Math.ceil((warmupSeconds + measureSeconds) * 500 * 1.2)), 500),
  );

  const redis = new Redis(env.redis.url, { connectionName: 'bench' });
  try {
    log(`Redis memory: ${settings.memoryLeases} long-lived leases...`);
    const memory = await measureBytesPerLease(redis, longLived, {
      count: settings.memoryLeases,
      connections,
    });
    log(`  ${memory.bytesPerLease} bytes/lease ${JSON.stringify(memory.breakdownBytesPerLease)}`);

    log(`revocation lag: ${settings.lagBatch} leases with a ${settings.lagTtlSeconds} s TTL...`);
    const lagTimeoutMs = settings.lagTtlSeconds * 1000 + 60_000;
    const lag = await measureRevocationLag(redis, workload.broker(settings.lagTtlSeconds), {
      count: settings.lagBatch,
      connections,
      timeoutMs: lagTimeoutMs,
    });
    log(
      `  lag p50 ${lag.lag.p50Ms} ms, p99 ${lag.lag.p99Ms} ms, max ${lag.lag.maxMs} ms; ${JSON.stringify(lag.states)}`,
    );

    log(`revocation burst: ${settings.burst} leases expiring within one second of each other...`);
    // Issuing takes a while: aim the common expiry past the time issuing should take at the measured rate.
    const issueMs = (settings.burst / Math.max(100, 0.8 * brokerSaturated.throughputPerSecond)) * 1000;
    const expireAtMs = Date.now() + issueMs + 3000;
    const burst = await measureRevocationLag(redis, workload.broker(alignedTtl(expireAtMs)), {
      count: settings.burst,
      connections,
      timeoutMs: expireAtMs - Date.now() + 60_000,
    });
    log(
      `  drained in ${burst.drainMs} ms (expiry spread ${burst.expirySpreadMs} ms); lag p99 ${burst.lag.p99Ms} ms, max ${burst.lag.maxMs} ms`,
    );

    log(`bulk revocation: ${settings.bulkRevoke} active leases, one POST /v1/leases/revoke by grant...`);
    const bulkWorkload = await prepareWorkload(env, {
      identities: 2,
      tasksEach: 4,
      grant: BENCH_BULK_GRANT,
      subjectPrefix: 'bench-bulk',
    });
    const bulk = await measureBulkRevocation(redis, env, bulkWorkload.broker(3600), {
      count: settings.bulkRevoke,
      connections,
      timeoutMs: 120_000,
    });
    log(
      `  API call ${bulk.callMs} ms (matched ${bulk.matched}, started ${bulk.revoked}); all settled ${bulk.allSettledMs} ms ` +
        `after the call was sent (worker drain ${bulk.workerDrainMs} ms); one progress poll ${bulk.progressPollMs} ms; ${JSON.stringify(bulk.states)}; ` +
        `CPU ms per lease ${JSON.stringify(bulk.cpuMsPerLease)}`,
    );

    return {
      floorSaturated,
      brokerSaturated,
      brokerRates,
      floorAt1000,
      freshSaturated,
      freshAt500,
      memory,
      lag,
      burst,
      bulk,
    };
  } finally {
    redis.disconnect();
  }
}

/**
 * Issuance (saturated, then at each rate) and one revocation-lag batch through the Sentinel set's broker,
 * measured as the single-Redis phases are; the lag phase reads the leases from the primary via the sentinels.
 */
async function runSentinel(env: SentinelEnvironment) {
  const { measureSeconds, warmupSeconds, connections } = settings;
  const timing = { warmupMs: warmupSeconds * 1000, durationMs: measureSeconds * 1000 };
  const workload = await prepareWorkload(env, { identities: 4, tasksEach: 4 });
  const longLived = workload.broker(3600);
  log(`warming up the Sentinel broker (${settings.jitWarmupSeconds} s, not recorded)...`);
  await closedLoop(longLived, { connections, warmupMs: settings.jitWarmupSeconds * 1000, durationMs: 1 });
  log(`issuance through Sentinel, broker.replicaAcks: ${env.replicaAcks}:`);
  const saturated = await measured(env, 'sentinel saturated', 'api', () =>
    closedLoop(longLived, { connections, ...timing }),
  );
  const rates: Record<string, Awaited<ReturnType<typeof measured>>> = {};
  for (const rate of settings.rates)
    rates[rate] = await measured(env, `sentinel ${rate}/s`, 'api', () =>
      openLoop(longLived, { ratePerSecond: rate, ...timing }),
    );

  const redis = env.connect();
  try {
    log(
      `revocation lag through Sentinel: ${settings.lagBatch} leases with a ${settings.lagTtlSeconds} s TTL...`,
    );
    const lag = await measureRevocationLag(redis, workload.broker(settings.lagTtlSeconds), {
      count: settings.lagBatch,
      connections,
      timeoutMs: settings.lagTtlSeconds * 1000 + 60_000,
    });
    log(
      `  lag p50 ${lag.lag.p50Ms} ms, p99 ${lag.lag.p99Ms} ms, max ${lag.lag.maxMs} ms; ${JSON.stringify(lag.states)}`,
    );
    const primaryAtEnd = await env.set.primary();
    const replication = Object.fromEntries(
      (await primaryAtEnd.cli('INFO', 'replication'))
        .split('\n')
        .map((line) => line.trim().split(/:(.*)/, 2))
        .filter((pair) => pair.length === 2 && /^(role|connected_slaves|slave\d+)$/.test(pair[0] as string)),
    ) as Record<string, string>;
    return {
      topology: {
        primary: 1,
        replicas: SENTINEL.replicas,
        sentinels: SENTINEL.sentinels,
        replicaAcks: env.replicaAcks,
        replicaAckTimeoutMs: 'default',
        appendOnlyFile: false,
      },
      saturated,
      rates,
      lag,
      failovers: primaryAtEnd === env.primaryAtStart ? 0 : 1,
      replicationAtEnd: replication,
    };
  } finally {
    redis.disconnect();
  }
}

type SentinelResults = Awaited<ReturnType<typeof runSentinel>>;

function sentinelRows(
  sentinel: SentinelResults,
  single: { saturated: Awaited<ReturnType<typeof measured>> },
): Row[] {
  const { saturated, rates, lag } = sentinel;
  const label = `Sentinel, replicaAcks ${sentinel.topology.replicaAcks}`;
  const errors = [saturated, ...Object.values(rates)].reduce((sum, phase) => sum + phase.errors, 0);
  const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;
  return [
    { measure: `${label}: issuance saturated`, value: saturated.throughputPerSecond, unit: '/s' },
    {
      measure: '  ÷ single-Redis broker saturated',
      value: ratio(saturated.throughputPerSecond, single.saturated.throughputPerSecond),
      unit: '×',
    },
    {
      measure: '  API CPU per issuance (saturated)',
      value: saturated.serverCpuMsPerRequest,
      unit: `ms (single Redis ${single.saturated.serverCpuMsPerRequest} ms)`,
    },
    {
      measure: '  saturated p50 / p99',
      value: saturated.latency.p50Ms,
      unit: `ms / ${saturated.latency.p99Ms} ms`,
    },
    ...Object.entries(rates).map(([rate, phase]) => ({
      measure: `  p50 / p99 at ${Number(rate).toLocaleString('en-US')}/s`,
      value: phase.latency.p50Ms,
      unit: `ms / ${phase.latency.p99Ms} ms (${phase.throughputPerSecond}/s answered)`,
    })),
    {
      measure: '  failed requests (its load phases)',
      value: errors,
      unit: '',
      target: { op: '<=', limit: 0 },
    },
    { measure: `  revocation lag p50 (${lag.leases} leases)`, value: lag.lag.p50Ms, unit: 'ms' },
    { measure: '  revocation lag p99 / max', value: lag.lag.p99Ms, unit: `ms / ${lag.lag.maxMs} ms` },
    { measure: '  leases left unsettled', value: lag.unsettled, unit: '', target: { op: '<=', limit: 0 } },
    {
      measure: '  failovers during the phase',
      value: sentinel.failovers,
      unit: '',
      target: { op: '<=', limit: 0 },
    },
  ];
}

function rowsOf(results: Awaited<ReturnType<typeof run>>): Row[] {
  const { floorSaturated, brokerSaturated, brokerRates, floorAt1000, freshSaturated, freshAt500 } = results;
  const { memory, lag, burst, bulk } = results;
  const at1000 = brokerRates['1000'];
  const phases = [floorSaturated, brokerSaturated, floorAt1000, freshSaturated, freshAt500];
  const errors = [...phases, ...Object.values(brokerRates)].reduce((sum, phase) => sum + phase.errors, 0);
  const rows: Row[] = [
    {
      measure: 'issuance saturated (broker)',
      value: brokerSaturated.throughputPerSecond,
      unit: '/s',
      target: { op: '>=', limit: 2000 },
    },
    { measure: 'issuance saturated (floor)', value: floorSaturated.throughputPerSecond, unit: '/s' },
    {
      measure: 'broker / floor ratio',
      value:
        Math.round((brokerSaturated.throughputPerSecond / floorSaturated.throughputPerSecond) * 1000) / 1000,
      unit: '×',
      target: { op: '>=', limit: 0.6 },
    },
    { measure: 'API CPU per issuance (saturated)', value: brokerSaturated.serverCpuMsPerRequest, unit: 'ms' },
    { measure: 'floor CPU per request (saturated)', value: floorSaturated.serverCpuMsPerRequest, unit: 'ms' },
    {
      measure: 'saturated p50 / p99 (broker)',
      value: brokerSaturated.latency.p50Ms,
      unit: `ms / ${brokerSaturated.latency.p99Ms} ms`,
    },
  ];
  if (at1000) {
    rows.push(
      {
        measure: 'p99 at 1,000/s (broker)',
        value: at1000.latency.p99Ms,
        unit: 'ms',
        target: { op: '<=', limit: 15 },
      },
      { measure: 'p50 at 1,000/s (broker)', value: at1000.latency.p50Ms, unit: 'ms' },
      { measure: 'answered per s in window at 1,000/s', value: at1000.throughputPerSecond, unit: '/s' },
    );
  }
  for (const [rate, phase] of Object.entries(brokerRates)) {
    if (rate !== '1000')
      rows.push({
        measure: `p50 / p99 at ${rate}/s (broker)`,
        value: phase.latency.p50Ms,
        unit: `ms / ${phase.latency.p99Ms} ms`,
      });
  }
  rows.push(
    {
      measure: 'p50 / p99 at 1,000/s (floor)',
      value: floorAt1000.latency.p50Ms,
      unit: `ms / ${floorAt1000.latency.p99Ms} ms`,
    },
    {
      measure: 'saturated, fresh token each request',
      value: freshSaturated.throughputPerSecond,
      unit: `/s, ${freshSaturated.serverCpuMsPerRequest} API CPU ms`,
    },
    {
      measure: 'p50 / p99 at 500/s, fresh tokens',
      value: freshAt500.latency.p50Ms,
      unit: `ms / ${freshAt500.latency.p99Ms} ms`,
    },
    { measure: 'failed requests (all load phases)', value: errors, unit: '', target: { op: '<=', limit: 0 } },
    { measure: `revocation lag p50 (${lag.leases} leases)`, value: lag.lag.p50Ms, unit: 'ms' },
    { measure: 'revocation lag p99', value: lag.lag.p99Ms, unit: 'ms', target: { op: '<=', limit: 1000 } },
    { measure: 'revocation lag max', value: lag.lag.maxMs, unit: 'ms', target: { op: '<=', limit: 5000 } },
    {
      measure: 'leases left unsettled',
      value: lag.unsettled + burst.unsettled + bulk.unsettled,
      unit: '',
      target: { op: '<=', limit: 0 },
    },
    {
      measure: `burst of ${burst.leases}: drained (first expiry → last)`,
      value: burst.drainMs,
      unit: 'ms',
      target: { op: '<=', limit: 5000 },
    },
    { measure: 'burst: expiry spread', value: burst.expirySpreadMs, unit: 'ms' },
    { measure: 'burst: lag p99 / max', value: burst.lag.p99Ms, unit: `ms / ${burst.lag.maxMs} ms` },
    ...bulkRevocationRows(bulk),
    {
      measure: 'Redis bytes per active lease',
      value: memory.bytesPerLease,
      unit: 'B',
      target: { op: '<=', limit: 1600 },
    },
    {
      measure: '  of which audit stream',
      value: memory.breakdownBytesPerLease.auditStream ?? NaN,
      unit: 'B',
    },
    {
      measure: '1,000,000 leases projected',
      value: Math.round((memory.projectedBytesFor1M / 1e9) * 100) / 100,
      unit: 'GB',
      target: { op: '<=', limit: 1.6 },
    },
  );
  return rows;
}

/** The API's resident memory, from /proc (null where unavailable). */
function rssBytes(pid: number | undefined): number | null {
  try {
    const line = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return line ? Number(line[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * The soak: issuance at 1,000/s (open loop) for `soakSeconds`, in one-minute windows, leases of 120 s so they
 * expire and are revoked all along (a steady state of about 120,000 active leases); each window's p50/p99
 * and errors, and the API's RSS at the start and after each window: nothing may grow.
 */
async function runSoak(env: BenchEnvironment) {
  const workload = await prepareWorkload(env, { identities: 4, tasksEach: 4 });
  const target = workload.broker(120);
  log(`warming up (${settings.jitWarmupSeconds} s, not recorded)...`);
  await closedLoop(target, {
    connections: settings.connections,
    warmupMs: settings.jitWarmupSeconds * 1000,
    durationMs: 1,
  });
  const pid = env.api.process.pid;
  const rssStartBytes = rssBytes(pid);
  log(
    `soak: 1,000/s for ${settings.soakSeconds} s; API RSS at the start ${Math.round((rssStartBytes ?? 0) / 2 ** 20)} MiB`,
  );
  const windows: { minute: number; p50Ms: number; p99Ms: number; errors: number; rssBytes: number | null }[] =
    [];
  for (let minute = 1; minute <= Math.ceil(settings.soakSeconds / 60); minute++) {
    const durationMs = Math.min(60, settings.soakSeconds - (minute - 1) * 60) * 1000;
    const phase = await openLoop(target, { ratePerSecond: 1000, warmupMs: 0, durationMs });
    const window = {
      minute,
      p50Ms: phase.latency.p50Ms,
      p99Ms: phase.latency.p99Ms,
      errors: phase.errors,
      rssBytes: rssBytes(pid),
    };
    windows.push(window);
    log(
      `  minute ${minute}: p50 ${window.p50Ms} ms, p99 ${window.p99Ms} ms, errors ${window.errors}, API RSS ${Math.round((window.rssBytes ?? 0) / 2 ** 20)} MiB`,
    );
  }
  return { rssStartBytes, rssEndBytes: windows.at(-1)?.rssBytes ?? null, windows };
}

function soakRows(soak: Awaited<ReturnType<typeof runSoak>>): Row[] {
  const mib = (bytes: number | null) => Math.round((bytes ?? NaN) / 2 ** 20);
  const p99s = soak.windows.map((window) => window.p99Ms);
  return [
    {
      measure: 'soak at 1,000/s: p99, worst minute',
      value: Math.max(...p99s),
      unit: 'ms',
      target: { op: '<=', limit: 15 },
    },
    { measure: 'soak: p99, first / last minute', value: p99s[0] ?? NaN, unit: `ms / ${p99s.at(-1)} ms` },
    {
      measure: 'soak: failed requests',
      value: soak.windows.reduce((sum, window) => sum + window.errors, 0),
      unit: '',
      target: { op: '<=', limit: 0 },
    },
    {
      measure: 'soak: API RSS start / end',
      value: mib(soak.rssStartBytes),
      unit: `MiB / ${mib(soak.rssEndBytes)} MiB`,
    },
  ];
}

async function main() {
  // The broker children run on this Node: anything older than 24 crashes in Cedar under load.
  if (Number(process.versions.node.split('.')[0]) < 24) {
    throw new Error(`the bench needs Node 24 (this is ${process.version}): run it as npm run bench`);
  }
  const startedAt = new Date().toISOString();
  log(
    `tasklease bench${quick ? ' (--quick: a smoke run, not a measurement)' : ''}; ${cpus().length} cores, load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  log('Redis runs without an append-only file here (the bench measures the broker, not the disk).');
  const resultsDir = path.resolve(__dirname, '../../bench-results');
  const cpuProfileDir = process.env.BENCH_CPU_PROFILE ? path.join(resultsDir, 'profiles') : undefined;
  const env = await startBenchEnvironment({ cpuProfileDir });
  let sentinelEnv: SentinelEnvironment | null = null;
  const once = (action: () => Promise<void>) => {
    let running: Promise<void> | null = null;
    return () => (running ??= action());
  };
  const stopSingle = once(() => env.stop());
  const stopSentinel = once(async () => {
    await sentinelEnv?.stop();
  });
  const stop = once(async () => {
    await Promise.all([stopSingle(), stopSentinel()]);
  });
  const abort = (reason: string, code: number) => {
    process.stderr.write(`bench: ${reason}; stopping\n`);
    void stop().finally(() => process.exit(code));
  };
  process.once('SIGINT', () => abort('interrupted', 130));
  process.once('SIGTERM', () => abort('terminated', 143));
  const watchdogSeconds = settings.watchdogSeconds + (soakOnly ? settings.soakSeconds : 0);
  const watchdog = setTimeout(
    () => abort(`watchdog: still running after ${watchdogSeconds} s`, 2),
    watchdogSeconds * 1000,
  );
  watchdog.unref();
  try {
    if (soakOnly) {
      const soak = await runSoak(env);
      printTable(`tasklease bench --soak — ${startedAt}`, soakRows(soak));
      const file = writeJson(resultsDir, { startedAt, settings, soak });
      log(`\nJSON: ${path.relative(process.cwd(), file)}`);
      return;
    }
    const single = await run(env);
    let sentinel: SentinelResults | null = null;
    if (settings.sentinel) {
      // The single-Redis processes stop first: the Sentinel phase has the cores to itself, as they had.
      await stopSingle();
      log(
        `\nSentinel: 1 primary, ${SENTINEL.replicas} replicas, ${SENTINEL.sentinels} sentinels (redis-server, no ` +
          `append-only file), a second API + worker with broker.replicaAcks: ${SENTINEL.replicaAcks}...`,
      );
      sentinelEnv = await startSentinelEnvironment(SENTINEL);
      sentinel = await runSentinel(sentinelEnv);
      await stopSentinel();
    } else log('\nSentinel phase skipped (BENCH_SENTINEL=0).');
    const results = { ...single, sentinel };
    const rows = [
      ...rowsOf(single),
      ...(sentinel ? sentinelRows(sentinel, { saturated: single.brokerSaturated }) : []),
    ];
    printTable(`tasklease bench — ${startedAt}${quick ? ' — QUICK (smoke run)' : ''}`, rows);
    const file = writeJson(resultsDir, {
      startedAt,
      settings,
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model,
        loadavgAtEnd: loadavg(),
        node: process.version,
      },
      rows: rows.map((row) => ({ ...row, result: verdictOf(row) })),
      allTargetsPassed: rows.every((row) => verdictOf(row) !== 'FAIL'),
      results,
    });
    log(`\nJSON: ${path.relative(process.cwd(), file)}`);
    if (cpuProfileDir)
      log(`API CPU profile: ${path.relative(process.cwd(), cpuProfileDir)}/ (written when the API stops)`);
  } finally {
    clearTimeout(watchdog);
    await stop();
  }
}

main().then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`bench failed: ${error.stack ?? error.message}\n`);
    process.exit(1);
  },
);
