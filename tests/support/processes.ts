import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../src/wiring/local-redis';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin/tasklease.js');

/** dist/ is stale when a source file is newer than the CLI entry point (tsc rewrites every output each build). */
function distIsStale(): boolean {
  const newestMs = (dir: string): number =>
    Math.max(
      0,
      ...readdirSync(dir, { withFileTypes: true }).map((entry) =>
        entry.isDirectory()
          ? newestMs(path.join(dir, entry.name))
          : statSync(path.join(dir, entry.name)).mtimeMs,
      ),
    );
  try {
    return newestMs(path.join(ROOT, 'src')) > statSync(path.join(ROOT, 'dist/cli/main.js')).mtimeMs;
  } catch {
    return true;
  }
}

/**
 * `npm test` builds before Jest starts; a lone run rebuilds only when src/ changed, so it never rewrites
 * dist/ under a test file that is running the binary in parallel.
 */
export async function buildIfStale(): Promise<void> {
  if (distIsStale()) await promisify(execFile)('npm', ['run', 'build'], { cwd: ROOT });
}

export interface TaskleaseProcess {
  child: ChildProcess;
  /** stdout and stderr interleaved as they arrived. */
  output(): string;
  /** SIGTERM and wait (or SIGKILL after a timeout). */
  stop(): Promise<void>;
}

/**
 * Runs the real binary (dist/, built by `npm test` before Jest starts) under the Node that runs the tests.
 */
export function spawnTasklease(
  args: string[],
  env: Record<string, string>,
  options: { cwd?: string } = {},
): TaskleaseProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: options.cwd,
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Runs the CLI to completion: its exit code and what it printed. */
export function runTasklease(
  args: string[],
  env: Record<string, string>,
  options: { timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env },
        timeout: options.timeoutMs ?? 30_000,
      },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') return reject(error);
        resolve({ code: error ? (error.code as number) : 0, stdout, stderr });
      },
    );
  });
}

/** Polls a URL until it answers 200 (or the process dies, or time runs out). */
export async function waitForHttp(url: string, proc: TaskleaseProcess, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.child.exitCode !== null)
      throw new Error(`process exited (${proc.child.exitCode}):\n${proc.output()}`);
    const ok = await fetch(url).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${url} not ready within ${timeoutMs} ms:\n${proc.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export { freePort };

/**
 * A real `tasklease serve` for a test broker's config, on the shared test Redis and a free port; pushed onto
 * `started` (for the caller to stop) before it is waited for, ready when it resolves.
 */
export async function startServeProcess(
  broker: { configFile: string; signingKeysJson: string; redisUrl: string },
  started: TaskleaseProcess[],
): Promise<{ proc: TaskleaseProcess; url: string }> {
  const port = await freePort();
  const proc = spawnTasklease(['serve'], {
    TASKLEASE_CONFIG: broker.configFile,
    REDIS_URL: broker.redisUrl,
    TASKLEASE_SIGNING_KEYS: broker.signingKeysJson,
    PORT: String(port),
  });
  started.push(proc);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/readyz`, proc);
  return { proc, url };
}
