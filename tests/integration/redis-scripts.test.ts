import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { parseRedisTarget } from '../../src/config/redis-target';
import { closeRedis, connectRedis, waitForReady, type RedisClient } from '../../src/redis/connection';
import { RedisKeys } from '../../src/redis/keys';
import { SCRIPT_NAMES } from '../../src/redis/scripts';
import { startLocalRedis, type LocalRedis } from '../../src/wiring/local-redis';
import { tempDir } from '../support/fixtures';
import { deleteKeysUnder, keysUnder, SCRIPT_CASES, takeRecordedRuns } from '../support/script-cases';

/**
 * Every Lua script run directly against a Redis of its own (tests/support/script-cases.ts), each case
 * under its own hash-tagged prefix, as it would be on a Redis Cluster.
 */
const SCRIPT_DIR = path.join(__dirname, '../../src/redis/scripts');
const taggedPrefix = () => `{t-sc-${randomBytes(4).toString('hex')}}:`;

/** The script names the Lua files in src/redis/scripts stand for (`<name>-<keycount|var>.lua`). */
function scriptFileNames(): string[] {
  return readdirSync(SCRIPT_DIR)
    .filter((file) => file.endsWith('.lua'))
    .map((file) => /^([A-Za-z]+)-(?:\d+|var)\.lua$/.exec(file)?.[1] ?? `(unparsable file name ${file})`)
    .sort();
}

describe('the Redis scripts', () => {
  let server: LocalRedis;
  let redis: RedisClient;
  // A Redis of its own: the cases MONITOR it to see each script's commands, and on the shared test Redis
  // they would see every other test file's traffic too.
  beforeAll(async () => {
    server = await startLocalRedis(tempDir('scripts'), { appendOnly: false });
    redis = connectRedis(parseRedisTarget(server.url));
    await waitForReady(redis, 5000);
  });
  afterAll(async () => {
    await closeRedis(redis);
    await server.stop();
  });

  it('have a case each: every script file in src/redis/scripts, none unknown', () => {
    const files = scriptFileNames();
    expect(files.length).toBeGreaterThan(0);
    const covered = new Set<string>(SCRIPT_CASES.map((c) => c.script));
    expect(files.filter((name) => !covered.has(name))).toEqual([]);
    expect([...covered].filter((name) => !files.includes(name))).toEqual([]);
    expect(files).toEqual([...SCRIPT_NAMES].sort());
  });

  for (const script of new Set(SCRIPT_CASES.map((c) => c.script))) {
    describe(script, () => {
      for (const scriptCase of SCRIPT_CASES.filter((c) => c.script === script)) {
        it(scriptCase.name, async () => {
          const prefix = taggedPrefix();
          takeRecordedRuns();
          try {
            await scriptCase.run({ redis, keys: new RedisKeys(prefix), prefix });
            // A case runs its own script (through checkedRun, which checks the keys it touched).
            expect(takeRecordedRuns()).toContain(script);
          } finally {
            await deleteKeysUnder(redis, prefix);
          }
          expect(await keysUnder(redis, prefix)).toEqual([]);
        });
      }
    });
  }
});
