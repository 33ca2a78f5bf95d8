/**
 * `REDIS_URL` names the topology (docs/architecture.md, "Redis topologies"); this turns it, with the
 * passwords from the environment, into one typed target, parsed once at start-up:
 *   redis://[user:pass@]host:port[/db]                       rediss://…          one server
 *   redis+sentinel://[user:pass@]h:p[,h:p…]/<master-name>    rediss+sentinel://  Sentinel discovery
 *   redis+cluster://[user:pass@]h:p[,h:p…]                   rediss+cluster://   Redis Cluster
 * The user and password in the URL (or REDIS_PASSWORD) are the data nodes'; REDIS_SENTINEL_PASSWORD is the
 * sentinels'. Passwords never appear in `describeRedisTarget`, the one form that reaches a log line.
 */

export interface RedisAddress {
  host: string;
  port: number;
}

interface Common {
  tls: boolean;
  username?: string;
  password?: string;
}

export type RedisTarget =
  | (Common & { kind: 'single'; address: RedisAddress; db: number })
  | (Common & { kind: 'sentinel'; sentinels: RedisAddress[]; masterName: string; sentinelPassword?: string })
  | (Common & { kind: 'cluster'; nodes: RedisAddress[] });

export type RedisTopology = RedisTarget['kind'];

export class RedisTargetError extends Error {
  override name = 'RedisTargetError';
}

const SHAPE =
  /^(?<scheme>rediss?)(?:\+(?<topology>sentinel|cluster))?:\/\/(?:(?<userinfo>[^@/]*)@)?(?<hosts>[^/?#@]+)(?:\/(?<path>[^?#]*))?$/;
const FORMS =
  'redis://host:port[/db], redis+sentinel://host:port[,host:port…]/<master-name> or ' +
  'redis+cluster://host:port[,host:port…] (rediss… for TLS)';

function parseAddress(text: string, defaultPort: number): RedisAddress {
  // [v6]:port or host:port or host
  const match = /^(?:\[(?<v6>[0-9a-fA-F:.]+)\]|(?<host>[A-Za-z0-9._-]+))(?::(?<port>\d{1,5}))?$/.exec(text);
  if (!match?.groups) throw new RedisTargetError(`REDIS_URL: "${text}" is not host:port`);
  const port = match.groups.port ? Number(match.groups.port) : defaultPort;
  if (port < 1 || port > 65535) throw new RedisTargetError(`REDIS_URL: port ${port} is out of range`);
  return { host: (match.groups.v6 ?? match.groups.host) as string, port };
}

const decode = (text: string | undefined) => (text ? decodeURIComponent(text) : undefined);

/** Fails naming what is wrong, never echoing a password. */
export function parseRedisTarget(
  url: string,
  secrets: { password?: string; sentinelPassword?: string } = {},
): RedisTarget {
  const match = SHAPE.exec(url);
  if (!match?.groups) throw new RedisTargetError(`REDIS_URL: expected ${FORMS}`);
  const { scheme, topology, userinfo, hosts, path } = match.groups as Record<string, string | undefined>;
  const [user, ...rest] = (userinfo ?? '').split(':');
  const urlPassword = rest.length > 0 ? decode(rest.join(':')) : undefined;
  if (urlPassword && secrets.password)
    throw new RedisTargetError('REDIS_URL holds a password and REDIS_PASSWORD is set too: give it once');
  const common: Common = {
    tls: scheme === 'rediss',
    ...(decode(user) ? { username: decode(user) } : {}),
    ...((urlPassword ?? secrets.password) ? { password: urlPassword ?? secrets.password } : {}),
  };
  const list = (hosts as string).split(',').filter(Boolean);
  if (topology === 'sentinel') {
    const masterName = decode(path);
    if (!masterName || masterName.includes('/'))
      throw new RedisTargetError('REDIS_URL: a sentinel URL ends with /<master-name>');
    return {
      ...common,
      kind: 'sentinel',
      sentinels: list.map((host) => parseAddress(host, 26379)),
      masterName,
      ...(secrets.sentinelPassword ? { sentinelPassword: secrets.sentinelPassword } : {}),
    };
  }
  if (topology === 'cluster') {
    if (path) throw new RedisTargetError('REDIS_URL: a cluster URL has no path (Redis Cluster has one db)');
    return { ...common, kind: 'cluster', nodes: list.map((host) => parseAddress(host, 6379)) };
  }
  if (list.length !== 1)
    throw new RedisTargetError(
      'REDIS_URL: redis:// names one server; use redis+sentinel:// or redis+cluster:// for several',
    );
  if (path && !/^\d{1,2}$/.test(path)) throw new RedisTargetError('REDIS_URL: the path is a db number');
  return { ...common, kind: 'single', address: parseAddress(list[0] as string, 6379), db: Number(path || 0) };
}

export const formatAddress = ({ host, port }: RedisAddress) =>
  host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;

/** The target for logs and error messages: topology and addresses, never a user's password. */
export function describeRedisTarget(target: RedisTarget): string {
  const scheme = target.tls ? 'rediss' : 'redis';
  switch (target.kind) {
    case 'single':
      return `${scheme}://${formatAddress(target.address)}/${target.db}`;
    case 'sentinel':
      return `${scheme}+sentinel://${target.sentinels.map(formatAddress).join(',')}/${target.masterName}`;
    case 'cluster':
      return `${scheme}+cluster://${target.nodes.map(formatAddress).join(',')}`;
    default:
      return target satisfies never;
  }
}
