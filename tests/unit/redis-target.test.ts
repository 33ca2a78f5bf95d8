import { readEnv } from '../../src/config/env';
import { describeRedisTarget, parseRedisTarget } from '../../src/config/redis-target';
import { hashTagOf, resolveKeyPrefix } from '../../src/redis/keys';

describe('REDIS_URL names the topology', () => {
  it.each([
    [
      'redis://127.0.0.1:6380',
      { kind: 'single', address: { host: '127.0.0.1', port: 6380 }, db: 0, tls: false },
    ],
    [
      'rediss://cache.internal/3',
      { kind: 'single', address: { host: 'cache.internal', port: 6379 }, db: 3, tls: true },
    ],
    ['redis://[::1]:7000', { kind: 'single', address: { host: '::1', port: 7000 } }],
    [
      'redis+sentinel://10.0.0.1:26379,10.0.0.2,10.0.0.3:26380/tlmaster',
      {
        kind: 'sentinel',
        masterName: 'tlmaster',
        sentinels: [
          { host: '10.0.0.1', port: 26379 },
          { host: '10.0.0.2', port: 26379 },
          { host: '10.0.0.3', port: 26380 },
        ],
        tls: false,
      },
    ],
    ['rediss+sentinel://s1:26379/mymaster', { kind: 'sentinel', tls: true, masterName: 'mymaster' }],
    [
      'redis+cluster://n1:7000,n2:7001',
      {
        kind: 'cluster',
        nodes: [
          { host: 'n1', port: 7000 },
          { host: 'n2', port: 7001 },
        ],
        tls: false,
      },
    ],
    ['rediss+cluster://n1', { kind: 'cluster', tls: true, nodes: [{ host: 'n1', port: 6379 }] }],
    ['redis://broker:s%40cret@cache:6379', { username: 'broker', password: 's@cret' }],
    ['redis://:only-pass@cache', { password: 'only-pass' }],
  ])('%s', (url, expected) => {
    expect(parseRedisTarget(url)).toMatchObject(expected);
  });

  it.each([
    ['http://cache:6379', /expected redis:\/\//],
    ['redis://a:1,b:2', /names one server/],
    ['redis+sentinel://s1:26379', /ends with \/<master-name>/],
    ['redis+cluster://n1:7000/0', /no path/],
    ['redis://cache:99999', /out of range/],
    ['redis://cache:6379/db', /db number/],
    ['redis://ca che:6379', /expected|host:port/],
  ])('refuses %s', (url, why) => {
    expect(() => parseRedisTarget(url)).toThrow(why);
  });

  it('takes the passwords from the environment, the sentinels’ apart from the data nodes’', () => {
    const target = parseRedisTarget('redis+sentinel://s1,s2/m', {
      password: 'data',
      sentinelPassword: 'watch',
    });
    expect(target).toMatchObject({ password: 'data', sentinelPassword: 'watch' });
  });

  it('refuses a password given twice rather than picking one', () => {
    expect(() => parseRedisTarget('redis://:a@cache', { password: 'b' })).toThrow(/give it once/);
  });

  it('never shows a password where the target is described (logs, errors)', () => {
    const target = parseRedisTarget('redis+cluster://admin:hunter2@n1:7000,n2:7001', {});
    expect(describeRedisTarget(target)).toBe('redis+cluster://n1:7000,n2:7001');
    const refused = (() => {
      try {
        parseRedisTarget('redis://:hunter2@a:1,b:2');
      } catch (error) {
        return (error as Error).message;
      }
    })();
    expect(refused).not.toContain('hunter2');
  });

  it('is parsed once with the environment: REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD included', () => {
    const env = readEnv({
      REDIS_URL: 'redis+sentinel://127.0.0.1:26379/tl',
      REDIS_PASSWORD: 'p1',
      REDIS_SENTINEL_PASSWORD: 'p2',
    });
    expect(env.redis).toMatchObject({ kind: 'sentinel', password: 'p1', sentinelPassword: 'p2' });
    expect(() => readEnv({ REDIS_URL: 'redis+cluster://' })).toThrow(/invalid environment[\s\S]*REDIS_URL/);
  });
});

describe('key prefixes and hash tags', () => {
  it.each([
    ['{tl}:lease:1', 'tl'],
    ['tl:lease:1', null],
    ['{}x{y}', null],
    ['a{b}{c}', 'b'],
    ['{a', null],
    ['x{user1000}.following', 'user1000'],
  ])('the hash tag of %s is %s (Redis’s rule)', (key, tag) => {
    expect(hashTagOf(key)).toBe(tag);
  });

  it('defaults to tl: on one server or Sentinel, {tl}: on a cluster', () => {
    expect(resolveKeyPrefix(undefined, 'single')).toBe('tl:');
    expect(resolveKeyPrefix(undefined, 'sentinel')).toBe('tl:');
    expect(resolveKeyPrefix(undefined, 'cluster')).toBe('{tl}:');
    expect(resolveKeyPrefix('{prod}:', 'cluster')).toBe('{prod}:');
  });

  it('refuses a prefix without a hash tag on a cluster, saying why', () => {
    expect(() => resolveKeyPrefix('prod:', 'cluster')).toThrow(
      /"prod:" has no hash tag.*one\s+slot.*\{tl\}:/s,
    );
    expect(() => resolveKeyPrefix('{}:', 'cluster')).toThrow(/no hash tag/);
  });
});
